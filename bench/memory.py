"""Benchmark: the server's memory idle, with many idle, stalled or snapshot-taking subscribers.

Run by hand:  python bench/memory.py [idle] [stalled] [snapshots] [fanout2000] [tlsflood]
[tlsidle] [--quick] (no part named: all six; ``--help`` lists the sizes that can be changed)

(a) A fresh server's resident memory (VmRSS) and peak (VmHWM, from
    /proc/PID/status) when idle, then with 1,000 idle subscribers held by a
    separate process: the growth and the cost per subscriber.
(b) A fresh server with one subscriber that never reads (a raw socket with a
    4 KiB receive buffer that does the WebSocket upgrade by hand, then stops)
    and 10 normal subscribers in a separate process; 20,000 events of ~400
    bytes pushed through the Unix-socket forward path as fast as the replies
    come. Targets: peak RSS growth <= 16 MiB; the never-reading subscriber is
    closed (``slow_subscribers_closed`` in the server's status); every normal
    subscriber receives all 20,000 events, seqs contiguous.

(c) ``snapshots``: a fresh server for a database of 20,000 projects (~300-byte
    descriptions, several MB) and 150 clients of ``/ws?snapshot=1`` that never
    read (raw sockets as in (b)). Measured: the idle RSS before; the peak while
    they are connected and stalled (VmHWM, and VmRSS sampled every ~50 ms);
    ``/healthz`` latency sampled every ~50 ms from the first connect until after
    the disconnect (max and p99); the RSS ~2 s after all 150 closed. Targets:
    peak <= 200 MiB; RSS after within 32 MiB of idle; ``/healthz`` max <= 100 ms.
(d) ``fanout2000``: a fresh server, 2,000 never-reading ``/ws`` subscribers held
    by this process, and 150 events of ~9 KiB pushed through the forward path.
    Target: peak RSS <= 200 MiB. Reported beside it: how many subscribers the
    server closed as slow, and a final ``/healthz``, which must answer within 1 s.

(e) ``tlsflood``: ``projctl serve`` with TLS (a trustme CA) and
    ``PROJCTL_MAX_CONNECTIONS=50``, and 1,000 connections from this process that each
    send half a TLS ClientHello and then nothing. Measured: the server's open files
    (/proc/PID/fd, sampled every ~50 ms) and RSS idle, at the peak and after; how long
    until it has closed every stalled one (its handshake timeout is 10 s); whether a
    normal ``wss://`` client is served once they are gone. Open files are given twice:
    held (open in two samples in a row, ~50 ms apart), and at any instant, which also
    counts the sockets asyncio has just accepted (up to 100 a time) that the server is
    closing a few loop turns later, before they cost more than a socket (no target).
    Targets: held at most idle + 50 + 2 spare + 4; RSS peak growth <= 32 MiB; RSS after
    within 16 MiB of idle; every stalled one closed within 15 s.

(f) ``tlsidle``: ``projctl serve`` with TLS (a trustme CA) and a token file, and
    1,000 idle ``wss://`` subscribers held by this process. Measured: the server's RSS
    idle and with them (after a second's rest), the growth and its cost per subscriber;
    then one REST create, timed until every subscriber has its event. Targets: <= 64 KiB
    each, <= +128 MiB in all.

--quick uses 20 idle subscribers and 500 events of 16 KiB (not 400 bytes):
8 MB per subscriber, enough to outgrow the socket buffers and the 1 MiB limit,
so the stalled subscriber is still cut off; in (c) 500 projects and 10 clients,
in (d) 50 subscribers and 20 events, in (e) 200 connections and a cap of 20, in (f) 20
TLS subscribers (figures
that only show the parts still run).
A target missed is printed MISSED and the run goes on; the exit status is non-zero
only when a part could not measure what it claims (the server died, a subscriber
could not connect, a normal subscriber lost events).
Everything binds 127.0.0.1 with a free port and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson

# Run as a script, bench/ is on sys.path: the shared set-up and the fan-out benchmark's
# helpers import from there.
from _common import bench_database, start_server
from fanout import (
    Target,
    forward_lines,
    open_subscribers,
    percentile,
    projctl_target,
    publish,
    raise_fd_limit,
    read_line,
    seed,
    stop_process,
    wait_subscribers,
)
from remote import make_credentials, team_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from projctl import rpc, runtime
from projctl.errors import ProjctlError
from projctl.events import format_timestamp
from projctl.model import STATUSES, Project, next_project_id
from projctl.store import ProjectStore

SCRIPT = os.path.abspath(__file__)
GROWTH_TARGET_MIB = 16
EVENT_BYTES = 400
NORMAL_SUBSCRIBERS = 10
KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """A process's resident memory now and at its peak, in bytes."""

    rss: int
    peak: int


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return Memory(rss=_kib(fields["VmRSS"]) * KIB, peak=_kib(fields["VmHWM"]) * KIB)


def _kib(value: str) -> int:
    number, unit = value.split()
    assert unit == "kB"
    return int(number)


def mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


# -- the subscribers' process (hidden mode --subscribers-child) ----------------------


@dataclass
class Tally:
    """What one subscriber received: how many events, and how often a seq broke the run."""

    next_seq: int
    count: int = 0
    gaps: int = 0
    close_code: int | None = None


async def count_messages(connection: ClientConnection, tally: Tally, expect: int) -> None:
    """Count messages until ``expect`` of them arrived or the connection closes."""
    try:
        async for message in connection:
            seq = orjson.loads(message)["seq"]
            if seq != tally.next_seq:
                tally.gaps += 1
            tally.next_seq = seq + 1
            tally.count += 1
            if tally.count >= expect:
                return
    except ConnectionClosed:
        pass
    tally.close_code = connection.close_code


