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

from projctl import events, runtime
from projctl.events import format_timestamp, project_created, project_deleted, project_updated
from projctl.runtime import pid_alive, runtime_paths
from projctl.store import ProjectStore
from projctl.subscribe import Connection, Message, follow
from projctl.watch import (
    DELETED_LINGER_SECONDS,
    HIGHLIGHT_SECONDS,
    EventFilter,
    FieldChange,
    WatchState,
    relative_time,
    render_screen,
    short_age,
)

from .conftest import PROJCTL, server_up, wait_until

NOW = 1_700_000_000.0
STAMP = "2023-11-14T22:13:20.000000"  # == NOW


def stamp(at: float) -> str:
    """The contract timestamp of the moment ``at`` (seconds since the epoch)."""
    from datetime import datetime, timezone

    return format_timestamp(datetime.fromtimestamp(at, timezone.utc))


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


def table_of(text: str) -> list[str]:
    """The table's lines of a rendered screen: its head, rule and rows, not the feed."""
    lines = text.split("Recent events")[0].splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("ID "))
    return lines[start:-1] if "Recent events" not in text else lines[start:]


def header_columns(text: str) -> list[str]:
    """The column headers, as printed (columns are two or more spaces apart)."""
    head = next(line for line in text.splitlines() if line.startswith("ID "))
    import re

    return re.split(r" {2,}", head.strip())


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
    assert [short_age(s) for s in (0.5, 12.9, 300, 3 * 3600 + 5)] == ["now", "12s", "5m", "3h"]


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
    assert "12s ago" in text  # Last change of a loaded row: its updated_at
    assert "2 projects · 0 events seen · last seq 7" in text


def test_new_updated_and_deleted_rows_are_marked() -> None:
    state = loaded_state()
    state.apply(message(project_created(record("proj_new"), seq=8, timestamp=STAMP)), NOW)
    changed = record("proj_a", status="completed", name="Renamed")
    updated = project_updated(changed, ["name", "status"], seq=9, timestamp=stamp(NOW + 1))
    state.apply(message(updated), NOW + 1)
    deleted = project_deleted(record("proj_b"), seq=10, timestamp=stamp(NOW + 2))
    state.apply(message(deleted), NOW + 2)
    text = screen(state, NOW + 3)
    lines = text.splitlines()
    row = {
        name: next(line for line in lines if line.startswith(name + " "))
        for name in ("proj_new", "proj_a", "proj_b")
    }
    assert "new · 3s" in row["proj_new"]
    # What changed, old and new, named as the columns are.
    assert 'status created → completed, name "name of proj_a" → Renamed · 2s' in row["proj_a"]
    assert "Renamed" in row["proj_a"]
    assert "del · 1s" in row["proj_b"]
    # Newest change first.
    assert text.index("proj_b") < text.index("proj_a") < text.index("proj_new")
    assert "3 events seen · last seq 10" in text
    assert (
        'project_updated  proj_a    status created → completed, name "name of proj_a" → Renamed'
        " · Renamed"
    ) in text
    assert style_of(state, "name of proj_b", NOW + 3).strike  # deleted: struck through
    assert style_of(state, "status created → completed", NOW + 3).bold
    assert style_of(state, "Renamed", NOW + 3).reverse  # changed cells stand out
    assert style_of(state, "completed", NOW + 3).reverse
    assert not style_of(state, "api", NOW + 3).reverse  # unchanged cells do not


def owner_and_status_changed() -> WatchState:
    """A long name: owner ann → bob and status created → in_progress in one update."""
    name = "Quarterly revenue dashboard for the northern region"
    state = WatchState()
    state.load([record("proj_20261204_034733", name=name)], NOW)
    after = record("proj_20261204_034733", name=name, owner_id="bob", status="in_progress")
    update = project_updated(after, ["owner_id", "status"], seq=2, timestamp=stamp(NOW))
    state.apply(message(update), NOW)
    return state


def test_an_update_keeps_each_fields_old_and_new_value() -> None:
    state = owner_and_status_changed()
    expected = (
        FieldChange("owner_id", "ann", "bob"),
        FieldChange("status", "created", "in_progress"),
    )
    assert state.rows["proj_20261204_034733"].changes == expected
    assert state.feed[0].changes == expected


