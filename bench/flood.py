"""Benchmark: does the server answer while it streams snapshots to a flood of clients?

Run by hand:  python bench/flood.py [--projects 20000] [--clients 150] [--seconds 12] [--quick]

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

--quick: 500 projects, 10 clients, 3 s (figures that only show it still runs).
Everything binds 127.0.0.1 with a free port and every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from fanout import percentile
from memory import ServerGone, bench_server, memory_of, mib, port_of

PROBE_TARGET = 0.100  # seconds, the slowest /healthz answer allowed
PROBE_INTERVAL = 0.2


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the probes run")
    parser.add_argument("--quick", action="store_true", help="500 projects, 10 clients, 3 s")
    args = parser.parse_args()
    if args.quick:
        args.projects, args.clients, args.seconds = 500, 10, 3.0
    if not measure(args.projects, args.clients, args.seconds):
        raise SystemExit("the flood did not complete (see above)")


if __name__ == "__main__":
    main()
