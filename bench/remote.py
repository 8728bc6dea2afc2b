"""Benchmark: the team server's REST API, a remote `projctl create` over TLS and one
server's capacity.

Run by hand:  python bench/remote.py [--runs 15] [--quick]

Every part starts `projctl serve --host 127.0.0.1 --port 0 --certfile --keyfile
--token-file` (a trustme CA and certificate, a 0600 token file, all in a temporary
folder) for a fresh database of 100 projects, and stops it at the end.

(a) `projctl create NAME` as a whole process, remote (PROJCTL_URL=wss://, PROJCTL_TOKEN,
    PROJCTL_CA_FILE, no PROJCTL_DB, another HOME: one `POST /api/projects` over HTTPS
    on loopback) and local (PROJCTL_DB naming the same database: a commit, then a
    forward to the same server over its Unix socket), --runs pairs in alternating
    order after one warm-up each. Target: median remote <= median local + 30 ms.
    Printed beside it, where the difference goes: the modules only a remote create
    imports (found by running both commands under `python -X importtime`), their cost
    step by step in fresh processes (ssl, http.client, projctl.remote with what it
    brings), the TLS context (the CA file, and the system's CAs for comparison), the
    connection (TCP and TLS handshakes with `http.client.HTTPSConnection`, then close),
    and one write on a kept connection (`POST /api/projects`, a JSON body and an
    `Idempotency-Key`).
(b) Beyond one server: creates per second one server sustains over the REST API, for
    1, 4 and 16 clients (threads) that each keep one `HTTPSConnection` open and send
    their next create when the last answer comes (each count on a fresh database of
    100 projects), with the median and p99 answer time, beside the store's own floor
    (ProjectStore.create in a loop, in this process).
(c) Idle subscribers over wss://: the server's resident memory (VmRSS) with 1,000
    idle /ws subscribers holding the read token, the cost of each beside the plain
    ws:// figure of bench/memory.py, and the time one event (a REST create) takes to
    reach all of them.

The client and the server share this machine's CPUs: figures (b) and (c) include
the clients' own work. --quick: 3 pairs, 16 creates per client count, 20 subscribers.
Everything binds 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import resource
import secrets
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import trustme
from _common import HOST, BenchDatabase, bench_database, bench_folder, run_bounded
from websockets.asyncio.client import ClientConnection, connect

from projctl import Database, open_database, rpc, runtime
from projctl.config import Settings, load_settings
from projctl.remote import RemoteBackend
from projctl.store import ProjectStore

PROJCTL = str(Path(sys.executable).with_name("projctl"))
PROJECTS = 100
#: (a): how much slower a remote create may be than a local one.
REMOTE_EXTRA_TARGET = 0.030
#: (c): bench/memory.py's figure for one idle plain ws:// subscriber (bench/RESULTS.md).
PLAIN_SUBSCRIBER_KIB = 15.4
CLIENT_COUNTS = (1, 4, 16)
COMMAND_TIMEOUT = 60.0
START_TIMEOUT = 20.0
#: Seconds one socket operation of a benchmark client may take (connect, send, read).
SOCKET_TIMEOUT = 30.0
#: How many subscribers may be in their TLS handshake at once.
CONNECT_BATCH = 50


@dataclass(frozen=True)
class Credentials:
    """The CA, the server's certificate and key, and the token file, in one folder."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    token_file: Path
    read_token: str
    write_token: str


@dataclass(frozen=True)
class TeamServer:
    """A running `projctl serve` with TLS and tokens."""

    url: str
    port: int
    pid: int
    state: runtime.ServerState


