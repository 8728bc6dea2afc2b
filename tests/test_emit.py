"""``projctl emit`` and ``Database.emit``: the rules, each path an emitted event takes (journal,
forward or start a server, replay, filters, ``/api/events``), what shows it, and the clients
written for the contract that must not notice it."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import Result

import projctl
from projctl import events, runtime
from projctl.backend import Emit
from projctl.errors import InvalidInputError, ProjectNotFoundError
from projctl.events import EMIT_DATA_MAX_BYTES, data_summary, emitted, project_created
from projctl.store import ProjectStore
from projctl.watch import EventFilter, WatchState

from .conftest import server_up
from .test_http_api import get
from .test_server import commit, run, serving
from .test_watch import NOW, STAMP, loaded_state, message, record, screen, stamp

Cli = Callable[..., Result]
Run = Callable[..., Any]


@pytest.fixture
def project_id(store: ProjectStore) -> str:
    return store.create("Billing API").project.project_id


# -- the rules: one line, exit 2 (or 3), nothing journaled ---------------------------------


@pytest.mark.parametrize(
    ("event_type", "message"),
    [
        ("ab", "event type 'ab' is not a name of 3-64 of a-z, 0-9 or '_' starting with a letter"),
        ("Tests_run", "event type 'Tests_run' is not a name of 3-64"),
        ("1tests", "event type '1tests' is not a name of 3-64"),
        ("tests-run", "event type 'tests-run' is not a name of 3-64"),
        ("t" * 65, f"event type '{'t' * 65}' is not a name of 3-64"),
        ("project_created", "event type 'project_created' is reserved"),
        ("project_updated", "event type 'project_updated' is reserved"),
        ("project_deleted", "event type 'project_deleted' is reserved"),
        ("resync", "event type 'resync' is reserved"),
        ("snapshot", "event type 'snapshot' is reserved"),
    ],
)
def test_event_type_rule(
    cli: Cli, store: ProjectStore, project_id: str, event_type: str, message: str
) -> None:
    result = cli("emit", project_id, event_type)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: " + message)
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert store.latest_seq() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "Error: data must be a JSON object, not an array\n"),
        ('"text"', "Error: data must be a JSON object, not a string\n"),
        ("null", "Error: data must be a JSON object, not null\n"),
        (
            '{"name": "other"}',
            "Error: data must not set name: the event carries the project's own\n",
        ),
        (
            '{"project_id": "proj_x", "name": "y"}',
            "Error: data must not set project_id or name: the event carries the project's own\n",
        ),
        ('{"a": 1', "Error: --data is not valid JSON ("),
        ('{"a": 1e400}', "Error: --data is not valid JSON ("),
        (
            orjson.dumps({"x": "a" * EMIT_DATA_MAX_BYTES}).decode(),
            "Error: data is 65,544 bytes as JSON; the limit is 65,536\n",
        ),
    ],
)
def test_data_rule(cli: Cli, store: ProjectStore, project_id: str, data: str, message: str) -> None:
    result = cli("emit", project_id, "tests_run", "--data", data)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert store.latest_seq() == 1


def test_data_of_exactly_the_limit_is_taken(cli: Cli, store: ProjectStore, project_id: str) -> None:
    padding = EMIT_DATA_MAX_BYTES - len(orjson.dumps({"x": ""}))
    data = orjson.dumps({"x": "a" * padding}).decode()
    assert len(data) == EMIT_DATA_MAX_BYTES
    result = cli("emit", project_id, "tests_run", "--data", data)
    assert result.exit_code == 0, result.stderr
    assert store.journal()[-1]["data"]["x"] == "a" * padding


def test_a_missing_project_exits_3(cli: Cli, store: ProjectStore) -> None:
    store.create("Billing API")
    result = cli("emit", "proj_nope", "tests_run")
    assert result.exit_code == 3
    assert result.stderr == "Error: no project with id or name 'proj_nope'\n"
    assert store.latest_seq() == 1


def test_a_broken_rule_wins_over_a_missing_project(cli: Cli) -> None:
    """Input is judged before anything is looked up: a missing project with a bad type is 2."""
    result = cli("emit", "proj_nope", "project_created")
    assert result.exit_code == 2


def test_data_file_must_be_a_regular_file(
    cli: Cli, store: ProjectStore, project_id: str, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without blocking, refused without being read
    folder = tmp_path / "folder"
    folder.mkdir()
    for given, expected in [
        (f"@{fifo}", f"Error: --data: {fifo} is not a regular file\n"),
        ("@/dev/zero", "Error: --data: /dev/zero is not a regular file\n"),
        (f"@{folder}", f"Error: --data: {folder} is not a regular file\n"),
        (f"@{tmp_path / 'missing.json'}", f"Error: --data: no file {tmp_path / 'missing.json'}\n"),
        ("@", "Error: --data @FILE: give a file name after @\n"),
    ]:
        result = cli("emit", project_id, "tests_run", "--data", given)
        assert (result.exit_code, result.stderr) == (2, expected), given
    assert store.latest_seq() == 1


def test_data_file_and_stdin_are_read_bounded(
    cli: Cli, store: ProjectStore, project_id: str, tmp_path: Path
) -> None:
    from projctl.cli.emitting import DATA_READ_LIMIT

    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (DATA_READ_LIMIT + 1) + b"{}")
    result = cli("emit", project_id, "tests_run", "--data", f"@{huge}")
    assert result.exit_code == 2
    assert result.stderr == f"Error: --data: {huge} holds more than {DATA_READ_LIMIT:,} bytes\n"
    result = CliInput(cli)(b" " * (DATA_READ_LIMIT + 1), "emit", project_id, "tests_run")
    assert result.exit_code == 2
    assert result.stderr == f"Error: --data: stdin holds more than {DATA_READ_LIMIT:,} bytes\n"
    # Pretty-printed JSON within the read bound is fine when its compact form is small.
    pretty = tmp_path / "pretty.json"
    pretty.write_text('{\n    "passed": 41,\n    "failed": 0\n}\n')
    assert cli("emit", project_id, "tests_run", "--data", f"@{pretty}").stdout == "2\n"
    assert CliInput(cli)(b'{"pages": 3}', "emit", project_id, "documentation_generated").stdout == (
        "3\n"
    )
    assert [event["data"].get("pages") for event in store.journal()] == [None, None, 3]


class CliInput:
    """Run ``projctl ... --data -`` in-process with ``stdin`` as its standard input."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli

    def __call__(self, stdin: bytes, *args: str) -> Result:
        from typer.testing import CliRunner

        from projctl.cli import app

        return CliRunner().invoke(app, [*args, "--data", "-"], input=stdin, prog_name="projctl")