@pytest.mark.parametrize(
    ("width", "label", "feed"),
    [
        (
            160,
            "owner ann → bob, status created → in_progress · 1s",
            "project_updated  proj_20261204_034733  "
            "owner ann → bob, status created → in_progress · Quarterly revenue",
        ),
        # Owner is not on screen at 80 columns: Last change says how it changed.
        (80, "owner ann → bob, +1 · 1s", "updated  proj_20261204_034733  owner ann → bob, status"),
    ],
)
def test_what_changed_is_shown_old_to_new(width: int, label: str, feed: str) -> None:
    text = screen(owner_and_status_changed(), NOW + 1, width=width, height=24)
    events = text.split("Recent events")[1]
    head, _, row = table_of(text)[:3]
    assert ("Owner" in head) is (width == 160)
    assert row.startswith("proj_20261204_034733 ")
    assert label in row
    assert "owner_id" not in text  # the column's name, not the wire's
    assert feed in events
    assert all(len(line) <= width for line in text.splitlines())


def test_a_changed_description_is_named_and_quoted() -> None:
    state = WatchState()
    state.load([record("proj_a")], NOW)
    after = record("proj_a", description="Now with words")
    state.apply(message(project_updated(after, ["description"], seq=2, timestamp=STAMP)), NOW)
    assert 'description "" → "Now with words" · ' in screen(state, NOW)


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


def test_more_projects_than_rows_shows_the_most_recent_and_counts_them() -> None:
    state = WatchState()
    for number in range(40):
        event = project_created(record(f"proj_{number:02}"), seq=number + 1, timestamp=STAMP)
        state.apply(message(event), NOW + number)
    text = screen(state, NOW + 40, height=20)
    assert len(text.splitlines()) <= 20
    assert "proj_39" in text
    assert "proj_00" not in text.split("Recent events")[0]
    shown = sum(1 for line in table_of(text) if line.startswith("proj_"))
    assert f"{shown} of 40 projects shown · 40 events seen" in text


def test_a_snapshot_starts_newest_change_on_top() -> None:
    """Rows loaded from a snapshot (or a resync, or the database) are ordered by updated_at
    from the first frame, not by id: 11 s ago sits above 27 s ago."""
    state = WatchState()
    snapshot = {
        "event_type": "snapshot",
        "seq": 3,
        "data": {
            "projects": [
                record("proj_20261126_150000", updated_at=stamp(NOW - 27)),
                record("proj_20261126_150000_2", updated_at=stamp(NOW - 11)),
                record("proj_20261126_150000_3", updated_at=stamp(NOW - 3600)),
            ]
        },
    }
    state.apply(message(snapshot), NOW)
    rows = [line.split()[0] for line in table_of(screen(state))[2:]]
    assert rows == ["proj_20261126_150000_2", "proj_20261126_150000", "proj_20261126_150000_3"]
    assert "11s ago" in table_of(screen(state))[2]
    resync = {**snapshot, "event_type": "resync", "seq": 9}
    state.apply(message(resync), NOW)
    assert [line.split()[0] for line in table_of(screen(state))[2:]] == rows
    loaded = WatchState()
    loaded.load(snapshot["data"]["projects"], NOW)  # type: ignore[index]
    assert list(loaded.rows) == list(reversed(rows))


def issue_state(now: float = NOW) -> WatchState:
    """The screen of the issue: `_2` ids, long names, one owner, a three-field update."""
    state = WatchState()
    state.apply(Connection("connected", "ws://127.0.0.1:8000/ws"), now)
    projects = [
        record(
            f"proj_20261126_1530{number:02}" + ("_2" if number % 2 else ""),
            name=f"Quarterly revenue dashboard for the northern region, part {number}",
            owner_id="root",
            updated_at=stamp(now - 60 - number),
        )
        for number in range(8)
    ]
    state.apply(
        message({"event_type": "snapshot", "seq": 300, "data": {"projects": projects}}), now
    )
    changed = {**projects[3], "name": "Renamed", "status": "in_progress", "type": "web"}
    update = project_updated(changed, ["name", "type", "status"], seq=301, timestamp=stamp(now))
    state.apply(message(update), now)
    state.apply(
        message(
            project_created(
                record("proj_20261126_153100_2", owner_id="root"), seq=302, timestamp=stamp(now)
            )
        ),
        now,
    )
    return state


