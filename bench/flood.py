"""Benchmark: does the server answer while it streams snapshots to a flood of clients?

Run by hand:  python bench/flood.py [probes] [loop] [--projects 20000] [--clients 150]
[--seconds 12] [--hold 3] [--quick]

A fresh server for a database of N projects (~300-byte descriptions, written to the
file in one go as bench/memory.py does). Then, at once, C clients each open a socket,
send the ``/ws?snapshot=1`` upgrade and never read a byte (not even the 101): the
server streams each one its snapshot until the socket is full. Meanwhile a probe opens a
new connection for ``GET /healthz`` every 200 ms for S seconds, each in its own thread
so a slow answer never delays the next probe, each waiting at most S seconds.

Reported: every probe's time from ``connect`` to the whole answer (max, p99, median,
how many over 100 ms, how many failed or were refused), and the server's peak RSS.
Target: every probe answers within 100 ms. A target missed is printed MISSED; the exit
status is non-zero only when the run could not measure (a client could not send its
request, no probe was answered, the server died). The flood is opened twice, one after the
other on the same server, with the probes running throughout: the first flood pays for
the read of the database, the second finds it shared.

``loop``: the same two floods (clients in a child process) against the server run in this
process as ``projctl serve`` runs it (``run_server``), with a ticker on its event loop every
2 ms: how late the ticker ever was, while the clients join and are streamed to (HOLD s
after all of them joined) and while they all close at once. That lateness is the longest
any turn of the loop took, every step in it together. Target: <= 20 ms.

Parts: ``probes`` (the above, ~1 minute), ``loop`` (~20 s); none named: both.
--quick: 500 projects, 10 clients, 3 s (figures that only show it still runs).
Everything binds 127.0.0.1 with a free port and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from _common import HOST, bench_database
from fanout import percentile
from memory import (
    IDLE_TIMEOUT,
    ServerGone,
    add_projects,
    bench_server,
    described_project,
    memory_of,
    mib,
    port_of,
)

from projctl.server import BroadcastServer, ServerConfig, run_server
from projctl.store import ProjectStore

PROBE_TARGET = 0.100  # seconds, the slowest /healthz answer allowed
PROBE_INTERVAL = 0.2
HOLD_TARGET = 0.020  # seconds, the longest turn of the server's loop allowed
TICK = 0.002
#: Longer than any step of the loop part could take (clients opening, joining, closing).
STEP_TIMEOUT = 30.0


@dataclass
class Probes:
    """What the probes saw: (asked at, seconds) of each answer, and each failure."""

    answers: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def probe(port: int, timeout: float, probes: Probes, started: float) -> None:
    """One ``GET /healthz`` on a new connection; its time, or why it failed, into ``probes``."""
    asked = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz", headers={"Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        response.read()
        ok = response.status == 200
        why = f"status {response.status}"
    except (OSError, http.client.HTTPException) as error:
        ok, why = False, f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    took = time.monotonic() - asked
    with probes.lock:
        if ok:
            probes.answers.append((asked - started, took))
        else:
            probes.failures.append(f"at {asked - started:.1f}s after {took:.1f}s: {why}")


def run_probes(port: int, seconds: float, probes: Probes, stop: threading.Event) -> None:
    """A probe every PROBE_INTERVAL for ``seconds`` (or until ``stop``), each in a thread."""
    started = time.monotonic()
    threads = []
    due = started
    while time.monotonic() < started + seconds and not stop.is_set():
        thread = threading.Thread(target=probe, args=(port, seconds, probes, started), daemon=True)
        thread.start()
        threads.append(thread)
        due += PROBE_INTERVAL
        stop.wait(max(0.0, due - time.monotonic()))
    for thread in threads:
        thread.join(seconds + 1)


def flood(port: int, clients: int) -> tuple[list[socket.socket], list[str]]:
    """``clients`` sockets that each send the snapshot upgrade at once and never read."""
    opened: list[socket.socket] = []
    failures: list[str] = []
    for _ in range(clients):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(10)
            raw.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            raw.sendall(
                (
                    "GET /ws?snapshot=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
        except OSError as error:
            raw.close()
            failures.append(f"{type(error).__name__}: {error}")
            continue
        opened.append(raw)
    return opened, failures


def report(probes: Probes, seconds: float) -> bool:
    """Print the probes' figures; whether every probe answered within the target."""
    times = sorted(took for _at, took in probes.answers)
    failed = len(probes.failures)
    if not times:
        print(f"    /healthz never answered ({failed} probes failed)")
        return False
    slow = [(at, took) for at, took in sorted(probes.answers) if took > PROBE_TARGET]
    worst = times[-1]
    ok = not failed and worst <= PROBE_TARGET
    ratio = f">= {seconds / PROBE_TARGET:.0f}x" if failed else f"{worst / PROBE_TARGET:.2f}x"
    print(
        f"    /healthz, a new connection every {PROBE_INTERVAL * 1000:g} ms for {seconds:g}s: "
        f"{len(times)} answered, {failed} failed; max {worst * 1000:.1f} ms, "
        f"p99 {percentile(times, 0.99) * 1000:.1f} ms, median "
        f"{statistics.median(times) * 1000:.1f} ms; over {PROBE_TARGET * 1000:g} ms: {len(slow)} "
        f"(target max <= {PROBE_TARGET * 1000:g} ms: {ratio}, {'met' if ok else 'MISSED'})"
    )
    if slow:
        shown = ", ".join(f"{took * 1000:.0f} ms at {at:.1f}s" for at, took in slow[:8])
        print(f"    slow answers: {shown}{' ...' if len(slow) > 8 else ''}")
    if failed:
        print(f"    failures: {'; '.join(probes.failures[:3])}{' ...' if failed > 3 else ''}")
    return ok


