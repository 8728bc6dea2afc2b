"""The public Python API: the operations the CLI runs, broadcasting included, and the feed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import projctl
from projctl.errors import ServerError
from projctl.events import Event
from projctl.runtime import runtime_paths

from .conftest import until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "api.py"


@pytest.fixture
def db(db_path: Path) -> projctl.Database:
    return projctl.open_database(db_path, broadcast=False)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_changes_return_one_change_object(db: projctl.Database) -> None:
    created = db.create("Alpha", type="web", owner_id="ann", description="d")
    assert created.event is not None
    assert created.event["event_type"] == "project_created"
    assert created.event["data"] == created.project.to_dict()
    assert created.updated_fields == ()
    assert created.version is not None
    project_id = created.project.project_id

    updated = db.update(project_id, status="completed", name="Alpha")
    assert updated.updated_fields == ("status",)
    assert updated.project.status == "completed"
    assert updated.event is not None
    assert updated.event["data"]["updated_fields"] == ["status"]

    unchanged = db.update(project_id, status="completed")
    assert (unchanged.event, unchanged.updated_fields) == (None, ())

    deleted = db.delete(project_id)
    assert deleted.project == updated.project
    assert deleted.event is not None
    assert deleted.event["data"] == {"project_id": project_id, "name": "Alpha"}
    assert db.journal() == [created.event, updated.event, deleted.event]
    assert db.latest_seq() == 3
    with pytest.raises(projctl.ProjectNotFoundError):
        db.get(project_id)


def test_reads_and_filters(db: projctl.Database) -> None:
    a = db.create("a", status="in_progress", owner_id="ann").project
    db.create("b", owner_id="bob")
    assert [p.name for p in db.list()] == ["a", "b"]
    assert db.list(status="in_progress", owner_id="ann") == [a]
    assert db.get(a.project_id) == a


def test_bad_input_raises_and_writes_nothing(db: projctl.Database) -> None:
    with pytest.raises(projctl.InvalidInputError, match="status 'done' is not one of"):
        db.create("x", status="done")
    with pytest.raises(projctl.InvalidInputError, match="unknown project field"):
        db.update("proj_x", colour="red")
    assert not db.path.exists()


def test_default_owner(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJCTL_OWNER", "  ci-bot ")
    assert projctl.open_database(db_path, broadcast=False).create("x").project.owner_id == "ci-bot"
    monkeypatch.setenv("PROJCTL_OWNER", "   ")
    with pytest.raises(projctl.ConfigError, match=r"^PROJCTL_OWNER: owner must not be empty$"):
        projctl.open_database(db_path, broadcast=False).create("y")
    monkeypatch.delenv("PROJCTL_OWNER")
    monkeypatch.setenv("LOGNAME", "dana")
    assert projctl.open_database(db_path, broadcast=False).create("z").project.owner_id == "dana"


def test_bad_setting_is_refused_when_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJCTL_PORT", "eighty")
    with pytest.raises(projctl.ConfigError, match=r"^PROJCTL_PORT='eighty' is not accepted"):
        projctl.open_database()


def test_no_broadcast_contacts_and_creates_nothing(db: projctl.Database) -> None:
    db.create("quiet")
    assert not runtime_paths(db.path).state_file.exists()


async def _next(feed: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(feed), 10)


def test_changes_are_broadcast_to_an_in_process_server(db_path: Path) -> None:
    """create/update/delete forward exactly as the CLI does; subscribe follows with resume."""
    writer = projctl.open_database(db_path)

    async def scenario() -> None:
        async with writer.serving(host="127.0.0.1", port=0) as server:
            feed = writer.subscribe(start_server=False)
            subscribed = asyncio.ensure_future(_next(feed))
            await until(lambda: len(server.feed.subscribers) == 1)
            created = await asyncio.to_thread(writer.create, "Live")
            assert await subscribed == created.event
            project_id = created.project.project_id
            updated = await asyncio.to_thread(writer.update, project_id, status="on_hold")
            assert await _next(feed) == updated.event
            await feed.aclose()
            # A new subscriber resumes after any seq, from the journal.
            deleted = await asyncio.to_thread(writer.delete, project_id)
            resumed = writer.subscribe(since=1, start_server=False)
            assert [await _next(resumed), await _next(resumed)] == [updated.event, deleted.event]
            await resumed.aclose()
            snapshot = writer.subscribe(snapshot=True, start_server=False)
            first = await _next(snapshot)
            assert (first["event_type"], first["seq"], first["data"]) == (
                "snapshot",
                3,
                {"projects": []},
            )
            await snapshot.aclose()

    run(scenario())


def test_a_failed_broadcast_is_reported_not_raised(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server reachable from other machines is never started as a side effect.
    monkeypatch.setenv("PROJCTL_HOST", "0.0.0.0")
    failures: list[tuple[Event, ServerError]] = []
    db = projctl.open_database(
        db_path, broadcast=True, on_broadcast_error=lambda e, err: failures.append((e, err))
    )
    change = db.create("committed anyway")
    assert db.get(change.project.project_id) == change.project
    assert [(event, str(error)) for event, error in failures] == [
        (change.event, "no server is running for this database")
    ]


def test_public_names_resolve() -> None:
    for name in projctl.__all__:
        assert getattr(projctl, name) is not None, name
    assert projctl.Change.__name__ == "Change"
    with pytest.raises(AttributeError):
        _ = projctl.nothing_here  # type: ignore[attr-defined]


def test_import_projctl_is_light() -> None:
    """``import projctl`` (every CLI start) loads no storage, network or asyncio code."""
    probe = (
        "import sys, projctl; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'tinydb', 'websockets', 'asyncio', 'rich', 'orjson'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.usefixtures("broadcasting")
def test_example_script_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "example" / "projects.json")],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    project_id = lines[0].split()[1]
    assert lines == [
        f"created {project_id} (event seq 1)",
        "updated status, description",
        f"in progress: {project_id} Billing API (owner alice)",
        "as expected: no project with id or name 'proj_19700101_000000'",
        f"#1 project_created {project_id} Billing API",
        f"#2 project_updated {project_id} Billing API",
        f"#3 project_deleted {project_id} Billing API",
        "server stopped",
    ]
    assert done.stderr == ""