@pytest.mark.parametrize(
    ("width", "height", "columns"),
    [
        (120, 30, ["ID", "Name", "Type", "Status", "Owner", "Last change"]),
        (80, 24, ["ID", "Name", "Status", "Last change"]),
        (60, 20, ["ID", "Name", "Status", "Last change"]),
    ],
)
def test_the_table_fits_and_never_truncates_an_id(
    width: int, height: int, columns: list[str]
) -> None:
    state = issue_state()
    text = screen(state, NOW + 3, width=width, height=height)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    assert len(lines) <= height
    assert header_columns(text) == columns  # whole headers only: no `La`, no `Own…`
    rows = table_of(text)[2:]
    assert len(rows) == 9  # they all fit: columns go, not rows
    for project_id in state.rows:
        assert any(line.split()[0] == project_id for line in rows), project_id
    assert "…" not in "".join(line.split()[0] for line in rows)
    assert rows[1].split()[1] == "Renamed"  # Name is there at every width
    assert "Quarterly" in rows[2]


def test_columns_are_as_wide_as_their_content() -> None:
    text = screen(issue_state(), NOW + 3, width=120)
    head = next(line for line in text.splitlines() if line.startswith("ID "))
    # Owner is as wide as `Owner` (every owner is `root`), Type as `Type`.
    assert "  Type  Status       Owner  Last change" in head
    assert head.index("Name") == len("proj_20261126_153000_2  ")


@pytest.mark.parametrize(
    ("width", "label"),
    [
        # Changes are told in the order their columns go on a narrow screen: type first.
        (120, "type api → web, +2 · 3s"),
        (80, "type api → web, +2 · 3s"),  # and Type is not on screen
        (60, "upd · 3s"),
    ],
)
def test_the_last_change_is_abbreviated_to_fit(width: int, label: str) -> None:
    text = screen(issue_state(), NOW + 3, width=width, height=24)
    assert label in table_of(text)[3]


def test_reconnecting_shows_a_countdown() -> None:
    state = loaded_state()
    state.apply(Connection("reconnecting", None, retry_in=3.2, error="connection refused"), NOW)
    text = screen(state, NOW + 1)
    assert "reconnecting in 2.2s (connection refused)" in text
    state.apply(Connection("starting"), NOW + 2)
    assert "starting server" in screen(state, NOW + 2)


def test_filters_apply_to_the_table() -> None:
    state = loaded_state()
    state.event_filter = EventFilter(statuses=frozenset({"on_hold"}))
    text = screen(state)
    assert "proj_b" in text
    assert "proj_a" not in text
    state.event_filter = EventFilter(types=frozenset({"web"}))
    state.load([record("proj_a"), record("proj_w", type="web")], NOW)
    text = screen(state)
    assert "filter type=web" in text
    assert "proj_w" in text
    assert "proj_a" not in text


def test_the_header_shows_the_filters_and_how_many_are_shown() -> None:
    state = WatchState(
        event_filter=EventFilter(owners=frozenset({"bob", "ann"}), statuses=frozenset({"on_hold"})),
        count=2,
    )
    state.apply(Connection("connected", "ws://127.0.0.1:9/ws"), NOW)
    projects = [record(f"proj_{n}", owner_id="bob") for n in range(309)]
    projects[7]["status"] = "on_hold"
    state.apply(message({"event_type": "snapshot", "seq": 1, "data": {"projects": projects}}), NOW)
    text = screen(state)
    assert "filter status=on_hold owner=ann,bob · until 2 matching events (0 so far)" in text
    assert "1 of 309 projects shown · 0 of 0 events matched" in text
    assert "309 projects ·" not in text
    updated = project_updated(
        {**projects[8], "status": "on_hold"}, ["status"], seq=2, timestamp=STAMP
    )
    state.apply(message(updated), NOW)
    state.apply(message(project_created(record("proj_x"), seq=3, timestamp=STAMP)), NOW)
    text = screen(state)
    assert "until 2 matching events (1 so far)" in text
    assert "2 of 310 projects shown · 1 of 2 events matched" in text
    assert "proj_x" not in text  # not in the table, not in the feed
    assert not state.done


def test_the_feed_lists_newest_on_top_like_the_table() -> None:
    state = loaded_state()
    for number, name in enumerate(("proj_c", "proj_d", "proj_e")):
        created = project_created(record(name), seq=8 + number, timestamp=stamp(NOW + number))
        state.apply(message(created), NOW + number)
    text = screen(state, NOW + 5)
    table, feed = text.split("Recent events")
    assert table.index("proj_e") < table.index("proj_d") < table.index("proj_c")
    assert feed.index("proj_e") < feed.index("proj_d") < feed.index("proj_c")
    assert feed.splitlines()[1].startswith("3s ago    #10  project_created  proj_e")


