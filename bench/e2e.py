"""Benchmark: end to end, from `projctl create` to its event at a WebSocket subscriber.

Run by hand:  python bench/e2e.py [--runs 21] [--quick]

Sets up a database with 100 projects and its server (loopback, a free port),
connects one subscriber in this process, then runs `projctl create NAME` as a
whole process, one run after another (plus one untimed warm-up). For each run
it stamps ``time.monotonic()`` before spawning, when the subscriber receives
the run's ``project_created`` event, and when the process has exited, and
reports the medians of: the command's wall time, spawn to arrival, and arrival
minus exit. Target: the event arrives no later than 10 ms after the command
ends (median arrival - exit <= 10 ms).

The exit is seen by a blocking wait in a thread, not ``wait(timeout=...)``,
which polls in steps of up to 50 ms; a watchdog bounds each run instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from _common import bench_database, run_bounded
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from projctl import rpc, runtime

PROJCTL = str(Path(sys.executable).with_name("projctl"))
PROJECTS = 100
ARRIVAL_TARGET = 0.010
COMMAND_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Run:
    """One `projctl create`: monotonic times of its spawn, its event's arrival, its exit."""

    started: float
    arrived: float
    exited: float


class Arrivals:
    """When each project's ``project_created`` event reached the subscriber, by name."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[float]] = {}

    def _future(self, name: str) -> asyncio.Future[float]:
        return self._futures.setdefault(name, asyncio.get_running_loop().create_future())

    def record(self, name: str, moment: float) -> None:
        future = self._future(name)
        if not future.done():
            future.set_result(moment)

    async def wait(self, name: str, timeout: float) -> float:
        """The arrival time of ``name``'s event, waiting at most ``timeout`` for it."""
        try:
            return await asyncio.wait_for(self._future(name), timeout)
        except asyncio.TimeoutError:
            raise SystemExit(f"the event for {name!r} never arrived") from None


async def subscribe(connection: ClientConnection, arrivals: Arrivals) -> None:
    """Record the arrival of every ``project_created`` event until the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in connection:
            arrived = time.monotonic()  # before parsing: decoding is the subscriber's business
            event = orjson.loads(message)
            if event.get("event_type") == "project_created":
                arrivals.record(event["data"]["name"], arrived)


def run_create(name: str, env: dict[str, str]) -> tuple[float, float]:
    """Run `projctl create NAME` to its end; return its monotonic spawn and exit times."""
    finished = run_bounded(
        [PROJCTL, "create", name], env, timeout=COMMAND_TIMEOUT, stderr=subprocess.PIPE
    )
    if finished.returncode != 0:
        errors = (finished.stderr or b"").decode()
        raise SystemExit(f"projctl create failed ({finished.returncode}): {errors}")
    return finished.started, finished.exited


async def wait_subscribed(info: runtime.ServerState, timeout: float = 10.0) -> None:
    """Return once the server counts our subscriber."""
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(rpc.request, info.socket, rpc.OP_STATUS))["subscribers"] < 1:
        if time.monotonic() >= deadline:
            raise SystemExit("the server never counted the subscriber")
        await asyncio.sleep(0.01)


async def measure(info: runtime.ServerState, env: dict[str, str], runs: int) -> list[Run]:
    """Subscribe, then time ``runs`` creates after one untimed warm-up."""
    arrivals = Arrivals()
    async with connect(info.url, compression=None, max_size=None, open_timeout=10) as connection:
        listener = asyncio.create_task(subscribe(connection, arrivals))
        await wait_subscribed(info)
        results: list[Run] = []
        for number in range(runs + 1):
            name = f"e2e-{number}"
            # In a thread, so this loop stays free to stamp the event the moment it lands.
            started, exited = await asyncio.to_thread(run_create, name, env)
            arrived = await arrivals.wait(name, ARRIVAL_TIMEOUT)
            if number > 0:
                results.append(Run(started=started, arrived=arrived, exited=exited))
        listener.cancel()
    return results


def report(results: list[Run]) -> None:
    wall = statistics.median(run.exited - run.started for run in results)
    arrival = statistics.median(run.arrived - run.started for run in results)
    lag = [run.arrived - run.exited for run in results]
    late = sum(1 for value in lag if value > ARRIVAL_TARGET)
    median_lag = statistics.median(lag)
    met = "met" if median_lag <= ARRIVAL_TARGET else "MISSED"
    print(f"projctl create, {len(results)} runs ({PROJECTS} projects, server up), medians:")
    print(f"  command wall time (spawn to exit)   {wall * 1000:7.1f} ms")
    print(f"  spawn to event arrival              {arrival * 1000:7.1f} ms")
    print(
        f"  arrival - exit                      {median_lag * 1000:7.1f} ms   "
        f"(target <= {ARRIVAL_TARGET * 1000:g} ms: {met}; "
        f"worst {max(lag) * 1000:.1f} ms, {late} of {len(lag)} runs over)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="3 runs: checks the benchmark runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    with bench_database(PROJECTS, idle_timeout=300) as bench:
        results = asyncio.run(
            asyncio.wait_for(measure(bench.server, bench.env, runs), 60 + 30 * runs)
        )
        report(results)


if __name__ == "__main__":
    main()