def test_an_emitted_event_changes_no_project(
    cli: Cli, store: ProjectStore, project_id: str
) -> None:
    before = store.get(project_id)
    result = cli("emit", "Billing API", "project_modified", "--data", '{"commit": "9f2c1e0"}')
    assert (result.exit_code, result.stdout, result.stderr) == (0, "2\n", "")
    assert store.get(project_id) == before  # updated_at included
    assert store.list_projects() == [before]


# -- the CLI, the Python API and the store ----------------------------------------------------


def test_emit_prints_the_seq_or_the_event(cli: Cli, store: ProjectStore, project_id: str) -> None:
    assert cli("emit", project_id, "tests_run", "--data", '{"passed": 41}').stdout == "2\n"
    result = cli("emit", project_id, "documentation_generated", "--json")
    event = orjson.loads(result.stdout)
    assert event == store.journal()[-1]
    assert event["event_type"] == "documentation_generated"
    assert event["seq"] == 3
    assert event["data"] == {"project_id": project_id, "name": "Billing API"}
    assert cli("emit", project_id, "tests_run", "--quiet").stdout == ""
    assert store.journal()[1]["data"] == {
        "project_id": project_id,
        "name": "Billing API",
        "passed": 41,
    }


def test_the_seq_sequence_is_shared_with_the_lifecycle_events(store: ProjectStore) -> None:
    project = store.create("A").project
    store.emit(project.project_id, "tests_run", {"passed": 1})
    store.update(project.project_id, {"status": "in_progress"})
    (change,) = store.commit(Emit(project.project_id, "project_modified", {"files": ["a.py"]}))
    assert change.version == store.file_version()
    store.delete(project.project_id)
    assert [(e["seq"], e["event_type"]) for e in store.journal()] == [
        (1, "project_created"),
        (2, "tests_run"),
        (3, "project_updated"),
        (4, "project_modified"),
        (5, "project_deleted"),
    ]
    assert change.project.status == "in_progress"  # the project as it is, unchanged
    assert change.updated_fields == ()
    with pytest.raises(ProjectNotFoundError):
        store.emit(project.project_id, "tests_run")  # deleted: no more events about it


