"""Chaos soak: writers, watchers and server kills together, and nothing is lost.

For ``--soak-seconds`` (20 by default, the CI run; longer by hand):

- 4 writer threads loop create / update / delete through the real ``projctl``;
- 3 subscribers follow the feed: ``projctl watch --json --since 0`` and two raw
  WebSocket clients that disconnect at random moments and resume with ``since``;
- the server is killed with SIGKILL every few seconds; the next command starts another.

At the end every subscriber has seen exactly the journal (same seqs, no gap, no
duplicate), the projects rebuilt from the events equal the database, and the file loads.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projctl import events, runtime
from projctl.runtime import pid_alive, runtime_paths
from projctl.store import ProjectStore

from .conftest import PROJCTL, wait_until

CATCH_UP_TIMEOUT = 90.0


class Subscriber:
    """Events one subscriber received: seq -> (event, when it arrived)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)
            self.arrivals.append(time.time())

    @property
    def last_seq(self) -> int:
        with self.lock:
            return self.events[-1]["seq"] if self.events else 0

    def max_delay(self) -> float:
        """Longest time from commit (the event's timestamp) to arrival."""
        delays = [
            arrival - events.parse_timestamp(event["timestamp"]).timestamp()  # type: ignore[union-attr]
            for event, arrival in zip(self.events, self.arrivals, strict=True)
        ]
        return max(delays, default=0.0)


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROJCTL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def writer(number: int, deadline: float, failures: list[str]) -> None:
    """Create, update and delete its own projects until the deadline."""
    rng = random.Random(number)
    mine: list[str] = []
    step = 0
    while time.monotonic() < deadline:
        step += 1
        if not mine or rng.random() < 0.4:
            done = run_command("create", f"writer {number} step {step}")
            if done.returncode == 0:
                mine.append(done.stdout.strip())
        elif rng.random() < 0.75:
            target = rng.choice(mine)
            field = rng.choice(
                ["--status=in_progress", "--status=on_hold", f"--description={step}"]
            )
            done = run_command("update", target, field)
        else:
            done = run_command("delete", mine.pop(rng.randrange(len(mine))))
        if done.returncode != 0:
            failures.append(f"writer {number}: {done.args[1:]} -> {done.returncode} {done.stderr}")


def killer(db_path: Path, deadline: float, kills: list[int]) -> None:
    """SIGKILL the database's server every 2-4 seconds."""
    rng = random.Random(99)
    paths = runtime_paths(db_path)
    while time.monotonic() < deadline - 1:
        time.sleep(rng.uniform(2, 4))  # the chaos schedule, not synchronisation
        info = runtime.read_server_state(paths)
        if info is not None and pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            kills.append(info.pid)


def read_watch(process: subprocess.Popen[str], subscriber: Subscriber) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        subscriber.add(orjson.loads(line))


async def raw_client(
    db_path: Path, subscriber: Subscriber, stop: threading.Event, seed: int, failures: list[str]
) -> None:
    """A plain WebSocket client that hangs up at random and resumes from its last seq."""
    rng = random.Random(seed)
    paths = runtime_paths(db_path)
    start = runtime.StartOptions("127.0.0.1", 0, 600)
    while not stop.is_set():
        try:
            info = await asyncio.to_thread(runtime.ensure_server, paths, start)
            url = f"{info.url}?since={subscriber.last_seq}"
            async with connect(url, open_timeout=5) as ws:
                hang_up_at = time.monotonic() + rng.uniform(0.2, 3)
                while time.monotonic() < hang_up_at and not stop.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    event = orjson.loads(message)
                    if event["seq"] != subscriber.last_seq + 1:
                        failures.append(
                            f"{subscriber.name}: seq {event['seq']} after {subscriber.last_seq}"
                        )
                        return
                    subscriber.add(event)
        except Exception:  # the server was killed under us: find it again and resume
            await asyncio.sleep(0.1)


def rebuild(journal: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    projects: dict[str, dict[str, Any]] = {}
    for event in journal:
        events.apply(projects, event)
    return projects


@pytest.mark.soak
@pytest.mark.slow
@pytest.mark.usefixtures("broadcasting")
def test_chaos_soak(
    request: pytest.FixtureRequest, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = float(request.config.getoption("--soak-seconds"))
    monkeypatch.setenv("PROJCTL_JOURNAL_LIMIT", "10000000")  # keep all, to compare at the end
    assert run_command("create", "seed").returncode == 0
    watcher = Subscriber("projctl watch")
    raw = [Subscriber("raw client 1"), Subscriber("raw client 2")]
    stop = threading.Event()
    failures: list[str] = []
    kills: list[int] = []
    deadline = time.monotonic() + seconds

    with subprocess.Popen(
        [PROJCTL, "watch", "--json", "--since", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as watch:
        threads = [
            threading.Thread(target=read_watch, args=(watch, watcher), daemon=True),
            threading.Thread(target=killer, args=(db_path, deadline, kills)),
            *(
                threading.Thread(target=writer, args=(number, deadline, failures))
                for number in range(4)
            ),
            *(
                threading.Thread(
                    target=asyncio.run,
                    args=(raw_client(db_path, subscriber, stop, seed, failures),),
                )
                for seed, subscriber in enumerate(raw)
            ),
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads[1:6]:
                thread.join(timeout=seconds + 180)
            latest = ProjectStore(db_path).latest_seq()
            for subscriber in (watcher, *raw):
                wait_until(
                    lambda s=subscriber: s.last_seq >= latest or bool(failures), CATCH_UP_TIMEOUT
                )
        finally:
            stop.set()
            watch.terminate()
            watch.wait(timeout=10)
            for thread in threads[6:]:
                thread.join(timeout=30)

    store = ProjectStore(db_path)
    state = store.read_state()  # the file loads
    journal = state.journal
    assert failures == []
    assert [event["seq"] for event in journal] == list(range(1, state.latest_seq + 1))
    for subscriber in (watcher, *raw):
        assert subscriber.events == journal, subscriber.name
    assert rebuild(journal) == {p.project_id: p.to_dict() for p in store.list_projects()}
    assert len(kills) >= max(1, int(seconds // 4) - 1)
    print(
        f"\nsoak {seconds:g}s: {len(journal)} events written, {len(kills)} server kills survived; "
        + "; ".join(
            f"{s.name}: {len(s.events)} delivered, max delay {s.max_delay():.2f}s"
            for s in (watcher, *raw)
        )
    )
