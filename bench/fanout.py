"""Benchmark: fan-out to 1, 100 and 1,000 subscribers, beside a bare websockets server.

Run by hand:  python bench/fanout.py [--events 1000] [--quick]

For each size a separate process holds the subscribers (``compression=None``,
``max_size=None``), and this process pushes the events through the server's
Unix socket, one forward at a time, as fast as the replies come. The same run
measures a bare ``websockets`` server (``serve`` + ``broadcast``, in its own
process) that takes the same newline-JSON forwards and broadcasts
``orjson.dumps(event)``, so the comparison is fair.

- deliveries/s = subscribers x events / (last receive - first publish);
- latency = receive - publish, over every delivery. Both ends stamp
  ``time.monotonic()``, which on Linux is one clock for the whole machine.

Beside each, the server's CPU time per delivery: once the subscribers' process
(one core of its own) is the bottleneck, deliveries/s says little about the
server and CPU time says more (counted in clock ticks of 10 ms: meaningless in --quick).

Targets: deliveries/s at least 0.8x the bare server's at every size; with 100
subscribers and events paced at 100/s, publish-to-receive p99 <= 20 ms.
Everything binds 127.0.0.1 with a free port and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _common import bench_database
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from projctl import rpc, runtime
from projctl.events import format_timestamp, project_updated, utc_now
from projctl.store import ProjectStore

SCRIPT = os.path.abspath(__file__)
SIZES = (1, 100, 1000)
QUICK_SIZES = (1, 5)
RATIO_TARGET = 0.8
PACED_SUBSCRIBERS = 100
PACED_RATE = 100.0  # events per second
PACED_P99_TARGET = 0.020
#: Handshakes in flight at once: well under the listen backlog (100), so none is refused.
CONNECT_BATCH = 50
START_TIMEOUT = 30.0
TICKS = os.sysconf("SC_CLK_TCK")


# -- shared by every process --------------------------------------------------------


def raise_fd_limit() -> None:
    """Lift this process's soft open-file limit to its hard limit (1,000 sockets need it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty list."""
    index = math.ceil(fraction * len(ordered)) - 1
    return ordered[min(len(ordered) - 1, max(0, index))]


# -- the subscribers' process (hidden mode --subscribers-child) ----------------------


@dataclass
class Inbox:
    """What one subscriber received: each message's seq and monotonic arrival time."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))


async def open_subscribers(url: str, count: int) -> list[ClientConnection]:
    """``count`` open connections to ``url``, handshaking ``CONNECT_BATCH`` at a time."""

    async def open_one() -> ClientConnection:
        return await connect(url, compression=None, max_size=None, open_timeout=30)

    connections: list[ClientConnection] = []
    for first in range(0, count, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, count - first)
        connections += await asyncio.gather(*(open_one() for _ in range(batch)))
    return connections


async def receive(connection: ClientConnection, inbox: Inbox, last_seq: int) -> None:
    """Record every message until ``last_seq`` arrives or the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in connection:
            arrived = time.monotonic()  # first thing: parsing is not part of the latency
            inbox.times.append(arrived)
            inbox.seqs.append(orjson.loads(message)["seq"])
            if inbox.seqs[-1] >= last_seq:
                return


def summarize(inboxes: list[Inbox], sent: list[float], first_seq: int) -> dict[str, Any]:
    """Deliveries, last arrival, latency percentiles and how many inboxes saw a gap or swap."""
    latencies: list[float] = []
    disordered = 0
    for inbox in inboxes:
        if list(inbox.seqs) != list(range(first_seq, first_seq + len(inbox.seqs))):
            disordered += 1
        latencies.extend(
            arrived - sent[seq - first_seq]
            for seq, arrived in zip(inbox.seqs, inbox.times, strict=True)
            if 0 <= seq - first_seq < len(sent)
        )
    latencies.sort()
    return {
        "deliveries": len(latencies),
        "disordered": disordered,
        "last_receive": max((inbox.times[-1] for inbox in inboxes if inbox.times), default=None),
        "p50": percentile(latencies, 0.50) if latencies else None,
        "p99": percentile(latencies, 0.99) if latencies else None,
        "max": latencies[-1] if latencies else None,
    }