def measure(projects: int, clients: int, seconds: float) -> bool:
    """Both floods against one server; whether they measured what they claim (targets
    missed are only printed)."""
    with bench_server(projects) as (target, db_bytes):
        port = port_of(target)
        time.sleep(0.5)  # let start-up's allocations settle
        idle = memory_of(target.pid)
        print(
            f"{clients} never-reading ?snapshot=1 clients at once, {projects} projects "
            f"({db_bytes / 1e6:.1f} MB database); idle server RSS {mib(idle.rss)}"
        )
        complete = True
        for round_ in ("first flood (reads the database)", "second flood (the same server)"):
            probes, stop = Probes(), threading.Event()
            prober = threading.Thread(target=run_probes, args=(port, seconds, probes, stop))
            prober.start()
            try:
                time.sleep(PROBE_INTERVAL)  # one probe before the flood
                began = time.monotonic()
                sockets, failures = flood(port, clients)
                opened = time.monotonic() - began
                prober.join(seconds + 2)
            finally:
                stop.set()
                prober.join(seconds + 2)
            try:
                peak = memory_of(target.pid).peak
            except ServerGone as error:
                print(f"    the server DIED: {error}")
                return False
            for raw in sockets:
                raw.close()
            print(
                f"  {round_}: {len(sockets)} of {clients} sent their request in {opened:.2f}s"
                + (f" (first failure: {failures[0]})" if failures else "")
                + f"; server peak RSS (VmHWM) {mib(peak)}"
            )
            report(probes, seconds)
            # Measured what it claims: every client sent its request, some probe answered.
            complete = complete and not failures and bool(probes.answers)
            time.sleep(1.0)  # let the server notice the closes before the next round
        return complete


class Ticker:
    """How late a ``TICK`` sleep on the running loop wakes: the longest turn of the loop."""

    def __init__(self) -> None:
        self.late: list[tuple[float, float]] = []  # (when it woke, how late)
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            asked = time.perf_counter()
            await asyncio.sleep(TICK)
            woke = time.perf_counter()
            self.late.append((woke, woke - asked - TICK))

    def worst_since(self, since: float) -> tuple[float, float]:
        """The latest wake since ``since``: (how late, how long after ``since`` it was)."""
        late, woke = max(
            ((late, woke) for woke, late in self.late if woke >= since), default=(0, 0)
        )
        return late, max(0.0, woke - late - TICK - since)

    def over_since(self, since: float) -> int:
        return sum(1 for woke, late in self.late if woke >= since and late > HOLD_TARGET)


def clients_child(port: int, clients: int) -> None:
    """In a child process: open the flood, say how many opened, close them all at once
    when told (a line, or the end of stdin)."""
    sockets, failures = flood(port, clients)
    print(f"opened {len(sockets)} {failures[0] if failures else ''}", flush=True)
    sys.stdin.readline()
    for raw in sockets:
        raw.close()


async def read_line_within(stream: asyncio.StreamReader, timeout: float) -> str:
    return (await asyncio.wait_for(stream.readline(), timeout)).decode().strip()


