"""``projctl watch``: pure renderers, state folding, filters, and the JSON Lines mode."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from rich.style import Style

from projctl import runtime
from projctl.events import project_created, project_deleted, project_updated
from projctl.runtime import pid_alive, runtime_paths
from projctl.store import ProjectStore
from projctl.subscribe import Connection, Message, follow
from projctl.watch import (
    DELETED_LINGER_SECONDS,
    HIGHLIGHT_SECONDS,
    EventFilter,
    WatchState,
    relative_time,
    render_screen,
)

from .conftest import PROJCTL, wait_until

NOW = 1_700_000_000.0
STAMP = "2023-11-14T22:13:20.000000"  # == NOW


def record(project_id: str, **fields: str) -> dict[str, str]:
    base = {
        "project_id": project_id,
        "name": f"name of {project_id}",
        "type": "api",
        "status": "created",
        "owner_id": "ann",
        "description": "",
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    return {**base, **fields}


def message(data: dict[str, Any]) -> Message:
    return Message(orjson.dumps(data).decode(), data)


def screen(
    state: WatchState, now: float = NOW, width: int = 120, height: int = 30, **kw: Any
) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(render_screen(state, now, width=width, height=height, **kw))
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def style_of(state: WatchState, needle: str, now: float = NOW) -> Style:
    """The style of the first rendered segment holding ``needle``."""
    console = Console(file=io.StringIO(), width=160, height=30, color_system="standard")
    for segment in console.render(render_screen(state, now, width=160, height=30)):
        if needle in segment.text:
            return segment.style or Style()
    raise AssertionError(f"{needle!r} is not on screen")


def test_relative_time() -> None:
    assert relative_time(0.2) == "just now"
    assert relative_time(12.9) == "12s ago"
    assert relative_time(300) == "5m ago"
    assert relative_time(3 * 3600 + 5) == "3h ago"
    assert relative_time(2 * 86400) == "2d ago"


def loaded_state() -> WatchState:
    state = WatchState()
    state.apply(Connection("connected", "ws://127.0.0.1:9/ws"), NOW)
    snapshot = {
        "event_type": "snapshot",
        "seq": 7,
        "data": {"projects": [record("proj_a"), record("proj_b", status="on_hold")]},
    }
    state.apply(message(snapshot), NOW)
    return state


def test_snapshot_fills_the_table() -> None:
    text = screen(loaded_state(), NOW + 12)
    assert "● connected" in text
    assert "ws://127.0.0.1:9/ws" in text
    assert "proj_a" in text
    assert "on_hold" in text
    assert "12s ago" in text  # Updated, relative to updated_at
    assert "2 projects · 0 events seen · last seq 7" in text


def test_new_updated_and_deleted_rows_are_marked() -> None:
    state = loaded_state()
    state.apply(message(project_created(record("proj_new"), seq=8, timestamp=STAMP)), NOW)
    changed = record("proj_a", status="completed", name="Renamed")
    state.apply(
        message(project_updated(changed, ["name", "status"], seq=9, timestamp=STAMP)), NOW + 1
    )
    state.apply(message(project_deleted(record("proj_b"), seq=10, timestamp=STAMP)), NOW + 2)
    text = screen(state, NOW + 3)
    lines = text.splitlines()
    row = {
        name: next(line for line in lines if line.startswith(name))
        for name in ("proj_new", "proj_a", "proj_b")
    }
    assert "NEW · 3s ago" in row["proj_new"]
    assert "updated name, status · 2s ago" in row["proj_a"]
    assert "Renamed" in row["proj_a"]
    assert "DELETED · 1s ago" in row["proj_b"]
    # Newest change first.
    assert text.index("proj_b") < text.index("proj_a") < text.index("proj_new")
    assert "3 events seen · last seq 10" in text
    assert "project_updated  proj_a Renamed (name, status)" in text
    assert style_of(state, "name of proj_b", NOW + 3).strike  # deleted: struck through
    assert style_of(state, "Renamed", NOW + 3).reverse  # changed cells stand out
    assert style_of(state, "completed", NOW + 3).reverse
    assert not style_of(state, "api", NOW + 3).reverse  # unchanged cells do not


def test_highlights_fade_and_deleted_rows_disappear() -> None:
    state = loaded_state()
    changed = record("proj_a", status="completed")
    state.apply(message(project_updated(changed, ["status"], seq=8, timestamp=STAMP)), NOW)
    state.apply(message(project_deleted(record("proj_b"), seq=9, timestamp=STAMP)), NOW)
    assert style_of(state, "completed", NOW + 1).reverse
    later = NOW + max(HIGHLIGHT_SECONDS, DELETED_LINGER_SECONDS) + 1
    state.expire(later)
    assert "proj_b" not in state.rows
    assert not style_of(state, "completed", later).reverse
    assert "proj_b" not in screen(state, later).split("Recent events")[0]


def test_resync_rebuilds_the_table_and_says_so() -> None:
    state = loaded_state()
    resync = {"event_type": "resync", "seq": 50, "data": {"projects": [record("proj_z")]}}
    state.apply(message(resync), NOW)
    assert list(state.rows) == ["proj_z"]
    assert state.last_seq == 50
    assert "resync" in screen(state)
    assert "1 project reloaded" in screen(state)


def test_more_projects_than_rows_shows_the_most_recent_and_counts_the_rest() -> None:
    state = WatchState()
    for number in range(40):
        event = project_created(record(f"proj_{number:02}"), seq=number + 1, timestamp=STAMP)
        state.apply(message(event), NOW + number)
    text = screen(state, NOW + 40, height=20)
    assert len(text.splitlines()) <= 20
    assert "proj_39" in text
    assert "proj_00" not in text.split("Recent events")[0]
    hidden = int(text.split(" hidden")[0].rsplit("· ", 1)[1])
    shown = sum(1 for line in text.splitlines() if line.startswith("proj_"))
    assert shown + hidden == 40
    assert f"{hidden} more not shown" in text


@pytest.mark.parametrize("width", [50, 70, 90, 140])
def test_narrow_terminals_drop_columns_not_rows(width: int) -> None:
    state = loaded_state()
    text = screen(state, width=width)
    assert all(len(line) <= width for line in text.splitlines())
    assert sum(1 for line in text.splitlines() if line.startswith("proj_")) == 2
    assert ("Owner" in text) == (width >= 80)
    assert ("Type" in text) == (width >= 100)


def test_reconnecting_shows_a_countdown() -> None:
    state = loaded_state()
    state.apply(Connection("reconnecting", None, retry_in=3.2, error="connection refused"), NOW)
    text = screen(state, NOW + 1)
    assert "reconnecting in 2.2s (connection refused)" in text
    state.apply(Connection("starting"), NOW + 2)
    assert "starting server" in screen(state, NOW + 2)


def test_filters_apply_to_the_table() -> None:
    state = loaded_state()
    text = screen(state, event_filter=EventFilter(statuses=frozenset({"on_hold"})))
    assert "proj_b" in text
    assert "proj_a" not in text


def test_filter_semantics() -> None:
    created = project_created(record("proj_a", owner_id="bob"), seq=1, timestamp=STAMP)
    deleted = project_deleted(record("proj_a"), seq=2, timestamp=STAMP)
    assert EventFilter().matches(created, None)
    both_types = EventFilter(event_types=frozenset({"project_created", "project_deleted"}))
    assert both_types.matches(created, None)
    assert both_types.matches(deleted, None)
    only_updates = EventFilter(event_types=frozenset({"project_updated"}))
    assert not only_updates.matches(created, None)
    assert EventFilter(project_ids=frozenset({"proj_x", "proj_a"})).matches(created, None)
    assert not EventFilter(project_ids=frozenset({"proj_x"})).matches(created, None)
    by_owner = EventFilter(owners=frozenset({"bob"}))
    assert by_owner.matches(created, None)
    # A deletion carries no owner: the project's last known record decides.
    assert by_owner.matches(deleted, record("proj_a", owner_id="bob"))
    assert not by_owner.matches(deleted, record("proj_a", owner_id="ann"))
    assert not by_owner.matches(deleted, None)
    anded = EventFilter(owners=frozenset({"bob"}), statuses=frozenset({"archived"}))
    assert not anded.matches(created, None)


# -- JSON Lines mode, against real servers -----------------------------------------------

Run = Callable[..., subprocess.CompletedProcess[str]]


def start_watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PROJCTL, "watch", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_stderr_line(process: subprocess.Popen[str], text: str, timeout: float = 15) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if text in line:
            return
        assert line, "watch ended before saying it was connected"
    raise AssertionError(f"no {text!r} on stderr")


@pytest.mark.usefixtures("broadcasting")
def test_count_exits_zero_after_n_events(projctl: Run) -> None:
    with start_watch("--count", "2") as watch:
        wait_for_stderr_line(watch, "connected to ws://127.0.0.1:")
        for name in ("one", "two", "three"):
            assert projctl("create", name).returncode == 0
        out, _ = watch.communicate(timeout=30)
    assert watch.returncode == 0
    lines = out.splitlines()
    assert [orjson.loads(line)["data"]["name"] for line in lines] == ["one", "two"]


@pytest.mark.usefixtures("broadcasting")
def test_timeout_exits_124(projctl: Run) -> None:
    assert projctl("create", "server please").returncode == 0
    done = projctl("watch", "--json", "--count", "1", "--timeout", "1", timeout=15)
    assert done.returncode == 124
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == "Error: timed out after 1s waiting for events"


@pytest.mark.usefixtures("broadcasting")
def test_since_replays_exactly_as_journaled(projctl: Run, store: ProjectStore) -> None:
    for name in ("a", "b", "c"):
        assert projctl("create", name).returncode == 0
    done = projctl("watch", "--since", "1", "--count", "2", "--timeout", "20")
    assert done.returncode == 0  # stdout is a pipe: JSON Lines without --json
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == store.journal()[1:]
    everything = projctl("watch", "--since", "0", "--count", "3", "--timeout", "20")
    assert [orjson.loads(line) for line in everything.stdout.splitlines()] == store.journal()


@pytest.mark.usefixtures("broadcasting")
def test_every_filter(projctl: Run, store: ProjectStore) -> None:
    a = projctl("create", "a", "--owner", "ann").stdout.strip()
    b = projctl("create", "b", "--owner", "bob").stdout.strip()
    assert projctl("update", a, "--status", "on_hold").returncode == 0
    assert projctl("update", b, "--status", "on_hold").returncode == 0
    assert projctl("delete", a).returncode == 0
    journal = store.journal()

    def seqs(args: tuple[str, ...]) -> list[int]:
        done = projctl("watch", "--since", "0", "--timeout", "2", *args)
        assert done.returncode == 124  # it waited for more, which never came
        return [orjson.loads(line)["seq"] for line in done.stdout.splitlines()]

    expected: dict[tuple[str, ...], list[int]] = {
        (): [1, 2, 3, 4, 5],
        ("--event", "project_created"): [1, 2],
        ("--event", "project_created", "--event", "project_deleted"): [1, 2, 5],
        ("--project", a): [1, 3, 5],
        ("--project", a, "--project", b): [1, 2, 3, 4, 5],
        ("--owner", "bob"): [2, 4],
        ("--status", "on_hold"): [3, 4, 5],  # the deleted one was on hold
        ("--status", "on_hold", "--owner", "ann"): [3, 5],
        ("--status", "on_hold", "--event", "project_updated"): [3, 4],
    }
    with ThreadPoolExecutor(len(expected)) as pool:
        assert dict(zip(expected, pool.map(seqs, expected), strict=True)) == expected
    assert len(journal) == 5


@pytest.mark.usefixtures("broadcasting")
def test_reconnect_across_a_server_kill_loses_and_repeats_nothing(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    assert projctl("create", "first").returncode == 0
    total = 12
    with start_watch("--since", "0", "--count", str(total)) as watch:
        wait_for_stderr_line(watch, "connected to")
        for number in range(1, total):
            if number in (4, 8):
                info = runtime.read_server_state(runtime_paths(db_path))
                assert info is not None
                os.kill(info.pid, signal.SIGKILL)
                wait_until(lambda pid=info.pid: not pid_alive(pid), what="the killed server gone")
                # Commits while no server runs: journaled, broadcast later.
                assert projctl("create", f"unbroadcast {number}", "--no-broadcast").returncode == 0
                continue
            assert projctl("create", f"event {number}").returncode == 0
        out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    received = [orjson.loads(line) for line in out.splitlines()]
    assert [event["seq"] for event in received] == list(range(1, total + 1))
    assert received == store.journal()
    assert "reconnecting" in err


_BURST_WRITER = """
import sys
from projctl import rpc, runtime
from projctl.store import ProjectStore