async def subscribers_child(
    url: str, count: int, first_seq: int, events: int, timeout: float
) -> dict[str, Any]:
    """Hold ``count`` subscribers and time each delivery of seqs ``first_seq``.. onwards.

    Prints ``ready`` once every connection is open and ``done`` once the last
    event arrived everywhere (or after ``timeout``); then reads the publisher's
    send times, a JSON list indexed by ``seq - first_seq``, from stdin, closes
    the connections and returns the summary.
    """
    connections = await open_subscribers(url, count)
    inboxes = [Inbox() for _ in connections]
    last_seq = first_seq + events - 1
    tasks = [
        asyncio.create_task(receive(connection, inbox, last_seq))
        for connection, inbox in zip(connections, inboxes, strict=True)
    ]
    print("ready", flush=True)
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()
    print("done", flush=True)
    sent = orjson.loads(await asyncio.to_thread(sys.stdin.buffer.read))
    summary = summarize(inboxes, sent, first_seq)
    closing = [asyncio.create_task(connection.close()) for connection in connections]
    await asyncio.wait(closing, timeout=30)
    return summary


# -- the bare server's process (hidden mode --bare-server) ---------------------------


async def bare_server(socket_path: Path) -> None:
    """A minimal fan-out server: ``serve`` + ``broadcast``, fed by newline-JSON forwards.

    Speaks the same Unix-socket requests as projctl's server (``forward`` and
    ``status``, one JSON line each way). Prints its port once it listens and
    runs until SIGTERM.
    """
    subscribers: set[ServerConnection] = set()
    latest_seq = 0

    async def subscriber(connection: ServerConnection) -> None:
        subscribers.add(connection)
        try:
            async for _message in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            subscribers.discard(connection)

    async def requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal latest_seq
        while line := await reader.readline():
            request = orjson.loads(line)
            if request.get("op") == "forward":
                event = request["event"]
                broadcast(subscribers, orjson.dumps(event), text=True)
                latest_seq = event["seq"]
                reply = {"ok": True, "seq": latest_seq}
            else:
                reply = {"ok": True, "subscribers": len(subscribers), "latest_seq": latest_seq}
            writer.write(orjson.dumps(reply) + b"\n")
            await writer.drain()
        writer.close()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(subscriber, "127.0.0.1", 0, compression=None, max_size=None) as server:
        unix_server = await asyncio.start_unix_server(requests, path=str(socket_path))
        print(server.sockets[0].getsockname()[1], flush=True)
        await stop.wait()
        unix_server.close()


# -- the benchmark's process -----------------------------------------------------------


class LineClient:
    """One connection to a server's Unix socket: newline-JSON requests and replies."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        self._socket.connect(str(path))
        self._reader = self._socket.makefile("rb")

    def call(self, line: bytes) -> dict[str, Any]:
        """Send one request line and return the decoded reply."""
        self._socket.sendall(line)
        reply = self._reader.readline()
        if not reply:
            raise SystemExit("the server closed its Unix socket")
        result: dict[str, Any] = orjson.loads(reply)
        return result

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._reader.close()
        self._socket.close()


@dataclass
class Target:
    """A server under test: where subscribers connect and where forwards go."""

    name: str
    pid: int
    url: str
    socket_path: Path
    #: The bare server's process; projctl's server is stopped through its database.
    process: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any]:
        with LineClient(self.socket_path) as line_client:
            return line_client.call(rpc.encode_request(rpc.OP_STATUS))


@dataclass(frozen=True)
class Result:
    """One fan-out measurement. Times are in seconds."""

    expected: int
    deliveries: int
    disordered: int
    per_second: float
    p50: float
    p99: float
    #: The server's CPU time (user + system) from the first send to the last delivery.
    server_cpu: float

    @property
    def cpu_per_delivery(self) -> float:
        return self.server_cpu / self.deliveries


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line a child prints (its stdout unbuffered), waiting at most ``timeout``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise SystemExit(f"{process.args} printed nothing within {timeout:g}s")
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"{process.args} exited with {process.wait(10)}")
    return line.decode().strip()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child and reap it, killing it if it lingers."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def seed(store: ProjectStore, _number: int) -> object:
    """A fan-out database's one project: the events pushed are synthetic, so one will do."""
    return store.create("seed", owner_id="bench")


def projctl_target(info: runtime.ServerState) -> Target:
    """projctl's real server, as :func:`bench_database` started it."""
    return Target("projctl", info.pid, info.url, info.socket)