async def subscribers_child(
    url: str, count: int, first_seq: int, expect: int, timeout: float
) -> dict[str, Any]:
    """Hold ``count`` subscribers, each expecting ``expect`` events from ``first_seq`` on.

    Prints ``ready`` once every connection is open and ``done`` once each
    received ``expect`` events (at once when ``expect`` is 0; at the latest
    after ``timeout``). The connections stay open until stdin closes, so the
    parent measures the server with them; then returns each one's tally.
    """
    connections = await open_subscribers(url, count)
    tallies = [Tally(next_seq=first_seq) for _ in connections]
    tasks = [
        asyncio.create_task(count_messages(connection, tally, expect))
        for connection, tally in zip(connections, tallies, strict=True)
    ]
    print("ready", flush=True)
    if expect:
        await asyncio.wait(tasks, timeout=timeout)
    print("done", flush=True)
    await asyncio.to_thread(sys.stdin.buffer.read)
    for task in tasks:
        task.cancel()
    closing = [asyncio.create_task(connection.close()) for connection in connections]
    await asyncio.wait(closing, timeout=30)
    return {
        "counts": [tally.count for tally in tallies],
        "gaps": [tally.gaps for tally in tallies],
        "close_codes": [tally.close_code for tally in tallies if tally.close_code is not None],
    }


# -- the benchmark's process -----------------------------------------------------------


@contextlib.contextmanager
def fresh_server() -> Iterator[Target]:
    """projctl's real server for a new database in a folder of its own, both gone afterwards."""
    with bench_database(1, make_project=seed) as bench:
        yield projctl_target(bench.server)