store = ProjectStore(sys.argv[1], journal_limit=200, default_owner="burst")
server = runtime.read_server_state(runtime.runtime_paths(store.path))
ids = []
for number in range(int(sys.argv[2])):
    if number % 10 == 9 and ids:
        change = store.delete(ids.pop(0))
    elif number % 3 == 0 or not ids:
        change = store.create(f"burst {number}")
        ids.append(change.project.project_id)
    else:
        change = store.update(ids[number % len(ids)], {"description": str(number)})
    rpc.request(server.socket, rpc.OP_FORWARD, event=change.event, version=change.version)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("broadcasting")
def test_burst_of_5000_events_ends_in_the_database_state(projctl: Run, db_path: Path) -> None:
    """What watch's table holds after a burst equals the database (speed: see bench/)."""
    import asyncio

    assert projctl("create", "seed").returncode == 0
    store = ProjectStore(db_path)
    burst = 5000

    async def scenario() -> WatchState:
        state = WatchState()
        paths = runtime_paths(db_path)
        messages = follow(lambda: runtime.locate(paths, None), since=None, snapshot=True)
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BURST_WRITER, str(db_path), str(burst)
        )
        async for item in messages:
            state.apply(item, time.time())
            if state.last_seq == burst + 1:
                break
        assert await writer.wait() == 0
        return state

    state = asyncio.run(asyncio.wait_for(scenario(), 300))
    shown = {pid: row.project for pid, row in state.rows.items() if row.change != "deleted"}
    assert shown == {p.project_id: p.to_dict() for p in store.list_projects()}
    assert state.events_seen == burst
