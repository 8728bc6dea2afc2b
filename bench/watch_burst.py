"""Benchmark: a burst of events into `projctl watch` holding many projects.

Run by hand:  python bench/watch_burst.py [--projects 1000] [--events 5000]

Sets up a database with N projects and its server (loopback, a free port),
starts `projctl watch` on a real terminal (tmux, 110 x 40), then pushes a burst
of events through the server's forward (its private Unix socket, as commands
forward) as fast as it accepts them. It reports how long after the last event's broadcast the screen
showed it (target: <= 1 s), watch's CPU time for the burst, and the same burst
into `projctl watch --json` for comparison. Everything binds 127.0.0.1 and
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
from _common import BenchDatabase, bench_database, start_server

from projctl import rpc, runtime
from projctl.events import (
    format_timestamp,
    project_created,
    project_deleted,
    project_updated,
    utc_now,
)
from projctl.store import ProjectStore

PROJCTL = str(Path(sys.executable).with_name("projctl"))
TICKS = os.sysconf("SC_CLK_TCK")
IDLE_TIMEOUT = 120


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def make_events(store: ProjectStore, count: int) -> list[dict[str, object]]:
    """A realistic mix (60% updates, 25% creates, 15% deletes) continuing the journal's seq."""
    projects = {p.project_id: p.to_dict() for p in store.list_projects()}
    seq = store.latest_seq()
    events: list[dict[str, object]] = []
    ids = list(projects)
    for number in range(count):
        seq += 1
        stamp = format_timestamp(utc_now())
        kind = number % 20
        if kind < 12 and ids:
            project_id = ids[number % len(ids)]
            record = {**projects[project_id], "status": "in_progress", "updated_at": stamp}
            record["description"] = f"burst {number}"
            projects[project_id] = record
            event = project_updated(record, ["status", "description"], seq=seq, timestamp=stamp)
        elif kind < 17 or not ids:
            project_id = f"proj_burst_{number}"
            record = {
                **next(iter(projects.values())),
                "project_id": project_id,
                "name": f"b{number}",
            }
            projects[project_id] = record
            ids.append(project_id)
            event = project_created(record, seq=seq, timestamp=stamp)
        else:
            project_id = ids.pop(0)
            event = project_deleted(projects.pop(project_id), seq=seq, timestamp=stamp)
        events.append(dict(event))
    return events


async def publish(info: runtime.ServerState, events: list[dict[str, object]]) -> float:
    """Forward every event over the private socket, as commands do, on one connection;
    return the moment the last one was accepted."""
    reader, writer = await asyncio.open_unix_connection(str(info.socket), limit=2 * rpc.MAX_MESSAGE)

    async def send_all() -> None:
        for event in events:
            writer.write(rpc.encode_request(rpc.OP_FORWARD, event=event))
            await writer.drain()

    # Replies are read while requests go out, so neither side's buffer fills up.
    sending = asyncio.ensure_future(send_all())
    try:
        for _ in events:
            reply = orjson.loads(await reader.readline())
            if not reply.get("ok"):
                raise SystemExit(f"the server refused a forward: {reply}")
        await sending
        return time.perf_counter()
    finally:
        sending.cancel()
        writer.close()


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout


def wait_screen(socket: str, needle: str, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if needle in tmux(socket, "capture-pane", "-p", "-t", "w"):
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit(f"the screen never showed {needle!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="20 projects, 100 events")
    args = parser.parse_args()
    if args.quick:
        args.projects, args.events = 20, 100
    if not shutil.which("tmux"):
        raise SystemExit("needs tmux")
    # Timed from before the folder and environment are set up (microseconds), so the
    # figure is the projects' creation; the server starts after it, untimed.
    started = time.perf_counter()
    with bench_database(
        args.projects, serve=False, idle_timeout=IDLE_TIMEOUT, make_project=owned_project
    ) as bench:
        print(f"setup: {args.projects} projects in {time.perf_counter() - started:.1f}s")
        bursts(args, bench, start_server(bench.db, IDLE_TIMEOUT))


def owned_project(store: ProjectStore, number: int) -> object:
    """Project ``number`` of the database, its owner one of 17."""
    return store.create(f"project {number}", owner_id=f"owner{number % 17}")


def bursts(args: argparse.Namespace, bench: BenchDatabase, info: runtime.ServerState) -> None:
    """The burst into `projctl watch` on a terminal, then into `projctl watch --json`."""
    store = ProjectStore(bench.db)
    socket = f"projctl-bench-{os.getpid()}"
    try:
        command = f"exec env PROJCTL_DB={bench.db} {PROJCTL} watch"
        tmux(socket, "new-session", "-d", "-s", "w", "-x", "110", "-y", "40", command)
        watch_pid = int(tmux(socket, "list-panes", "-t", "w", "-F", "#{pane_pid}").strip())
        wait_screen(socket, f"last seq {store.latest_seq()}", 30)
        events = make_events(store, args.events)
        final_seq = events[-1]["seq"]
        cpu_before = cpu_seconds(watch_pid)
        burst_start = time.perf_counter()
        last_accepted = asyncio.run(asyncio.wait_for(publish(info, events), 120))
        shown = wait_screen(socket, f"last seq {final_seq}", 30)
        cpu = cpu_seconds(watch_pid) - cpu_before
        lag = shown - last_accepted
        print(f"burst: {args.events} events published in {last_accepted - burst_start:.2f}s")
        print(
            f"watch (terminal): last event on screen {lag * 1000:.0f} ms after its broadcast "
            f"(target <= 1000 ms: {'met' if lag <= 1 else 'MISSED'}); CPU {cpu:.2f}s "
            f"({cpu / args.events * 1e6:.0f} us/event)"
        )
        # The same burst into JSON Lines mode, for comparison.
        more = make_events_after(events, args.events)
        with subprocess.Popen(
            [PROJCTL, "watch", "--json", "--count", str(len(more))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=bench.env,
        ) as json_watch:
            assert json_watch.stderr is not None
            json_watch.stderr.readline()  # "connected to ..."
            cpu_before = cpu_seconds(json_watch.pid)
            last_accepted = asyncio.run(asyncio.wait_for(publish(info, more), 120))
            cpu = cpu_seconds(json_watch.pid) - cpu_before
            json_watch.wait(timeout=60)
            done = time.perf_counter()
        print(
            f"watch --json: all {len(more)} lines written {(done - last_accepted) * 1000:.0f} ms "
            f"after the last broadcast; CPU {cpu:.2f}s"
        )
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)


def make_events_after(previous: list[dict[str, object]], count: int) -> list[dict[str, object]]:
    """Updates of one project continuing after ``previous``."""
    last = previous[-1]
    seq = int(str(last["seq"]))
    record = {
        "project_id": "proj_json_burst",
        "name": "json burst",
        "type": "api",
        "status": "created",
        "owner_id": "bench",
        "description": "",
        "created_at": format_timestamp(utc_now()),
        "updated_at": format_timestamp(utc_now()),
    }
    events: list[dict[str, object]] = []
    for number in range(count):
        seq += 1
        stamp = format_timestamp(utc_now())
        record = {**record, "description": str(number), "updated_at": stamp}
        events.append(dict(project_updated(record, ["description"], seq=seq, timestamp=stamp)))
    return events


if __name__ == "__main__":
    main()
