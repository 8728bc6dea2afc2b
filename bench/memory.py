"""Benchmark: the server's memory when idle, with 1,000 idle subscribers, and past a stalled one.

Run by hand:  python bench/memory.py [--idle 1000] [--events 20000] [--quick]

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

--quick uses 20 idle subscribers and 500 events of 16 KiB (not 400 bytes):
8 MB per subscriber, enough to outgrow the socket buffers and the 1 MiB limit,
so the stalled subscriber is still cut off.
Everything binds 127.0.0.1 with a free port and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

# Run as a script, bench/ is on sys.path: the shared set-up and the fan-out benchmark's
# helpers import from there.
from _common import bench_database
from fanout import (
    Target,
    forward_lines,
    open_subscribers,
    projctl_target,
    publish,
    raise_fd_limit,
    read_line,
    seed,
    stop_process,
    wait_subscribers,
)
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

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
    """A WebSocket subscriber that completes the handshake and then never reads."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connecting, so the window it advertises stays small.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = raw.recv(1)
        if not chunk:
            raise SystemExit("the server closed the raw subscriber during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"the raw subscriber's upgrade failed: {response[:40]!r}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle subscribers in (a)")
    parser.add_argument("--events", type=int, default=20_000, help="events in (b)")
    parser.add_argument("--event-bytes", type=int, default=EVENT_BYTES, help="event size in (b)")
    parser.add_argument("--quick", action="store_true", help="20 idle; 500 events of 16 KiB")
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
    idle_subscribers(args.idle)
    intact = stalled_subscriber(args.events, args.event_bytes)
    if not intact:
        raise SystemExit("a normal subscriber missed events")


if __name__ == "__main__":
    main()