async def until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def hold_line(what: str, worst_at: tuple[float, float], over: int) -> str:
    worst, at = worst_at
    ok = worst <= HOLD_TARGET
    return (
        f"    {what}: the loop's longest turn {worst * 1000:.1f} ms (at {at:.2f}s), turns over "
        f"{HOLD_TARGET * 1000:g} ms: {over} (target <= {HOLD_TARGET * 1000:g} ms: "
        f"{worst / HOLD_TARGET:.2f}x, {'met' if ok else 'MISSED'})"
    )


def subscribed(server: BroadcastServer) -> int:
    """Subscribers still being streamed their snapshot, and those past it (small ones)."""
    return len(server.feed.joining) + len(server.feed.subscribers)


async def loop_rounds(server: BroadcastServer, clients: int, hold: float) -> bool:
    """Both floods against ``server`` (on this loop); whether they measured what they claim."""
    ticker = Ticker()
    ticking = asyncio.ensure_future(ticker.run())
    complete = True
    try:
        for round_ in ("first flood (reads the database)", "second flood (the same server)"):
            began = time.perf_counter()
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--clients-child",
                str(server.port),
                str(clients),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert child.stdin is not None
            assert child.stdout is not None
            try:
                opened = await read_line_within(child.stdout, STEP_TIMEOUT)
                joined = await until(lambda: subscribed(server) >= clients, STEP_TIMEOUT)
                await asyncio.sleep(hold)
                streaming = (ticker.worst_since(began), ticker.over_since(began))
                closed_at = time.perf_counter()
                child.stdin.close()
                await asyncio.wait_for(child.wait(), STEP_TIMEOUT)
                left = await until(lambda: not subscribed(server), STEP_TIMEOUT)
                await asyncio.sleep(1.0)  # the memory of the read is handed back meanwhile
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
            print(f"  {round_}: {opened.split()[1]} of {clients} clients opened")
            print(hold_line("opening, joining, streaming", *streaming))
            print(
                hold_line(
                    "all closing at once",
                    ticker.worst_since(closed_at),
                    ticker.over_since(closed_at),
                )
            )
            complete = complete and joined and left and opened.split()[1] == str(clients)
    finally:
        ticker.stopped = True
        await ticking
    return complete


def loop_holds(projects: int, clients: int, hold: float) -> bool:
    """The ``loop`` part; whether it measured what it claims."""
    with bench_database(
        1, serve=False, idle_timeout=IDLE_TIMEOUT, make_project=described_project
    ) as bench:
        if projects > 1:
            add_projects(bench.db, projects - 1)
        print(
            f"in-process server, {clients} never-reading ?snapshot=1 clients at once, "
            f"{projects} projects ({bench.db.stat().st_size / 1e6:.1f} MB database)"
        )
        outcome: list[bool] = []
        driving: list[asyncio.Future[None]] = []

        def on_ready(server: BroadcastServer) -> None:
            async def rounds() -> None:
                try:
                    outcome.append(await asyncio.wait_for(loop_rounds(server, clients, hold), 300))
                finally:
                    server.stop()

            driving.append(asyncio.ensure_future(rounds()))

        run_server(ProjectStore(bench.db), ServerConfig(host=HOST, port=0), on_ready=on_ready)
        return outcome == [True]


def main() -> None:
    if sys.argv[1:2] == ["--clients-child"]:
        clients_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # [] among the choices: argparse checks an empty nargs="*" against them (Python < 3.12).
    parser.add_argument(
        "parts", nargs="*", choices=["probes", "loop", []], help="run only these (default: both)"
    )
    parser.add_argument("--projects", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the probes run")
    parser.add_argument("--hold", type=float, default=3.0, help="loop: seconds of streaming")
    parser.add_argument("--quick", action="store_true", help="500 projects, 10 clients, 3 s")
    args = parser.parse_args()
    if args.quick:
        args.projects, args.clients, args.seconds, args.hold = 500, 10, 3.0, 1.0
    parts = args.parts or ["probes", "loop"]
    complete = True
    if "probes" in parts:
        complete = measure(args.projects, args.clients, args.seconds) and complete
    if "loop" in parts:
        complete = loop_holds(args.projects, args.clients, args.hold) and complete
    if not complete:
        raise SystemExit("the flood did not complete (see above)")


if __name__ == "__main__":
    main()