def test_python_api(db_path: Path) -> None:
    db = projctl.open_database(db_path, broadcast=False)
    project_id = db.create("Billing API").project.project_id
    event = db.emit("Billing API", "tests_run", {"passed": 41, "failed": 0, "duration_s": 1.5})
    assert event == db.journal()[-1]
    assert event["data"] == {
        "project_id": project_id,
        "name": "Billing API",
        "passed": 41,
        "failed": 0,
        "duration_s": 1.5,
    }
    assert db.emit(project_id, "documentation_generated")["data"] == {
        "project_id": project_id,
        "name": "Billing API",
    }
    for bad in (
        {"x": math.nan},
        {"x": {1, 2}},
        {1: "x"},
        {"x": object()},
        {"name": "x"},
        ["not", "an", "object"],
    ):
        with pytest.raises(InvalidInputError):
            db.emit(project_id, "tests_run", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="is reserved"):
        db.emit(project_id, "project_updated")
    with pytest.raises(ProjectNotFoundError):
        db.emit("nothing", "tests_run")
    assert db.latest_seq() == 3


def test_the_rules_are_one_place() -> None:
    assert events.validate_event_type("tests_run") == "tests_run"
    assert events.is_emitted_type("tests_run")
    assert not events.is_emitted_type("project_created")
    assert events.is_event_type("project_created")
    assert not events.is_event_type("resync")
    assert events.validate_emit_data({}) == {}
    assert events.validate_emit_data({"files": ("a", "b")}) == {"files": ["a", "b"]}
    assert set(events.CONVENTIONAL_EVENT_TYPES) == {
        "project_modified",
        "documentation_generated",
        "tests_generated",
        "tests_run",
    }
    assert all(events.is_emitted_type(name) for name in events.CONVENTIONAL_EVENT_TYPES)


def test_the_fold_changes_nothing_for_an_emitted_event() -> None:
    projects = {"proj_a": record("proj_a")}
    event = emitted(record("proj_a"), "tests_run", {"passed": 1}, seq=2, timestamp=STAMP)
    assert events.apply(projects, event) == record("proj_a")
    assert projects == {"proj_a": record("proj_a")}
    assert events.apply(projects, {**event, "data": {"project_id": "proj_x"}}) is None
    assert projects == {"proj_a": record("proj_a")}


# -- forward or start a server, replay, filters, /api/events ----------------------------------


@pytest.mark.usefixtures("broadcasting")
def test_emit_starts_a_server_when_none_runs_and_forwards_to_one_that_does(
    projctl: Run, store: ProjectStore, project_id: str
) -> None:
    paths = runtime.runtime_paths(store.path)
    assert runtime.read_server_state(paths) is None
    started = projctl("emit", project_id, "tests_run", "--data", '{"passed": 3}')
    assert (started.returncode, started.stdout, started.stderr) == (0, "2\n", "")
    state = server_up(store.path)  # the emit started it (in the background), as create does
    forwarded = projctl("emit", project_id, "documentation_generated", "--data", '{"pages": 2}')
    assert (forwarded.returncode, forwarded.stdout, forwarded.stderr) == (0, "3\n", "")
    assert runtime.read_server_state(paths) == state  # the same server took the forward
    status = projctl("server", "status", "--json")
    assert orjson.loads(status.stdout)["latest_seq"] == 3
    # Both reach a subscriber replaying the journal, through that server, filtered by type.
    watched = projctl(
        "watch",
        "--json",
        "--since",
        "0",
        "--event",
        "documentation_generated",
        "--event",
        "tests_run",
        "--count",
        "2",
        "--timeout",
        "20",
    )
    assert watched.returncode == 0, watched.stderr
    lines = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert lines == store.journal()[1:]