def test_count_counts_matching_events_as_json_mode_does() -> None:
    """--count on a terminal: the same events as run_json counts (a deletion is judged by
    the project as it was), replayed ones included."""
    state = WatchState(event_filter=EventFilter(owners=frozenset({"bob"})), count=2)
    state.load([record("proj_a", owner_id="bob"), record("proj_b")], NOW)
    state.apply(message(project_deleted(record("proj_b"), seq=5, timestamp=STAMP)), NOW)
    assert (state.events_matched, state.done) == (0, False)
    state.apply(
        message(project_created(record("proj_c", owner_id="bob"), seq=6, timestamp=STAMP)), NOW
    )
    assert (state.events_matched, state.done) == (1, False)
    state.apply(message(project_deleted(record("proj_a"), seq=7, timestamp=STAMP)), NOW)
    assert (state.events_matched, state.done) == (2, True)


def test_since_replays_events_as_changes_onto_the_current_projects() -> None:
    """watch --since N on a terminal: the table starts from the projects as they are, and
    the replayed events are changes on top of it, aged by when they happened."""
    state = WatchState()
    state.load(
        [
            record("proj_a", updated_at=stamp(NOW - 7200)),
            record("proj_b", status="completed", updated_at=stamp(NOW - 600)),
        ],
        NOW,
    )
    replayed = project_updated(
        record("proj_b", status="completed"), ["status"], seq=4, timestamp=stamp(NOW - 600)
    )
    state.apply(message(replayed), NOW)
    text = screen(state, NOW + 1)
    rows = table_of(text)[2:]
    assert rows[0].startswith("proj_b ")
    assert "status → completed · 10m" in rows[0]  # the old status was never seen
    assert rows[1].startswith("proj_a ")
    assert "2h ago" in rows[1]
    assert "2 projects · 1 event seen · last seq 4" in text
    assert "10m ago" in text.split("Recent events")[1]
    # A writer's clock ahead of ours never makes a change look as if in the future.
    ahead = project_created(record("proj_c"), seq=5, timestamp=stamp(NOW + 60))
    state.apply(message(ahead), NOW + 1)
    assert "new · now" in table_of(screen(state, NOW + 1))[2]


def test_rendering_changes_nothing() -> None:
    state = issue_state()
    before = (dict(state.rows), list(state.feed), state.events_seen, state.events_matched)
    assert screen(state, NOW + 3) == screen(state, NOW + 3)
    assert (dict(state.rows), list(state.feed), state.events_seen, state.events_matched) == before


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
    by_type = EventFilter(types=frozenset({"web", "cli"}))
    assert by_type.matches(
        project_created(record("proj_a", type="cli"), seq=1, timestamp=STAMP), None
    )
    assert not by_type.matches(created, None)  # an api
    # As for the owner, a deletion is judged by the project's last known type.
    assert by_type.matches(deleted, record("proj_a", type="web"))
    assert not by_type.matches(deleted, record("proj_a", type="api"))
    assert not by_type.matches(deleted, None)
    assert by_type.describe() == "type=cli,web"


# -- JSON Lines mode, against real servers -----------------------------------------------

Run = Callable[..., subprocess.CompletedProcess[str]]


def start_watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PROJCTL, "watch", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.usefixtures("broadcasting")
def test_count_exits_zero_after_n_events(projctl: Run) -> None:
    with start_watch("--since", "0", "--count", "2") as watch:
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
    assert done.stderr.splitlines()[-1] == "Error: timed out after 1s: 0 of 1 event"