@contextlib.contextmanager
def subscribers(
    target: Target, count: int, first_seq: int, expect: int, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """A process holding ``count`` subscribers, yielded once the server counts them all."""
    command = [
        *(sys.executable, SCRIPT, "--subscribers-child", str(count), "--url", target.url),
        *("--first-seq", str(first_seq), "--expect", str(expect), "--timeout", f"{timeout:g}"),
    ]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        if (line := read_line(child, 120)) != "ready":
            raise SystemExit(f"the subscribers' process said {line!r}")
        yield child
    finally:
        stop_process(child)


def wait_done(child: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once the subscribers' process says each subscriber has its events."""
    if (line := read_line(child, timeout)) != "done":
        raise SystemExit(f"the subscribers' process said {line!r}")


def collect(child: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Let the subscribers' process close its connections; return its summary."""
    output, _ = child.communicate(b"", timeout=60)
    if child.returncode != 0:
        raise SystemExit(f"the subscribers' process failed with {child.returncode}")
    summary: dict[str, Any] = orjson.loads(output)
    return summary


def raw_subscriber(port: int) -> socket.socket:
    """A WebSocket subscriber that completes the handshake and then never reads.

    Raises ``SystemExit`` when it cannot (see :func:`open_raw`).
    """
    try:
        return open_raw(port, "/ws")
    except OSError as error:
        raise SystemExit(f"the raw subscriber could not connect: {error}") from None


def open_raw(port: int, path: str) -> socket.socket:
    """A never-reading subscriber of ``path`` (``/ws?snapshot=1``, say), as :func:`raw_subscriber`;
    raises ``OSError`` (``ConnectionError`` for a refused upgrade) when it cannot connect."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Set before connecting, so the window it advertises stays small.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        # One byte at a time: whatever follows the response (a snapshot) stays unread.
        while b"\r\n\r\n" not in response:
            chunk = raw.recv(1)
            if not chunk:
                raise ConnectionError("the server closed the connection during the handshake")
            response += chunk
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the upgrade failed: {response[:40]!r}")
    except BaseException:
        raw.close()
        raise
    return raw


def idle_subscribers(count: int) -> None:
    """Part (a): memory idle, then with ``count`` idle subscribers."""
    with fresh_server() as target:
        time.sleep(0.5)  # let start-up's allocations settle
        idle = memory(target.pid)
        print(f"(a) idle server: RSS {mib(idle.rss)}, peak (VmHWM) {mib(idle.peak)}")
        with subscribers(target, count, first_seq=0, expect=0, timeout=0) as child:
            wait_subscribers(target, count)
            time.sleep(1)  # handshakes done; let their buffers be released
            held = memory(target.pid)
            wait_done(child, 60)
            collect(child)
        growth = held.rss - idle.rss
        print(
            f"    with {count} idle subscribers: RSS {mib(held.rss)} (+{mib(growth)}, "
            f"{growth / count / KIB:.1f} KiB per subscriber), peak {mib(held.peak)}"
        )


def stalled_subscriber(events: int, event_bytes: int) -> bool:
    """Part (b): a never-reading subscriber beside normal ones.

    Returns whether every normal subscriber received every event in order.
    """
    with fresh_server() as target:
        first_seq = int(target.status()["latest_seq"]) + 1
        lines = forward_lines(first_seq, events, event_bytes)
        timeout = 60 + events * NORMAL_SUBSCRIBERS / 10_000
        raw = raw_subscriber(urlsplit(target.url).port or 0)
        try:
            with subscribers(target, NORMAL_SUBSCRIBERS, first_seq, events, timeout) as child:
                wait_subscribers(target, NORMAL_SUBSCRIBERS + 1)
                before = memory(target.pid)
                sent = publish(target.socket_path, lines, None)
                wait_done(child, timeout)
                after = memory(target.pid)
                status = target.status()
                summary = collect(child)
        finally:
            raw.close()
    elapsed = sent[-1] - sent[0]
    print(
        f"(b) {events} events of ~{event_bytes} bytes published in {elapsed:.2f}s to "
        f"{NORMAL_SUBSCRIBERS} normal subscribers and 1 that never reads"
    )
    return report_stalled(before, after, status, summary, events, event_bytes)


def report_stalled(
    before: Memory,
    after: Memory,
    status: dict[str, Any],
    summary: dict[str, Any],
    events: int,
    event_bytes: int,
) -> bool:
    """Print part (b)'s figures against their targets; whether no event went missing."""
    growth = after.peak - before.rss
    grew_ok = growth <= GROWTH_TARGET_MIB * MIB
    # The target is for ~400-byte events: bigger ones (--quick) fill each buffer faster.
    target = (
        f"target <= {GROWTH_TARGET_MIB} MiB: {verdict(grew_ok)}"
        if event_bytes <= EVENT_BYTES
        else f"the {GROWTH_TARGET_MIB} MiB target is for ~{EVENT_BYTES}-byte events"
    )
    closed = status["slow_subscribers_closed"]
    complete = [
        count == events and gaps == 0
        for count, gaps in zip(summary["counts"], summary["gaps"], strict=True)
    ]
    print(
        f"    server RSS before {mib(before.rss)}, after {mib(after.rss)}, peak {mib(after.peak)}: "
        f"peak growth {mib(growth)} ({target})"
    )
    print(
        f"    never-reading subscriber closed: {'yes' if closed else 'no'} "
        f"(slow_subscribers_closed {closed}, {status['subscribers']} subscribers left; "
        f"target: closed: {verdict(closed >= 1)})"
    )
    print(
        f"    normal subscribers with all {events} events, seqs contiguous: "
        f"{sum(complete)} of {len(complete)} (counts {sorted(set(summary['counts']))}, "
        f"closed early with {summary['close_codes'] or 'none'}; "
        f"target: all: {verdict(all(complete))})"
    )
    return all(complete)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# -- parts (c) and (d): many never-reading subscribers -------------------------------

PEAK_TARGET_MIB = 200
AFTER_TARGET_MIB = 32
HEALTHZ_TARGET = 0.100  # seconds, the slowest /healthz answer allowed while (c) runs
FINAL_HEALTHZ_TARGET = 1.0  # seconds, the /healthz answer after (d)'s events
SAMPLE_INTERVAL = 0.05
#: Longer than any target, so a slow answer is measured rather than cut short.
HEALTHZ_TIMEOUT = 5.0
DESCRIPTION_BYTES = 300
MANY_EVENT_BYTES = 9 * KIB
#: Minutes: the server must not stop on its own while a part runs.
IDLE_TIMEOUT = 600
_DESCRIPTION = (
    "Move the billing service onto the new event bus: keep the old endpoints until every "
    "client has moved, measure the queue depth under the month-end load, write down what "
    "breaks and who owns each fix, then retire the nightly batch job and its cron entry. "
)


class ServerGone(Exception):
    """The server under test is no longer running."""


def memory_of(pid: int) -> Memory:
    """:func:`memory`, raising :class:`ServerGone` once the process has exited."""
    try:
        return memory(pid)
    except (OSError, KeyError):  # no /proc entry, or a zombie's without VmRSS
        raise ServerGone(f"the server (pid {pid}) is gone") from None


def healthz(port: int, timeout: float = HEALTHZ_TIMEOUT) -> dict[str, Any]:
    """``GET /healthz``, with the loopback ``Host`` that earns the full report.

    Raises ``OSError``, ``http.client.HTTPException`` or ``ValueError`` when no
    proper answer comes within ``timeout``.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz", headers={"Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise ValueError(f"/healthz answered {response.status}")
    health: dict[str, Any] = orjson.loads(body)
    return health


def ask_health(port: int, timeout: float = HEALTHZ_TIMEOUT) -> tuple[dict[str, Any] | None, str]:
    """:func:`healthz`'s report, or ``None`` and why there is none."""
    try:
        return healthz(port, timeout), ""
    except (OSError, http.client.HTTPException, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"


@dataclass
class Samples:
    """What a :class:`Sampler` saw."""

    #: VmRSS readings, bytes.
    rss: list[int] = field(default_factory=list)
    #: Seconds each answered ``/healthz`` took.
    latencies: list[float] = field(default_factory=list)
    #: When each of those was asked (``time.monotonic()``).
    asked: list[float] = field(default_factory=list)
    #: Why each unanswered ``/healthz`` failed.
    failures: list[str] = field(default_factory=list)
    #: Set when the server's process was found gone.
    gone: bool = False


class Sampler:
    """Two threads sampling a server every ~50 ms until the block ends: its VmRSS, and
    how long ``GET /healthz`` takes to answer.

    Threads, not a process: the benchmark's own work while they sample (opening
    sockets, publishing) waits in system calls, which release the GIL.
    """

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port
        self.samples = Samples()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample_rss, daemon=True),
            threading.Thread(target=self._sample_health, daemon=True),
        ]

    def __enter__(self) -> Samples:
        for thread in self._threads:
            thread.start()
        return self.samples

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HEALTHZ_TIMEOUT + 1)

    def _ticks(self) -> Iterator[None]:
        """Every SAMPLE_INTERVAL until stopped; a late sample does not cause a burst."""
        due = time.monotonic()
        while not self._stop.is_set():
            yield
            due = max(due + SAMPLE_INTERVAL, time.monotonic())
            self._stop.wait(due - time.monotonic())

    def _sample_rss(self) -> None:
        for _ in self._ticks():
            try:
                self.samples.rss.append(memory_of(self.pid).rss)
            except ServerGone:
                self.samples.gone = True
                return

    def _sample_health(self) -> None:
        for _ in self._ticks():
            started = time.monotonic()
            health, why = ask_health(self.port)
            if health is not None:
                self.samples.latencies.append(time.monotonic() - started)
                self.samples.asked.append(started)
            elif self.samples.gone:
                return
            else:
                self.samples.failures.append(why)


def describe(number: int) -> str:
    """Project ``number``'s description, ~DESCRIPTION_BYTES long."""
    text = f"Project {number}. "
    while len(text) < DESCRIPTION_BYTES:
        text += _DESCRIPTION
    return text[:DESCRIPTION_BYTES].rstrip()


def described_project(store: ProjectStore, number: int) -> object:
    """A project made through the store, so the file, its meta and journal are the store's own."""
    return store.create(f"project {number}", owner_id="bench", description=describe(number))


def add_projects(db: Path, count: int) -> None:
    """Add ``count`` projects to ``db``'s projects table in one rewrite of the file.

    Creating 20,000 projects one ``ProjectStore.create`` each would rewrite a
    growing file 20,000 times (minutes); the records are the model's own
    (``Project.to_dict``, ids from ``next_project_id``), added to the table of
    projects the store's docstring describes, before any server reads the file.
    """
    data = orjson.loads(db.read_bytes())
    projects: dict[str, Any] = data["projects"]
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    stamp = format_timestamp(start)
    for number in range(1, count + 1):
        project_id = next_project_id(
            start + timedelta(seconds=number), is_taken=projects.__contains__
        )
        projects[project_id] = Project(
            project_id=project_id,
            name=f"project {number}",
            type="api",
            status=STATUSES[number % len(STATUSES)],
            owner_id=f"owner{number % 17}",
            description=describe(number),
            created_at=stamp,
            updated_at=stamp,
        ).to_dict()
    db.write_bytes(orjson.dumps(data))


@contextlib.contextmanager
def bench_server(projects: int) -> Iterator[tuple[Target, int]]:
    """projctl's real server for a new database of ``projects`` projects; and the file's size.

    On exit the server is stopped as :func:`bench_database` stops it (which raises
    a ``ProjctlError`` when the server does not answer), and killed should that
    leave it running.
    """
    pid: int | None = None
    try:
        with bench_database(
            1, serve=False, idle_timeout=IDLE_TIMEOUT, make_project=described_project
        ) as bench:
            if projects > 1:
                add_projects(bench.db, projects - 1)
            info = start_server(bench.db, IDLE_TIMEOUT)
            pid = info.pid
            yield projctl_target(info), bench.db.stat().st_size
    finally:
        if pid is not None:
            kill_if_running(pid)


def kill_if_running(pid: int) -> None:
    """Kill server ``pid`` (ours: this process spawned it) if it still runs, and reap it."""
    if not runtime.pid_alive(pid):
        return
    print(f"    the server (pid {pid}) did not stop when asked; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while runtime.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def port_of(target: Target) -> int:
    port = urlsplit(target.url).port
    assert port is not None
    return port


@dataclass
class Opened:
    """Never-reading subscribers opened by :func:`open_never_reading`."""

    sockets: list[socket.socket] = field(default_factory=list)
    #: Why the first one that could not be opened failed; ``None`` when all opened.
    failure: str | None = None
    seconds: float = 0.0

    def close(self) -> None:
        """Close every socket (again: harmless)."""
        for raw in self.sockets:
            raw.close()


@contextlib.contextmanager
def never_reading(port: int, count: int, path: str) -> Iterator[Opened]:
    """``count`` raw subscribers of ``path``, all closed on exit (or earlier, by ``close``).

    Stops at the first that cannot be opened, and after a deadline that 2,000
    handshakes on loopback never come near: a wedged server cannot hold this up.
    """
    opened = Opened()
    started = time.monotonic()
    deadline = started + 120 + count * 0.1
    try:
        for _ in range(count):
            if time.monotonic() >= deadline:
                opened.failure = f"not all opened within {deadline - started:.0f}s"
                break
            try:
                opened.sockets.append(open_raw(port, path))
            except OSError as error:
                opened.failure = f"{type(error).__name__}: {error}"
                break
        opened.seconds = time.monotonic() - started
        yield opened
    finally:
        opened.close()


@dataclass(frozen=True)
class Count:
    """What :func:`wait_subscriber_count` saw: the server's last subscriber count and when."""

    subscribers: int | None
    seconds: float
    reached: bool


def wait_subscriber_count(
    pid: int, port: int, want: int, timeout: float, still: float | None = None
) -> Count:
    """Poll ``/healthz`` until the server counts ``want`` subscribers, at most ``timeout``.

    With ``still``, also stop once neither the count nor the server's peak memory
    has moved for that long: a server that will not count a stalled client (one
    still owed its snapshot, say) has then settled all the same.
    Raises :class:`ServerGone` when the server exits meanwhile.
    """
    started = time.monotonic()
    deadline = started + timeout
    seen: int | None = None
    last_change = started
    last_state: tuple[int, int] | None = None
    while True:
        health, _why = ask_health(port, min(HEALTHZ_TIMEOUT, max(0.1, deadline - time.monotonic())))
        peak = memory_of(pid).peak
        now = time.monotonic()
        if health is None:
            last_change = now  # a server too busy to answer has not settled
        else:
            seen = int(health["subscribers"])
            if seen == want:
                return Count(seen, now - started, True)
            if (seen, peak) != last_state:
                last_state, last_change = (seen, peak), now
        if now >= deadline or (still is not None and now - last_change >= still):
            return Count(seen, now - started, False)
        time.sleep(SAMPLE_INTERVAL)


def latency_line(
    samples: Samples, target: float | None, phases: list[tuple[str, float]]
) -> tuple[str, bool]:
    """``/healthz``'s figures for one part; and whether they meet ``target`` (max seconds).

    ``phases`` names each stretch of the part and when it began (``time.monotonic()``,
    in order): beside the overall figures, the slowest answer of each.
    """
    answered = sorted(samples.latencies)
    failed = len(samples.failures)
    if not answered:
        return f"/healthz never answered ({failed} tries failed)", False
    worst = answered[-1]
    ok = failed == 0 and (target is None or worst <= target)
    figure = (
        f"/healthz latency, {len(answered)} answers about every {SAMPLE_INTERVAL * 1000:g} ms: "
        f"p99 {percentile(answered, 0.99) * 1000:.1f} ms, max {worst * 1000:.1f} ms"
    )
    if failed:
        figure += f", and {failed} that did not answer within {HEALTHZ_TIMEOUT:g}s or failed "
        figure += f"(first: {samples.failures[0]})"
    if target is not None:
        # An unanswered request took at least the timeout (or the server was gone).
        ratio = f">= {HEALTHZ_TIMEOUT / target:.0f}x" if failed else f"{worst / target:.2f}x"
        figure += f" (target max <= {target * 1000:g} ms: {ratio}, {verdict(ok)})"
    slowest: dict[str, float] = {}
    for asked, latency in zip(samples.asked, samples.latencies, strict=True):
        phase = next((name for name, began in reversed(phases) if asked >= began), phases[0][0])
        slowest[phase] = max(slowest.get(phase, 0.0), latency)
    figure += "; slowest " + ", ".join(
        f"{name} {slowest[name] * 1000:.1f} ms" for name, _began in phases if name in slowest
    )
    return figure, ok


def peak_line(stalled: Memory, samples: Samples) -> str:
    """The peak figure of (c) and (d) beside its target."""
    target = PEAK_TARGET_MIB * MIB
    sampled = max(samples.rss, default=0)
    return (
        f"peak RSS (VmHWM) {mib(stalled.peak)}, sampled VmRSS max {mib(sampled)} "
        f"(target <= {PEAK_TARGET_MIB} MiB: {stalled.peak / target:.2f}x, "
        f"{verdict(stalled.peak <= target)})"
    )


def snapshot_clients(projects: int, clients: int, hold: float, settle: float) -> bool:
    """Part (c): ``clients`` never-reading ``?snapshot=1`` clients of a large database.

    Returns whether the part measured what it claims (every client connected and
    the server lived through it); targets missed are only printed.
    """
    try:
        with bench_server(projects) as (target, db_bytes):
            print(
                f"(c) {clients} never-reading ?snapshot=1 clients, {projects} projects "
                f"({db_bytes / 1e6:.1f} MB database)"
            )
            return measure_snapshots(target, clients, hold, settle)
    except ServerGone as error:
        print(f"    the server DIED during (c): {error}")
    except ProjctlError as error:
        print(f"    (c) failed: {error}")
    return False


def measure_snapshots(target: Target, clients: int, hold: float, settle: float) -> bool:
    """Part (c) against a running server: see :func:`snapshot_clients`."""
    port = port_of(target)
    time.sleep(0.5)  # let start-up's allocations settle
    idle = memory_of(target.pid)
    print(f"    idle server: RSS {mib(idle.rss)}, peak (VmHWM) {mib(idle.peak)}")
    with Sampler(target.pid, port) as samples:
        phases = [("connecting", time.monotonic())]
        with never_reading(port, clients, "/ws?snapshot=1") as opened:
            phases.append(("stalled", time.monotonic()))
            counted = wait_subscriber_count(
                target.pid, port, len(opened.sockets), 60 + clients * 0.5, still=3
            )
            time.sleep(hold)  # stalled: the server holds whatever it holds for them
            stalled = memory_of(target.pid)
            status, why = ask_health(port)
            opened.close()
            phases.append(("after closing", time.monotonic()))
            noticed = wait_subscriber_count(target.pid, port, 0, 10)
        time.sleep(settle)  # let freed memory go back to the system
        after = memory_of(target.pid)
    print(
        f"    {len(opened.sockets)} of {clients} clients upgraded in {opened.seconds:.2f}s"
        + (f"; then: {opened.failure}" if opened.failure else "")
        + (
            f"; all {counted.subscribers} counted as subscribers after {counted.seconds:.1f}s; "
            if counted.reached
            else f"; the server counted {counted.subscribers} as subscribers (no change in 3s, "
            f"waited {counted.seconds:.1f}s); "
        )
        + (
            f"slow_subscribers_closed {status['slow_subscribers_closed']}"
            if status is not None
            else f"/healthz did not answer then ({why})"
        )
    )
    print(f"    {peak_line(stalled, samples)}")
    grown = after.rss - idle.rss
    print(
        f"    RSS {settle:g}s after all {len(opened.sockets)} closed (noticed in "
        f"{noticed.seconds:.1f}s, {noticed.subscribers} subscribers left): {mib(after.rss)}, "
        f"{'+' if grown >= 0 else ''}{mib(grown)} over idle (target within "
        f"{AFTER_TARGET_MIB} MiB: {max(grown, 0) / (AFTER_TARGET_MIB * MIB):.2f}x, "
        f"{verdict(grown <= AFTER_TARGET_MIB * MIB)})"
    )
    figure, _ok = latency_line(samples, HEALTHZ_TARGET, phases)
    print(f"    {figure}")
    return opened.failure is None and not samples.gone


def many_subscribers(count: int, events: int, event_bytes: int) -> bool:
    """Part (d): ``count`` never-reading ``/ws`` subscribers and ``events`` large events.

    Returns whether the part measured what it claims (every subscriber connected,
    every event was taken, the server lived); targets missed are only printed.
    """
    raise_fd_limit()  # the subscribers' sockets are this process's
    print(f"(d) {count} never-reading subscribers, {events} events of ~{event_bytes} bytes")
    try:
        with bench_server(1) as (target, _db_bytes):
            return measure_many(target, count, events, event_bytes)
    except ServerGone as error:
        print(f"    the server DIED during (d): {error}")
    except ProjctlError as error:
        print(f"    (d) failed: {error}")
    return False


def measure_many(target: Target, count: int, events: int, event_bytes: int) -> bool:
    """Part (d) against a running server: see :func:`many_subscribers`."""
    port = port_of(target)
    first_seq = int(target.status()["latest_seq"]) + 1
    lines = forward_lines(first_seq, events, event_bytes)
    time.sleep(0.5)  # let start-up's allocations settle
    idle = memory_of(target.pid)
    publish_error = None
    elapsed = 0.0
    with Sampler(target.pid, port) as samples:
        phases = [("connecting", time.monotonic())]
        with never_reading(port, count, "/ws") as opened:
            counted = wait_subscriber_count(target.pid, port, len(opened.sockets), 60)
            phases.append(("publishing", time.monotonic()))
            try:
                sent = publish(target.socket_path, lines, None)
                elapsed = time.monotonic() - sent[0]
            # publish raises SystemExit for a refused forward or a closed socket.
            except (OSError, SystemExit) as error:
                publish_error = str(error) or type(error).__name__
            final_started = time.monotonic()
            phases.append(("after", final_started))
            status, final_error = ask_health(port)
            final = time.monotonic() - final_started
            stalled = memory_of(target.pid)
        noticed = wait_subscriber_count(target.pid, port, 0, 10)
        after = memory_of(target.pid)
    print(
        f"    {len(opened.sockets)} of {count} connected in {opened.seconds:.2f}s"
        + (f" (then: {opened.failure})" if opened.failure else "")
        + f", {counted.subscribers} counted by the server; the events "
        + (
            f"NOT all published: {publish_error}"
            if publish_error
            else f"published in {elapsed:.2f}s"
        )
    )
    print(f"    idle server: RSS {mib(idle.rss)}; {peak_line(stalled, samples)}")
    if status is None:
        print(
            f"    final /healthz: NO ANSWER after {final:.2f}s ({final_error}; "
            f"target <= {FINAL_HEALTHZ_TARGET:g} s: MISSED)"
        )
    else:
        print(
            f"    slow subscribers closed: {status['slow_subscribers_closed']} of "
            f"{len(opened.sockets)} ({status['subscribers']} subscribers left, latest_seq "
            f"{status['latest_seq']})"
        )
        print(
            f"    final /healthz answered in {final * 1000:.1f} ms (target <= "
            f"{FINAL_HEALTHZ_TARGET:g} s: {final / FINAL_HEALTHZ_TARGET:.2f}x, "
            f"{verdict(final <= FINAL_HEALTHZ_TARGET)})"
        )
    figure, _ok = latency_line(samples, None, phases)
    print(f"    {figure}")
    print(f"    after closing them all (noticed in {noticed.seconds:.1f}s): RSS {mib(after.rss)}")
    return opened.failure is None and publish_error is None and not samples.gone


# -- part (e): a flood of half-open TLS handshakes --------------------------------------

FLOOD_CAP = 50
#: Sockets a full server keeps past its cap (to answer a 503, and for /healthz).
FLOOD_SPARE = 2
#: Open files a server may hold beyond its idle ones, its cap and spare slots.
FLOOD_FD_MARGIN = 4
FLOOD_GROWTH_TARGET_MIB = 32
FLOOD_AFTER_TARGET_MIB = 16
#: The server's handshake timeout (10 s) and some slack to notice.
FLOOD_CLOSED_TARGET = 15.0


def open_files(pid: int) -> set[str]:
    """What process ``pid`` has open (fd and target, so a reused fd is another file);
    raises :class:`ServerGone` once it exited."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        raise ServerGone(f"the server (pid {pid}) is gone") from None
    files = set()
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            files.add(f"{name} {os.readlink(f'/proc/{pid}/fd/{name}')}")
    return files


def half_a_client_hello() -> bytes:
    """The first half of a real TLS ClientHello: a handshake that never completes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


@dataclass
class FloodSamples:
    """Open files and RSS of the server, sampled every ~50 ms by :class:`FloodSampler`."""

    #: Open files at each sample.
    files: list[int] = field(default_factory=list)
    #: Files open at each sample that were open at the one before too.
    held: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    gone: bool = False


class FloodSampler(threading.Thread):
    """A thread sampling a server's open files and VmRSS until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = FloodSamples()
        self.stop = threading.Event()

    def run(self) -> None:
        before: set[str] = set()
        while not self.stop.wait(SAMPLE_INTERVAL):
            try:
                files = open_files(self.pid)
                self.samples.files.append(len(files))
                self.samples.held.append(len(files & before))
                before = files
                self.samples.rss.append(memory_of(self.pid).rss)
            except ServerGone:
                self.samples.gone = True
                return


def wss_client(port: int, ca_file: Path, token: str) -> str:
    """What a normal ``wss://`` subscriber gets: served, an HTTP status, or an error."""

    async def attempt() -> str:
        context = ssl.create_default_context(cafile=str(ca_file))
        url = f"wss://127.0.0.1:{port}/ws"
        headers = {"Authorization": f"Bearer {token}"}  # the server refuses a token in a URL
        try:
            async with connect(url, ssl=context, additional_headers=headers, open_timeout=10):
                return "served"
        except InvalidStatus as refused:
            return f"refused with HTTP {refused.response.status_code}"
        except (OSError, ssl.SSLError, WebSocketException, EOFError) as error:
            return f"refused ({type(error).__name__})"

    return asyncio.run(attempt())


def tls_flood(count: int, cap: int) -> bool:
    """Part (e): ``count`` half-open TLS handshakes against a server capped at ``cap``.

    Returns whether the part measured what it claims (the server lived, every stalled
    connection was closed in time to be measured); targets missed are only printed.
    """
    raise_fd_limit()  # the flood's sockets are this process's
    print(
        f"(e) {count} connections each sending half a TLS ClientHello, "
        f"PROJCTL_MAX_CONNECTIONS={cap}"
    )
    pid = None
    try:
        with bench_database(serve=False, idle_timeout=IDLE_TIMEOUT) as bench:
            credentials = make_credentials(bench.folder)
            capped = dataclasses.replace(
                bench, env={**bench.env, "PROJCTL_MAX_CONNECTIONS": str(cap)}
            )
            with team_server(capped, credentials) as server:
                pid = server.pid
                return measure_flood(server.pid, server.state.port, credentials, count, cap)
    except ServerGone as error:
        print(f"    the server DIED during (e): {error}")
    except ProjctlError as error:
        print(f"    (e) failed: {error}")
    finally:
        if pid is not None:
            kill_if_running(pid)
    return False


def measure_flood(pid: int, port: int, credentials: Any, count: int, cap: int) -> bool:
    """Part (e) against a running server: see :func:`tls_flood`."""
    time.sleep(0.5)  # let start-up's allocations settle
    idle, idle_files = memory_of(pid), len(open_files(pid))
    hello = half_a_client_hello()
    sampler = FloodSampler(pid)
    sampler.start()
    flood: list[socket.socket] = []
    refused = 0
    try:
        started = time.monotonic()
        for _ in range(count):
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                refused += 1
                continue
            flood.append(raw)
            try:
                raw.sendall(hello)
            except OSError:
                refused += 1
        opened = time.monotonic() - started
        # The server closes each stalled one after its handshake timeout (or at once).
        deadline = time.monotonic() + 60
        while len(open_files(pid)) > idle_files and time.monotonic() < deadline:
            time.sleep(SAMPLE_INTERVAL)
        closed_after = time.monotonic() - started
        all_closed = len(open_files(pid)) <= idle_files
        time.sleep(1.0)  # the memory hand-back runs once the last handshake has ended
        after = memory_of(pid)
        client = wss_client(port, credentials.ca_file, credentials.read_token)
    finally:
        for raw in flood:
            raw.close()
        sampler.stop.set()
        sampler.join(5)
    samples = sampler.samples
    peak_files = max(samples.files, default=idle_files)
    peak_held = max(samples.held, default=idle_files)
    peak_rss = max(samples.rss, default=idle.rss)
    held_target = idle_files + cap + FLOOD_SPARE + FLOOD_FD_MARGIN
    growth = peak_rss - idle.rss
    kept = after.rss - idle.rss
    print(
        f"    {count} connections opened in {opened:.2f}s "
        f"({refused} refused or reset while sending)"
    )
    print(
        f"    server open files: idle {idle_files}; held at most {peak_held} (target <= "
        f"{held_target}: {verdict(peak_held <= held_target)}); at any instant at most "
        f"{peak_files} (with sockets just accepted and being refused)"
    )
    print(
        f"    server RSS: idle {mib(idle.rss)}, peak {mib(peak_rss)} (+{mib(growth)}; target "
        f"<= +{FLOOD_GROWTH_TARGET_MIB} MiB: {verdict(growth <= FLOOD_GROWTH_TARGET_MIB * MIB)}), "
        f"VmHWM {mib(after.peak)}"
    )
    print(
        f"    every stalled one closed {closed_after:.1f}s after the flood began "
        f"(target <= {FLOOD_CLOSED_TARGET:g} s: "
        f"{verdict(all_closed and closed_after <= FLOOD_CLOSED_TARGET)}); RSS then "
        f"{mib(after.rss)} (+{mib(kept)} over idle; target <= +{FLOOD_AFTER_TARGET_MIB} MiB: "
        f"{verdict(kept <= FLOOD_AFTER_TARGET_MIB * MIB)})"
    )
    print(f"    a normal wss:// subscriber afterwards: {client}")
    return all_closed and not samples.gone


TLS_EACH_TARGET_KIB = 64
TLS_TOTAL_TARGET_MIB = 128
#: How many TLS handshakes this process runs at once while opening (f)'s subscribers.
TLS_CONNECT_BATCH = 50


def tls_idle_subscribers(count: int) -> bool:
    """Part (f): ``count`` idle ``wss://`` subscribers of ``projctl serve`` with TLS.

    Returns whether the part measured what it claims (every subscriber connected and got
    the one event); targets missed are only printed.
    """
    raise_fd_limit()  # the subscribers' sockets are this process's
    print(f"(f) {count} idle wss:// subscribers (TLS; read token in Authorization)")
    pid = None
    try:
        with bench_database(serve=False, idle_timeout=IDLE_TIMEOUT) as bench:
            credentials = make_credentials(bench.folder)
            with team_server(bench, credentials) as server:
                pid = server.pid
                return asyncio.run(
                    asyncio.wait_for(measure_tls_idle(server, credentials, count), 600)
                )
    except ServerGone as error:
        print(f"    the server DIED during (f): {error}")
    except (ProjctlError, TimeoutError, OSError, WebSocketException) as error:
        print(f"    (f) failed: {type(error).__name__}: {error}")
    finally:
        if pid is not None:
            kill_if_running(pid)
    return False


async def measure_tls_idle(server: Any, credentials: Any, count: int) -> bool:
    """Part (f) against a running server: see :func:`tls_idle_subscribers`."""
    await asyncio.sleep(0.5)  # let start-up's allocations settle
    idle = memory_of(server.pid)
    context = ssl.create_default_context(cafile=str(credentials.ca_file))
    headers = {"Authorization": f"Bearer {credentials.read_token}"}
    subscribers: list[ClientConnection] = []
    started = time.monotonic()
    try:
        for first in range(0, count, TLS_CONNECT_BATCH):
            subscribers += await asyncio.gather(
                *(
                    connect(
                        server.url + "/ws",
                        ssl=context,
                        additional_headers=headers,
                        compression=None,
                        ping_interval=None,
                        open_timeout=60,
                    )
                    for _ in range(first, min(count, first + TLS_CONNECT_BATCH))
                )
            )
        opened = time.monotonic() - started
        port = urlsplit(server.url).port
        assert port is not None
        counted = await asyncio.to_thread(wait_subscriber_count_tls, server, credentials, count, 60)
        await asyncio.sleep(1.0)  # idle: the handshakes' memory settled, nothing in flight
        held = memory_of(server.pid)
        arrivals = [asyncio.ensure_future(subscriber.recv()) for subscriber in subscribers]
        sent = time.monotonic()
        await asyncio.to_thread(create_over_https, port, credentials)
        await asyncio.wait_for(asyncio.gather(*arrivals), 60)
        fan_out = time.monotonic() - sent
    finally:
        await asyncio.wait_for(
            asyncio.gather(*(s.close() for s in subscribers), return_exceptions=True), 120
        )
    growth = held.rss - idle.rss
    each = growth / count
    total_target = TLS_TOTAL_TARGET_MIB * MIB
    print(
        f"    {count} opened in {opened:.1f}s ({TLS_CONNECT_BATCH} handshakes at a time); "
        f"the server counted {counted}"
    )
    print(
        f"    server RSS: idle {mib(idle.rss)}, with {count} idle TLS subscribers "
        f"{mib(held.rss)}: +{mib(growth)} (target <= +{TLS_TOTAL_TARGET_MIB} MiB: "
        f"{growth / total_target:.2f}x, {verdict(growth <= total_target)}), "
        f"{each / KIB:.1f} KiB each (target <= {TLS_EACH_TARGET_KIB} KiB: "
        f"{each / (TLS_EACH_TARGET_KIB * KIB):.2f}x, "
        f"{verdict(each <= TLS_EACH_TARGET_KIB * KIB)})"
    )
    print(
        f"    one REST create to all {count}: {fan_out * 1000:.1f} ms from request to last arrival"
    )
    return counted == count


def wait_subscriber_count_tls(server: Any, credentials: Any, want: int, timeout: float) -> int:
    """Ask the server (over its local socket) until it counts ``want`` subscribers."""
    deadline = time.monotonic() + timeout
    while True:
        status = runtime.request(server.state, rpc.OP_STATUS)
        seen = int(status["subscribers"])
        if seen >= want or time.monotonic() >= deadline:
            return seen
        time.sleep(SAMPLE_INTERVAL)


def create_over_https(port: int, credentials: Any) -> None:
    """One ``POST /api/projects`` with the write token: an event for every subscriber."""
    context = ssl.create_default_context(cafile=str(credentials.ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        connection.request(
            "POST",
            "/api/projects",
            body=orjson.dumps({"name": "fan-out", "owner_id": "bench"}),
            headers={
                "Authorization": f"Bearer {credentials.write_token}",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 201:
        raise SystemExit(f"the create was refused: {response.status} {body[:200]!r}")


PARTS = ("idle", "stalled", "snapshots", "fanout2000", "tlsflood", "tlsidle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # [] among the choices: argparse checks an empty nargs="*" against them (Python < 3.12).
    parser.add_argument(
        "parts", nargs="*", choices=[*PARTS, []], help="run only these (default: all)"
    )
    parser.add_argument("--idle", type=int, default=1000, help="idle subscribers in (a)")
    parser.add_argument("--events", type=int, default=20_000, help="events in (b)")
    parser.add_argument("--event-bytes", type=int, default=EVENT_BYTES, help="event size in (b)")
    parser.add_argument("--projects", type=int, default=20_000, help="projects in (c)")
    parser.add_argument("--clients", type=int, default=150, help="snapshot clients in (c)")
    parser.add_argument("--many", type=int, default=2000, help="subscribers in (d)")
    parser.add_argument("--many-events", type=int, default=150, help="events in (d)")
    parser.add_argument("--flood", type=int, default=1000, help="half-open handshakes in (e)")
    parser.add_argument("--flood-cap", type=int, default=FLOOD_CAP, help="the cap in (e)")
    parser.add_argument("--tls-idle", type=int, default=1000, help="TLS subscribers in (f)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="(a) 20 idle; (b) 500 events of 16 KiB; (c) 500 projects, 10 clients; "
        "(d) 50 subscribers, 20 events; (e) 200 connections, a cap of 20; (f) 20 subscribers",
    )
    hidden = argparse.SUPPRESS
    parser.add_argument("--subscribers-child", type=int, help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("--first-seq", type=int, help=hidden)
    parser.add_argument("--expect", type=int, help=hidden)
    parser.add_argument("--timeout", type=float, help=hidden)
    args = parser.parse_args()
    if args.subscribers_child is not None:
        raise_fd_limit()
        summary = asyncio.run(
            subscribers_child(
                args.url, args.subscribers_child, args.first_seq, args.expect, args.timeout
            )
        )
        sys.stdout.buffer.write(orjson.dumps(summary))
        return
    if args.quick:
        args.idle, args.events, args.event_bytes = 20, 500, 16 * KIB
        args.projects, args.clients, args.many, args.many_events = 500, 10, 50, 20
        args.flood, args.flood_cap, args.tls_idle = 200, 20, 20
    hold, settle = (0.2, 0.5) if args.quick else (1.0, 2.0)
    parts = args.parts or PARTS
    failed = []
    if "idle" in parts:
        idle_subscribers(args.idle)
    if "stalled" in parts and not stalled_subscriber(args.events, args.event_bytes):
        failed.append("(b): a normal subscriber missed events")
    if "snapshots" in parts and not snapshot_clients(args.projects, args.clients, hold, settle):
        failed.append("(c) did not complete (see above)")
    if "fanout2000" in parts and not many_subscribers(
        args.many, args.many_events, MANY_EVENT_BYTES
    ):
        failed.append("(d) did not complete (see above)")
    if "tlsflood" in parts and not tls_flood(args.flood, args.flood_cap):
        failed.append("(e) did not complete (see above)")
    if "tlsidle" in parts and not tls_idle_subscribers(args.tls_idle):
        failed.append("(f) did not complete (see above)")
    if failed:
        raise SystemExit("; ".join(failed))


if __name__ == "__main__":
    main()