def make_credentials(folder: Path) -> Credentials:
    """A private CA, a certificate for 127.0.0.1 signed by it, and a 0600 token file."""
    authority = trustme.CA()
    issued = authority.issue_cert(HOST, "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)  # serve refuses a key others may read
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    read_token, write_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    token_file = folder / "tokens"
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as tokens:
        tokens.write(f"read: {read_token}\nwrite: {write_token}\n")
    return Credentials(ca_file, cert_file, key_file, token_file, read_token, write_token)


@contextlib.contextmanager
def team_server(bench: BenchDatabase, credentials: Credentials) -> Iterator[TeamServer]:
    """`projctl serve` with TLS and the token file for ``bench``'s database, stopped on exit."""
    log_path = bench.folder / "serve.log"
    command = [
        PROJCTL,
        "serve",
        "--host",
        HOST,
        "--port",
        "0",
        "--certfile",
        str(credentials.cert_file),
        "--keyfile",
        str(credentials.key_file),
        "--token-file",
        str(credentials.token_file),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=bench.env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        paths = runtime.runtime_paths(bench.db)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            state = runtime.read_server_state(paths)
            if state is not None and state.pid == process.pid:
                break
            if process.poll() is not None or time.monotonic() >= deadline:
                raise SystemExit(f"projctl serve did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        yield TeamServer(
            url=f"wss://{HOST}:{state.port}", port=state.port, pid=process.pid, state=state
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def remote_environment(
    bench: BenchDatabase, server: TeamServer, credentials: Credentials
) -> dict[str, str]:
    """What a teammate's machine has: the URL, a write token, the CA; no database, its own HOME."""
    home = bench.folder / "remote-home"
    home.mkdir(exist_ok=True)
    dropped = ("PROJCTL_", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
    env = {name: value for name, value in bench.env.items() if not name.startswith(dropped)}
    env.update(
        HOME=str(home),
        PROJCTL_URL=server.url,
        PROJCTL_TOKEN=credentials.write_token,
        PROJCTL_CA_FILE=str(credentials.ca_file),
    )
    return env


_runs = iter(range(1 << 30))


def run_command(command: list[str], env: Mapping[str, str]) -> float:
    """Wall seconds of one whole run; exits on a failure or on anything written to stderr
    (a `Warning:` would mean the run did not take the path it claims). ``{n}`` in an
    argument becomes a number of its own each run (a name used twice gets a warning)."""
    number = next(_runs)
    command = [part.replace("{n}", str(number)) for part in command]
    finished = run_bounded(command, env, timeout=COMMAND_TIMEOUT, stderr=subprocess.PIPE)
    errors = (finished.stderr or b"").decode(errors="replace").strip()
    if finished.returncode != 0 or errors:
        raise SystemExit(f"{command[1:]} exited {finished.returncode}: {errors}")
    return finished.exited - finished.started


#: A command and the environment it runs in.
Run = tuple[list[str], Mapping[str, str]]


def paired(first: Run, second: Run, runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds of ``first`` and of ``second`` over ``runs`` pairs, after one warm-up
    of each; the order alternates from pair to pair, so neither always runs warmer."""
    run_command(*first)
    run_command(*second)
    firsts, seconds = [], []
    for number in range(runs):
        if number % 2:
            seconds.append(run_command(*second))
            firsts.append(run_command(*first))
        else:
            firsts.append(run_command(*first))
            seconds.append(run_command(*second))
    return firsts, seconds


def median_difference(firsts: list[float], seconds: list[float]) -> float:
    return statistics.median(a - b for a, b in zip(firsts, seconds, strict=True))


@dataclass(frozen=True)
class ImportSurvey:
    """What the two creates import, as `python -X importtime` lists it (in its order)."""

    #: Modules both import: the base every step of :func:`import_costs` starts from.
    common: list[str]
    #: Modules only the remote create imports.
    remote_only: list[str]
    #: Modules only the local create imports (the store and tinydb).
    local_only: list[str]


def imported_modules(command: list[str], env: Mapping[str, str]) -> list[str]:
    """Every module ``command`` imports, in `-X importtime`'s order (each after its own)."""
    finished = run_bounded(
        command,
        {**env, "PYTHONPROFILEIMPORTTIME": "1"},
        timeout=COMMAND_TIMEOUT,
        stderr=subprocess.PIPE,
    )
    errors = (finished.stderr or b"").decode(errors="replace")
    if finished.returncode != 0:
        raise SystemExit(f"{command[1:]} exited {finished.returncode}: {errors[-2000:]}")
    modules = []
    for line in errors.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[0].strip().isdigit():
            modules.append(fields[2].strip())
    return modules


def survey_imports(remote: Run, local: Run) -> ImportSurvey:
    remote_modules = imported_modules(*remote)
    local_modules = imported_modules(*local)
    remote_set, local_set = set(remote_modules), set(local_modules)
    return ImportSurvey(
        common=[name for name in local_modules if name in remote_set],
        remote_only=[name for name in remote_modules if name not in local_set],
        local_only=[name for name in local_modules if name not in remote_set],
    )


#: The steps a remote create adds to what both creates import, each on top of the one
#: before; :func:`import_costs` adds a last step with any remote-only module they miss.
IMPORT_STEPS = [
    ("ssl", ["ssl"]),
    ("http.client (+ email's header parser)", ["http.client"]),
    ("projctl.remote (+ projctl._client)", ["projctl.remote"]),
    ("encodings.idna (the host name, at connect)", ["encodings.idna"]),
]


def import_script(modules: list[str]) -> str:
    """Python that imports ``modules`` in order; -X importtime also lists the imports
    that failed (another platform's modules), which it tries and skips as they did."""
    return (
        f"import importlib\nfor name in {modules!r}:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError:\n        pass\n"
    )


def import_costs(
    survey: ImportSurvey, env: Mapping[str, str], runs: int
) -> tuple[list[tuple[str, float]], float]:
    """What each step of :data:`IMPORT_STEPS` (then the remote-only modules they miss)
    adds to a fresh process that imports ``survey.common``, and what ``survey.local_only``
    adds to it: medians, over ``runs`` rounds in rotating order, of wall-time differences."""
    covered: list[str] = []
    steps: list[tuple[str, list[str]]] = []
    for label, modules in IMPORT_STEPS:
        covered += modules
        steps.append((label, list(covered)))
    rest = subprocess.run(
        [sys.executable, "-c", import_script(covered) + "import sys\nprint(*sys.modules)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    ).stdout.split()
    missed = [name for name in survey.remote_only if name not in rest]
    steps.append(("the rest: " + (", ".join(missed) or "none"), covered + missed))
    scripts = [
        import_script(survey.common),
        *(import_script(survey.common + modules) for _label, modules in steps),
        import_script(survey.common + survey.local_only),
    ]
    commands = [[sys.executable, "-c", script] for script in scripts]
    for command in commands:
        run_command(command, env)  # warm-up
    rounds = []
    for number in range(runs):
        shift = number % len(commands)
        order = list(range(len(commands)))[shift:] + list(range(len(commands)))[:shift]
        figures = {index: run_command(commands[index], env) for index in order}
        rounds.append([figures[index] for index in range(len(commands))])
    added = [
        (label, statistics.median(row[index + 1] - row[index] for row in rounds))
        for index, (label, _modules) in enumerate(steps)
    ]
    local_only = statistics.median(row[-1] - row[0] for row in rounds)
    return added, local_only


def in_process(action: Callable[[], object], runs: int) -> float:
    """Median seconds of ``action()`` over ``runs`` calls, after one warm-up."""
    action()
    figures = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        figures.append(time.perf_counter() - started)
    return statistics.median(figures)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_connection(server: TeamServer, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    """A connection to ``server``, connected: TCP and TLS handshakes done."""
    connection = http.client.HTTPSConnection(
        HOST, server.port, timeout=SOCKET_TIMEOUT, context=context
    )
    connection.connect()
    return connection


def post_create(connection: http.client.HTTPSConnection, token: str, name: str) -> object:
    """``POST /api/projects`` as a command sends it (a JSON body, an ``Idempotency-Key``),
    on a connection the server must keep open; the created project."""
    connection.request(
        "POST",
        "/api/projects",
        body=orjson.dumps({"name": name, "owner_id": "bench"}),
        headers={
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Idempotency-Key": secrets.token_hex(16),
            **auth(token),
        },
    )
    response = connection.getresponse()
    body = response.read()
    if response.status != 201 or response.will_close:
        raise RuntimeError(
            f"a create answered {response.status} (closing: {response.will_close}): {body[:200]!r}"
        )
    return orjson.loads(body)


def connect_and_close(server: TeamServer, context: ssl.SSLContext) -> None:
    """TCP and TLS handshakes, then close, as a command does around its one request."""
    open_connection(server, context).close()


def remote_create(settings: Settings, name: str) -> None:
    """What a remote `projctl create` does once imported: a new backend (a new
    connection), one create, close."""
    backend = RemoteBackend(settings)
    try:
        Database(settings, backend=backend).create(name)
    finally:
        backend.close()


def write_round_trip(server: TeamServer, credentials: Credentials, runs: int) -> float:
    """Median seconds of one create on a connection that stays open."""
    connection = open_connection(server, tls_context(credentials.ca_file))
    try:
        figures = []
        for number in range(runs + 1):
            started = time.perf_counter()
            post_create(connection, credentials.write_token, f"open-{number}")
            if number:
                figures.append(time.perf_counter() - started)
    finally:
        connection.close()
    return statistics.median(figures)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def part_a(credentials: Credentials, runs: int) -> None:
    with bench_database(PROJECTS, serve=False) as bench, team_server(bench, credentials) as server:
        remote_env = remote_environment(bench, server, credentials)
        local_env = bench.env
        remote_run: Run = ([PROJCTL, "create", "remote-{n}"], remote_env)
        local_run: Run = ([PROJCTL, "create", "local-{n}"], local_env)
        remote, local = paired(remote_run, local_run, runs)
        extra = median_difference(remote, local)
        verdict = "met" if extra <= REMOTE_EXTRA_TARGET else "MISSED"

        survey = survey_imports(remote_run, local_run)
        imports, local_only = import_costs(survey, local_env, runs)
        bare = statistics.median(
            run_command([sys.executable, "-c", "pass"], local_env) for _ in range(max(3, runs // 3))
        )
        context = tls_context(credentials.ca_file)
        ca_context = in_process(lambda: tls_context(credentials.ca_file), runs)
        system_context = in_process(lambda: tls_context(None), runs)
        remote_settings = load_settings(remote_env)
        counter = iter(range(1 << 30))
        remote_call = in_process(
            lambda: remote_create(remote_settings, f"in-process-{next(counter)}"), runs
        )
        handshake = in_process(lambda: connect_and_close(server, context), runs)
        write = write_round_trip(server, credentials, runs)
        local_db = open_database(bench.db)
        local_call = in_process(lambda: local_db.create(f"local-{next(counter)}"), runs)

    rows = [
        ("local  (PROJCTL_DB: commit, forward over the Unix socket)", statistics.median(local)),
        (
            "remote (PROJCTL_URL=wss://: POST /api/projects, loopback TLS)",
            statistics.median(remote),
        ),
    ]
    print(
        f"(a) projctl create as a whole process, {PROJECTS} projects, server up, "
        f"{runs} alternating pairs, medians:"
    )
    for label, seconds in rows:
        print(f"  {label:<62} {ms(seconds)}")
    print(
        f"  {'remote - local (median of the pairs)':<62} {ms(extra)}   "
        f"(target <= {REMOTE_EXTRA_TARGET * 1000:g} ms: "
        f"{extra / REMOTE_EXTRA_TARGET:.2f}x, {verdict})"
    )
    remote_imports = sum(cost for _, cost in imports)
    print("  where a remote create's time goes:")
    parts = [
        ("python -c pass", ms(bare)),
        (
            f"imports only a remote create pays ({len(survey.remote_only)} modules)",
            ms(remote_imports),
        ),
        *((f"  {label}", ms(cost)) for label, cost in imports),
        (
            f"imports only a local create pays ({len(survey.local_only)} modules)",
            ms(local_only),
        ),
        ("  remote - local imports", ms(remote_imports - local_only)),
        (
            "TLS context: PROJCTL_CA_FILE / the system's CAs",
            f"{ms(ca_context)} / {system_context * 1000:.1f} ms",
        ),
        ("remote Database.create in a warm process, new connection", ms(remote_call)),
        ("  HTTPSConnection: connect (TCP + TLS handshake), close", ms(handshake)),
        ("  POST /api/projects on a kept connection", ms(write)),
        ("local Database.create in a warm process (for scale)", ms(local_call)),
    ]
    for label, figure in parts:
        print(f"    {label:<60} {figure}")


@dataclass(frozen=True)
class Rate:
    clients: int
    creates: int
    seconds: float
    answers: list[float]

    @property
    def per_second(self) -> float:
        return self.creates / self.seconds


def write_rate(server: TeamServer, credentials: Credentials, clients: int, per_client: int) -> Rate:
    """``clients`` threads, each with its own kept connection (opened first), sending
    ``per_client`` creates in turn; they start together."""
    context = tls_context(credentials.ca_file)
    connections = [open_connection(server, context) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    answers: list[float] = []
    failures: list[BaseException] = []

    def client(connection: http.client.HTTPSConnection, index: int) -> None:
        try:
            start.wait(START_TIMEOUT)
            for number in range(per_client):
                started = time.perf_counter()
                post_create(connection, credentials.write_token, f"rate-{clients}-{index}-{number}")
                answers.append(time.perf_counter() - started)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [
        threading.Thread(target=client, args=(connection, index), daemon=True)
        for index, connection in enumerate(connections)
    ]
    try:
        for thread in threads:
            thread.start()
        start.wait(START_TIMEOUT)
        started = time.perf_counter()
        deadline = started + 30 + clients * per_client
        for thread in threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        seconds = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    if failures or any(thread.is_alive() for thread in threads):
        raise SystemExit(f"(b) with {clients} client(s) failed: {failures[:1] or 'timed out'}")
    return Rate(clients, clients * per_client, seconds, answers)


def store_floor(folder: Path, creates: int) -> float:
    """Creates per second of ProjectStore.create alone, on a database of the same size."""
    store = ProjectStore(folder / "floor.json")
    for number in range(PROJECTS):
        store.create(f"project {number}", owner_id="bench")
    started = time.perf_counter()
    for number in range(creates):
        store.create(f"floor {number}", owner_id="bench")
    return creates / (time.perf_counter() - started)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def part_b(credentials: Credentials, total: int) -> None:
    rates = []
    for clients in CLIENT_COUNTS:
        with (
            bench_database(PROJECTS, serve=False) as bench,
            team_server(bench, credentials) as server,
        ):
            rates.append(write_rate(server, credentials, clients, total // clients))
    with bench_folder() as folder:
        floor = store_floor(folder, total)
    print(
        f"(b) creates per second over REST, one server, {total} creates per row on a fresh "
        f"database of {PROJECTS} projects ({os.cpu_count()} CPUs, clients included);\n"
        "    each client a thread with one kept HTTPSConnection, POST /api/projects in turn:"
    )
    for rate in rates:
        print(
            f"  {rate.clients:2} client(s)   {rate.per_second:6.0f} creates/s   "
            f"answer median {statistics.median(rate.answers) * 1000:6.1f} ms, "
            f"p99 {percentile(rate.answers, 0.99) * 1000:6.1f} ms   "
            f"({rate.per_second / floor:.2f}x the store floor)"
        )
    print(f"  store floor: ProjectStore.create in a loop  {floor:6.0f} creates/s")


def resident_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (Linux); ``None`` where /proc does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def wait_for_subscribers(server: TeamServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = await asyncio.to_thread(runtime.request, server.state, rpc.OP_STATUS)
        if status["subscribers"] >= count:
            return
        if time.monotonic() >= deadline:
            raise SystemExit(f"the server counted {status['subscribers']} of {count} subscribers")
        await asyncio.sleep(0.05)


async def idle_subscribers(
    server: TeamServer, credentials: Credentials, count: int
) -> tuple[int | None, int | None, float]:
    """RSS before and with ``count`` idle TLS subscribers, and one event's time to reach all."""
    await asyncio.sleep(0.5)  # let the fresh server settle before the first reading
    before = resident_kib(server.pid)
    context = tls_context(credentials.ca_file)
    subscribers: list[ClientConnection] = []
    try:
        for start in range(0, count, CONNECT_BATCH):
            batch = range(start, min(count, start + CONNECT_BATCH))
            subscribers += await asyncio.gather(
                *(
                    connect(
                        server.url + "/ws",
                        ssl=context,
                        additional_headers=auth(credentials.read_token),
                        compression=None,
                        ping_interval=None,
                        open_timeout=60,
                    )
                    for _ in batch
                )
            )
        await wait_for_subscribers(server, count, 30)
        await asyncio.sleep(1.0)  # idle: nothing in flight when memory is read
        during = resident_kib(server.pid)
        arrivals = [asyncio.ensure_future(subscriber.recv()) for subscriber in subscribers]
        writer = await asyncio.to_thread(open_connection, server, context)
        try:
            started = time.perf_counter()
            answer = asyncio.ensure_future(
                asyncio.to_thread(post_create, writer, credentials.write_token, "fan-out")
            )
            await asyncio.wait_for(asyncio.gather(*arrivals), 60)
            fan_out = time.perf_counter() - started
            await asyncio.wait_for(answer, SOCKET_TIMEOUT)
        finally:
            writer.close()
    finally:
        await asyncio.wait_for(
            asyncio.gather(*(s.close() for s in subscribers), return_exceptions=True), 60
        )
    return before, during, fan_out


def part_c(credentials: Credentials, count: int) -> None:
    with bench_database(PROJECTS, serve=False) as bench, team_server(bench, credentials) as server:
        before, during, fan_out = asyncio.run(
            asyncio.wait_for(idle_subscribers(server, credentials, count), 300)
        )
    print(f"(c) {count:,} idle subscribers on wss:// (read token in Authorization):")
    if before is not None and during is not None:
        growth = during - before
        each = growth / count
        print(
            f"  server RSS {during / 1024:.1f} MiB (idle {before / 1024:.1f} MiB): "
            f"+{growth / 1024:.1f} MiB, {each:.1f} KiB each "
            f"(plain ws:// in bench/memory.py: {PLAIN_SUBSCRIBER_KIB} KiB each; "
            f"{each / PLAIN_SUBSCRIBER_KIB:.2f}x)"
        )
    else:
        print("  server RSS: not available here (no /proc)")
    print(f"  one event, write sent to received by all {count:,}: {ms(fan_out).strip()}")


def raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks it runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    creates = 16 if args.quick else 480
    subscribers = 20 if args.quick else 1000
    raise_open_file_limit(subscribers + 256)
    with bench_folder() as folder:
        credentials = make_credentials(folder)
        part_a(credentials, runs)
        part_b(credentials, creates)
        part_c(credentials, subscribers)


if __name__ == "__main__":
    main()