@pytest.mark.usefixtures("broadcasting")
def test_timeout_without_count_ends_a_time_boxed_watch_with_zero(projctl: Run) -> None:
    for name in ("a", "b"):
        assert projctl("create", name).returncode == 0
    done = projctl("watch", "--json", "--since", "0", "--timeout", "1.5", timeout=15)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["data"]["name"] for line in done.stdout.splitlines()] == ["a", "b"]
    assert "Error" not in done.stderr
    short = projctl("watch", "--json", "--since", "0", "--count", "3", "--timeout", "1.5")
    assert short.returncode == 124  # with --count, 124 says the count was not reached
    assert len(short.stdout.splitlines()) == 2
    assert short.stderr.splitlines()[-1] == "Error: timed out after 1.5s: 2 of 3 events"


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
    b = projctl("create", "b", "--owner", "bob", "--type", "web").stdout.strip()
    assert projctl("update", a, "--status", "on_hold").returncode == 0
    assert projctl("update", b, "--status", "on_hold").returncode == 0
    assert projctl("delete", a).returncode == 0
    journal = store.journal()

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
        ("--type", "web"): [2, 4],
        ("--type", "api"): [1, 3, 5],  # the deleted one was an api
        ("--type", "api", "--type", "web", "--owner", "bob"): [2, 4],
    }

    # The whole journal through each filter, as watch folds it: nothing beyond what is listed
    # passes (a --count below cannot tell, as it stops at the last one listed).
    options = {"--event": "event_types", "--project": "project_ids", "--owner": "owners"}
    options |= {"--status": "statuses", "--type": "types"}
    for args, listed in expected.items():
        chosen: dict[str, set[str]] = {}
        for option, value in zip(args[::2], args[1::2], strict=True):
            chosen.setdefault(options[option], set()).add(value)
        event_filter = EventFilter(**{name: frozenset(v) for name, v in chosen.items()})
        projects: dict[str, dict[str, Any]] = {}
        passed = [e["seq"] for e in journal if event_filter.matches(e, events.apply(projects, e))]
        assert passed == listed, args

    def seqs(args: tuple[str, ...], count: int) -> list[int]:
        # --timeout covers finding (or starting) the server too: room for a busy machine.
        done = projctl("watch", "--since", "0", "--count", str(count), "--timeout", "20", *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("Error") == 0
        return [orjson.loads(line)["seq"] for line in done.stdout.splitlines()]

    # And each through the command line, which ends at the count it was given.
    with ThreadPoolExecutor(4) as pool:
        counts = [len(listed) for listed in expected.values()]
        assert dict(zip(expected, pool.map(seqs, expected, counts), strict=True)) == expected
    assert len(journal) == 5


@pytest.mark.usefixtures("broadcasting")
# A server killed and restarted under a watch (~12 s): slow run.
@pytest.mark.slow
def test_reconnect_across_a_server_kill_loses_and_repeats_nothing(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    assert projctl("create", "first").returncode == 0
    total = 12
    with start_watch("--since", "0", "--count", str(total)) as watch:
        assert watch.stdout is not None
        first = watch.stdout.readline()  # the replayed first event: it is connected
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
    received = [orjson.loads(line) for line in (first + out).splitlines()]
    assert [event["seq"] for event in received] == list(range(1, total + 1))
    assert received == store.journal()
    assert "reconnecting" in err


_BURST_WRITER = """
import sys
from projctl import rpc, runtime
from projctl.store import ProjectStore

store = ProjectStore(sys.argv[1], journal_limit=200)
server = runtime.read_server_state(runtime.runtime_paths(store.path))
ids = []
for number in range(int(sys.argv[2])):
    if number % 10 == 9 and ids:
        change = store.delete(ids.pop(0))
    elif number % 3 == 0 or not ids:
        change = store.create(f"burst {number}", owner_id="burst")
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
    server_up(db_path)  # the create starts it in the background; the writer forwards to it
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


@pytest.mark.usefixtures("broadcasting")
def test_a_project_filter_that_matches_nothing_yet_says_so_and_waits(projctl: Run) -> None:
    assert projctl("create", "billing-api").returncode == 0
    done = projctl("watch", "--json", "--project", "nope", "--project", "billing-api",
                   "--timeout", "1", timeout=15)  # fmt: skip
    assert done.returncode == 0, done.stderr  # it waited, as a time-boxed watch does
    assert done.stderr.splitlines() == ["projctl watch: no project matches 'nope' yet; waiting"]
    quiet = projctl("watch", "--quiet", "--project", "nope", "--timeout", "1", timeout=15)
    assert (quiet.returncode, quiet.stderr) == (0, "")


@pytest.mark.usefixtures("broadcasting")
def test_project_filter_takes_a_name_too(projctl: Run) -> None:
    named = projctl("create", "billing-api").stdout.strip()
    assert projctl("create", "other").returncode == 0
    assert projctl("update", "billing-api", "-s", "completed").returncode == 0
    done = projctl(
        "watch", "--json", "--since", "0", "--project", "billing-api", "--count", "2",
        "--timeout", "20",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [e["data"]["project_id"] for e in events] == [named, named]