@pytest.mark.usefixtures("broadcasting")
def test_watch_waits_for_an_emitted_event_live(
    projctl: Run, store: ProjectStore, project_id: str
) -> None:
    import subprocess

    from .conftest import PROJCTL, wait_until

    watch = subprocess.Popen(
        [PROJCTL, "watch", "--json", "--event", "tests_run", "--count", "1", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        paths = runtime.runtime_paths(store.path)
        wait_until(lambda: runtime.read_server_state(paths) is not None, 20, "the server")
        state = runtime.read_server_state(paths)
        assert state is not None
        wait_until(
            lambda: (runtime.server_status(paths, store.database_id()) or {}).get("subscribers"),
            20,
            "watch to subscribe",
        )
        projctl("update", project_id, "--status", "in_progress")  # filtered out
        assert projctl("emit", project_id, "tests_run", "--data", '{"failed": 1}').returncode == 0
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
        watch.wait(10)
    assert watch.returncode == 0, err
    (line,) = out.splitlines()
    assert orjson.loads(line) == store.journal()[-1]


def test_watch_event_takes_emitted_types_and_refuses_others(cli: Cli) -> None:
    for name in ("Bad-Name", "resync", "x"):
        result = cli("watch", "--json", "--event", name, "--timeout", "1")
        assert result.exit_code == 2, name
        assert result.stderr == (
            f"Error: --event {name!r} is not an event type: project_created, project_updated, "
            "project_deleted, or an emitted one (3-64 of a-z, 0-9 or '_', starting with a "
            "letter)\n"
        )


def test_the_server_broadcasts_replays_and_lists_emitted_events(store: ProjectStore) -> None:
    from websockets.asyncio.client import connect

    from .test_server import receive, ws_url

    async def scenario() -> None:
        async with serving(store) as server:
            async with connect(ws_url(server)) as ws:
                created = await commit(store, lambda: store.create("Alpha"))
                project = created["data"]["project_id"]
                ran = await commit(store, lambda: store.emit(project, "tests_run", {"passed": 2}))
                assert await receive(ws) == created
                assert await receive(ws) == ran
            # A commit nobody forwarded is read back from the journal and sent too.
            await asyncio.to_thread(store.emit, project, "documentation_generated", {"pages": 1})
            async with connect(ws_url(server, "?since=1")) as ws:
                assert await receive(ws) == ran
                assert (await receive(ws))["event_type"] == "documentation_generated"
            status, _, body = await get(server.port, "/api/events?since=0")
            assert status == 200
            assert body["events"] == store.journal()
            assert [e["event_type"] for e in body["events"]] == [
                "project_created",
                "tests_run",
                "documentation_generated",
            ]

    run(scenario())


def test_a_resync_past_the_window_is_not_broken_by_emitted_events(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from .conftest import OwnedStore
    from .test_server import receive, ws_url

    store = OwnedStore(tmp_path / "small.json", journal_limit=2)
    project = store.create("Alpha").project.project_id
    for number in range(3):
        store.emit(project, "tests_run", {"run": number})

    async def scenario() -> None:
        async with (
            serving(store, journal_window=2) as server,
            connect(ws_url(server, "?since=0")) as ws,
        ):
            resync = await receive(ws)
            assert resync["event_type"] == "resync"
            assert [p["project_id"] for p in resync["data"]["projects"]] == [project]
            assert resync["seq"] == 4

    run(scenario())


# -- watch: the table, the feed, the filters --------------------------------------------------


def test_watch_shows_an_emitted_event_as_the_last_change() -> None:
    state = loaded_state()
    event = emitted(
        record("proj_a"),
        "tests_run",
        {"passed": 41, "failed": 0, "files": ["a", "b"]},
        seq=8,
        timestamp=stamp(NOW + 1),
    )
    state.apply(message(event), NOW + 1)
    assert state.projects["proj_a"] == record("proj_a")  # no field changed
    text = screen(state, NOW + 4)
    row = next(line for line in text.splitlines() if line.startswith("proj_a "))
    assert "tests_run passed=41 failed=0 files=[2 items] · 3s" in row
    assert text.index("proj_a") < text.index("proj_b")  # the newest change on top
    assert "tests_run  proj_a  name of proj_a passed=41 failed=0 files=[2 items]" in text
    assert "2 projects · 1 event seen · last seq 8" in text


def test_watch_abbreviates_an_emitted_events_label_on_a_narrow_terminal() -> None:
    state = loaded_state()
    event = emitted(
        record("proj_a"), "documentation_generated", {"pages": 12}, seq=8, timestamp=STAMP
    )
    state.apply(message(event), NOW)
    wide = screen(state, NOW, width=120)
    assert "documentation_generated pages=12 · now" in wide
    narrow = screen(state, NOW, width=56)
    assert "pages=12" not in narrow.split("Recent events")[0]


def test_a_message_without_a_seq_is_no_emitted_event() -> None:
    """Any name may be an emitted event's type; without a seq a message is another kind (one a
    later server may add), and watch passes it by."""
    state = loaded_state()
    state.apply(message({"event_type": "hello", "data": {"project_id": "proj_a"}}), NOW)
    assert (state.events_seen, len(state.feed)) == (0, 0)
    assert not events.is_event({"event_type": "hello"})
    assert events.is_event({"event_type": "hello", "seq": 3})
    assert events.is_event({"event_type": "project_created"})
    assert not events.is_event({"event_type": "resync", "seq": 3})


def test_filters_judge_an_emitted_event_by_the_project() -> None:
    on_hold = record("proj_b", status="on_hold")
    event = emitted(on_hold, "tests_run", {}, seq=2, timestamp=STAMP)
    assert EventFilter(event_types=frozenset({"tests_run"})).matches(event, on_hold)
    assert not EventFilter(event_types=frozenset({"project_updated"})).matches(event, on_hold)
    assert EventFilter(statuses=frozenset({"on_hold"})).matches(event, on_hold)
    assert not EventFilter(statuses=frozenset({"created"})).matches(event, on_hold)
    assert not EventFilter(owners=frozenset({"bob"})).matches(event, on_hold)
    state = WatchState(event_filter=EventFilter(event_types=frozenset({"tests_run"})), count=1)
    state.apply(message({"event_type": "snapshot", "seq": 1, "data": {"projects": [on_hold]}}), NOW)
    state.apply(message(project_created(record("proj_c"), seq=2, timestamp=STAMP)), NOW)
    assert not state.done
    state.apply(message({**event, "seq": 3}), NOW)
    assert state.done


def test_data_summary() -> None:
    assert data_summary({"project_id": "p", "name": "n", "passed": 1, "ok": True}) == (
        "passed=1 ok=true"
    )
    assert data_summary({"files": ["a"], "meta": {"x": 1}, "note": "two\nlines"}) == (
        "files=[1 item] meta={...} note=two lines"
    )
    assert data_summary({"long": "x" * 100}, width=20) == "long=xxxxxxxxxxxx..."
    assert data_summary({}) == ""


# -- clients written for the contract ---------------------------------------------------------


def contract_client(frames: list[str]) -> dict[str, Any]:
    """The contract's browser client (shared/spec/events.md), its switch in Python: what it
    does with each frame, and nothing for any other type."""
    ui: dict[str, Any] = {"projects": {}, "seen": []}
    for frame in frames:
        message = orjson.loads(frame)
        event_type = message["event_type"]
        if event_type == "project_created":
            ui["projects"][message["data"]["project_id"]] = message["data"]
        elif event_type == "project_updated":
            ui["projects"][message["data"]["project_id"]] = message["data"]
            assert isinstance(message["data"]["updated_fields"], list)
        elif event_type == "project_deleted":
            del ui["projects"][message["data"]["project_id"]]
        else:
            continue
        ui["seen"].append(event_type)
    return ui


def test_a_client_that_knows_only_the_lifecycle_events_is_unaffected(store: ProjectStore) -> None:
    """Over a feed recorded from a real server, emitted events among the lifecycle ones: the
    contract's client sees exactly the lifecycle events, and ends where it would without them."""
    from websockets.asyncio.client import connect

    from .test_server import ws_url

    async def record_feed() -> list[str]:
        async with serving(store) as server, connect(ws_url(server, "?since=0")) as ws:
            frames = []
            while len(frames) < store.latest_seq():
                frames.append(str(await asyncio.wait_for(ws.recv(), 5)))
            return frames

    alpha = store.create("Alpha").project.project_id
    store.emit(alpha, "tests_run", {"passed": 1, "failed": 0})
    beta = store.create("Beta").project.project_id
    store.update(alpha, {"status": "in_progress"})
    store.emit(beta, "documentation_generated", {"path": "site/", "pages": 3})
    store.emit(alpha, "project_modified", {"files": ["a.py"], "commit": "abc"})
    store.delete(beta)
    store.emit(alpha, "something_else_entirely", {"nested": {"deep": [1, {"x": None}]}})
    frames: list[str] = []

    async def scenario() -> None:
        frames.extend(await record_feed())

    run(scenario())
    assert len(frames) == 8
    ui = contract_client(frames)
    assert ui["seen"] == [
        "project_created",
        "project_created",
        "project_updated",
        "project_deleted",
    ]
    lifecycle = [f for f in frames if orjson.loads(f)["event_type"] in events.EVENT_TYPES]
    assert ui == contract_client(lifecycle)
    assert ui["projects"] == {alpha: {**store.get(alpha).to_dict(), "updated_fields": ["status"]}}