def start_bare(folder: Path) -> Target:
    """The bare websockets server, in its own process."""
    path = folder / "bare.sock"
    command = [sys.executable, SCRIPT, "--bare-server", str(path)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
    try:
        port = int(read_line(process, START_TIMEOUT))
    except BaseException:
        stop_process(process)
        raise
    return Target("bare", process.pid, f"ws://127.0.0.1:{port}/ws", path, process)


def wait_subscribers(target: Target, count: int, timeout: float = 60.0) -> None:
    """Return once the server counts exactly ``count`` subscribers."""
    deadline = time.monotonic() + timeout
    while (seen := target.status()["subscribers"]) != count:
        if time.monotonic() >= deadline:
            raise SystemExit(f"{target.name}: {seen} subscribers, not {count}, after {timeout:g}s")
        time.sleep(0.02)


def forward_lines(first_seq: int, count: int, event_bytes: int = 0) -> list[bytes]:
    """``count`` forward requests updating one synthetic project, seqs ``first_seq``.. on.

    With ``event_bytes``, the description is padded so each event encodes to about that size.
    """
    stamp = format_timestamp(utc_now())
    record = {
        "project_id": "proj_fanout",
        "name": "fan-out",
        "type": "api",
        "status": "in_progress",
        "owner_id": "bench",
        "description": "",
        "created_at": stamp,
        "updated_at": stamp,
    }
    sample = {**record, "description": f"fan-out {first_seq} "}
    sample_bytes = len(
        orjson.dumps(project_updated(sample, ["description"], seq=first_seq, timestamp=stamp))
    )
    padding = "x" * max(0, event_bytes - sample_bytes)
    lines = []
    for seq in range(first_seq, first_seq + count):
        description = f"fan-out {seq} {padding}"
        event = project_updated(
            {**record, "description": description}, ["description"], seq=seq, timestamp=stamp
        )
        lines.append(rpc.encode_request(rpc.OP_FORWARD, event=event, version=None))
    return lines


def publish(socket_path: Path, lines: list[bytes], interval: float | None) -> list[float]:
    """Forward each line and wait for its reply; return each one's monotonic send time.

    With ``interval``, send ``n`` is due at ``first + n * interval``: a fixed
    schedule, so a late send does not delay all the ones after it.
    """
    sent: list[float] = []
    with LineClient(socket_path) as line_client:
        start = time.monotonic()
        for number, line in enumerate(lines):
            if interval is not None:
                delay = start + number * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent.append(time.monotonic())
            reply = line_client.call(line)
            if not reply.get("ok"):
                raise SystemExit(f"forward refused: {reply}")
    return sent


def measure(target: Target, subscribers: int, events: int, interval: float | None) -> Result:
    """Push ``events`` to ``subscribers`` held by a child process; time every delivery."""
    first_seq = int(target.status()["latest_seq"]) + 1
    lines = forward_lines(first_seq, events)
    # Generous: the subscribers' process, on one core, is the slowest part at 1,000.
    timeout = 60 + subscribers * events / 10_000 + (events * interval if interval else 0)
    command = [
        *(sys.executable, SCRIPT, "--subscribers-child", str(subscribers)),
        *("--url", target.url, "--first-seq", str(first_seq)),
        *("--events", str(events), "--timeout", f"{timeout:g}"),
    ]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        if (line := read_line(child, 120)) != "ready":
            raise SystemExit(f"the subscribers' process said {line!r}")
        wait_subscribers(target, subscribers)
        cpu_before = cpu_seconds(target.pid)
        sent = publish(target.socket_path, lines, interval)
        if (line := read_line(child, timeout + 60)) != "done":
            raise SystemExit(f"the subscribers' process said {line!r}")
        server_cpu = cpu_seconds(target.pid) - cpu_before
        output, _ = child.communicate(orjson.dumps(sent), timeout=60)
    finally:
        stop_process(child)
    if child.returncode != 0:
        raise SystemExit(f"the subscribers' process failed with {child.returncode}")
    summary = orjson.loads(output)
    if summary["deliveries"] == 0:
        raise SystemExit(f"{target.name}: no event reached any subscriber")
    return Result(
        expected=subscribers * events,
        deliveries=summary["deliveries"],
        disordered=summary["disordered"],
        per_second=summary["deliveries"] / (summary["last_receive"] - sent[0]),
        p50=summary["p50"],
        p99=summary["p99"],
        server_cpu=server_cpu,
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def complete(name: str, result: Result) -> bool:
    """Whether every delivery arrived in order; says so when not."""
    if result.deliveries == result.expected and not result.disordered:
        return True
    print(
        f"  {name}: LOST {result.expected - result.deliveries} of {result.expected} deliveries; "
        f"{result.disordered} subscribers saw a gap or a reordering"
    )
    return False


def milliseconds(result: Result) -> str:
    return f"{result.p50 * 1000:6.2f} / {result.p99 * 1000:7.2f}"


def fan_out(ours: Target, bare: Target, sizes: tuple[int, ...], events: int) -> bool:
    """The unpaced table; whether every delivery arrived."""
    print(f"fan-out: {events} events per size, one forward at a time, as fast as replies come")
    print(
        f"{'subscribers':>11}  {'projctl deliv/s':>15}  {'bare deliv/s':>12}  "
        f"{'ratio (target >= 0.8x)':<22}  {'projctl p50/p99 ms':>18}  {'bare p50/p99 ms':>18}  "
        "server CPU us/delivery"
    )
    intact = True
    for size in sizes:
        mine = measure(ours, size, events, None)
        theirs = measure(bare, size, events, None)
        ratio = mine.per_second / theirs.per_second
        print(
            f"{size:>11}  {mine.per_second:>15,.0f}  {theirs.per_second:>12,.0f}  "
            f"{f'{ratio:.2f}x {verdict(ratio >= RATIO_TARGET)}':<22}  "
            f"{milliseconds(mine):>18}  {milliseconds(theirs):>18}  "
            f"{mine.cpu_per_delivery * 1e6:.1f} vs {theirs.cpu_per_delivery * 1e6:.1f}"
        )
        intact = complete(ours.name, mine) and intact
        intact = complete(bare.name, theirs) and intact
    return intact


def paced(ours: Target, bare: Target, subscribers: int, events: int) -> bool:
    """The paced scenario; whether every delivery arrived."""
    print(f"paced: {subscribers} subscribers, {events} events at {PACED_RATE:g}/s")
    mine = measure(ours, subscribers, events, 1 / PACED_RATE)
    theirs = measure(bare, subscribers, events, 1 / PACED_RATE)
    print(
        f"  projctl latency p50 {mine.p50 * 1000:.2f} ms, p99 {mine.p99 * 1000:.2f} ms "
        f"(target p99 <= {PACED_P99_TARGET * 1000:g} ms: {verdict(mine.p99 <= PACED_P99_TARGET)})"
    )
    print(f"  bare    latency p50 {theirs.p50 * 1000:.2f} ms, p99 {theirs.p99 * 1000:.2f} ms")
    mine_intact = complete(ours.name, mine)
    theirs_intact = complete(bare.name, theirs)
    return mine_intact and theirs_intact


def benchmark(quick: bool, events: int) -> None:
    with bench_database(1, make_project=seed) as bench:
        ours = projctl_target(bench.server)
        bare: Target | None = None
        try:
            bare = start_bare(bench.folder)
            # Untimed: the first round of each server pays for imports and warming caches.
            for target in (ours, bare):
                measure(target, 1, min(events, 200), None)
            intact = fan_out(ours, bare, QUICK_SIZES if quick else SIZES, events)
            paced_size = (5, 50) if quick else (PACED_SUBSCRIBERS, events)
            intact = paced(ours, bare, *paced_size) and intact
        finally:
            if bare is not None and bare.process is not None:
                stop_process(bare.process)
    if not intact:
        raise SystemExit("some deliveries were lost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="1 and 5 subscribers, 50 events")
    hidden = argparse.SUPPRESS
    parser.add_argument("--subscribers-child", type=int, help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("--first-seq", type=int, help=hidden)
    parser.add_argument("--timeout", type=float, help=hidden)
    parser.add_argument("--bare-server", type=Path, help=hidden)
    args = parser.parse_args()
    if args.subscribers_child is not None:
        raise_fd_limit()
        summary = asyncio.run(
            subscribers_child(
                args.url, args.subscribers_child, args.first_seq, args.events, args.timeout
            )
        )
        sys.stdout.buffer.write(orjson.dumps(summary))
    elif args.bare_server is not None:
        raise_fd_limit()
        asyncio.run(bare_server(args.bare_server))
    else:
        benchmark(args.quick, 50 if args.quick else args.events)


if __name__ == "__main__":
    main()
