"""One contract, every storage: the same tests run against each :class:`projctl.backend.Backend`
through the one facade, :class:`projctl.Database` (as tinydb's storage fixtures do).

Backends: the TinyDB file on this machine, a team server (an in-process server on
127.0.0.1, port 0, with a write token, over its own TinyDB file), and a NATS JetStream
stream on a real three-node cluster on loopback. The first two run with a server to follow,
the stream is followed directly, so "resume from a seq" and "resync past the window" are
checked on the feed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import projctl
from projctl.backend import Backend, Follower
from projctl.config import load_settings
from projctl.errors import InvalidInputError, NameTakenError, ProjectNotFoundError
from projctl.runtime import runtime_paths
from projctl.server import BroadcastServer, ServerConfig
from projctl.store import ProjectStore

from .conftest import nats_database, wait_until

#: A small journal, so that the window is passed in a few changes.
LIMIT = 3
OWNER = "contract-owner"
BACKENDS = ["tinydb", "team-server", "jetstream"]


@dataclasses.dataclass
class Running:
    url: str
    stop: asyncio.Event
    loop: asyncio.AbstractEventLoop


@contextlib.contextmanager
def server_thread(store: ProjectStore, **config: Any) -> Iterator[str]:
    """A broadcast server for ``store`` on its own event loop in a thread; its base URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        settings = {"host": "127.0.0.1", "port": 0, "journal_window": LIMIT, **config}
        server = BroadcastServer(
            store, runtime_paths(store.path, for_a_server=True), ServerConfig(**settings)
        )
        try:
            await server.start()
        except BaseException as error:
            box["error"] = error
            ready.set()
            raise
        box["running"] = Running(
            f"ws://127.0.0.1:{server.port}", asyncio.Event(), asyncio.get_running_loop()
        )
        ready.set()
        try:
            await box["running"].stop.wait()
        finally:
            await server.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start within 30 s"
    assert "error" not in box, box.get("error")
    running: Running = box["running"]
    try:
        yield running.url
    finally:
        running.loop.call_soon_threadsafe(running.stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop within 30 s"


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[projctl.Database]:
    """A database through the facade, over each backend, with a server to follow it."""
    if request.param == "tinydb":
        db = tmp_path / "projects.json"
        settings = load_settings(
            environ={
                "PROJCTL_DB": str(db),
                "PROJCTL_JOURNAL_LIMIT": str(LIMIT),
                "PROJCTL_OWNER": OWNER,
                "PROJCTL_NO_BROADCAST": "1",  # the server follows the file by itself
            }
        )
        with server_thread(ProjectStore(db, journal_limit=LIMIT)):
            yield projctl.Database(settings)
    elif request.param == "jetstream":
        cluster = request.getfixturevalue("nats_cluster")
        settings = load_settings(
            environ={
                "PROJCTL_DB": nats_database(cluster),
                "PROJCTL_JOURNAL_LIMIT": str(LIMIT),
                "PROJCTL_OWNER": OWNER,
            }
        )
        yield projctl.Database(settings)
    else:
        token = secrets.token_urlsafe(24)
        store = ProjectStore(tmp_path / "team.json", journal_limit=LIMIT)
        with server_thread(store, write_tokens=frozenset({token})) as url:
            settings = load_settings(
                environ={
                    "PROJCTL_URL": url,
                    "PROJCTL_TOKEN": token,
                    "PROJCTL_OWNER": OWNER,
                    "PROJCTL_DB": str(tmp_path / "unused.json"),
                }
            )
            yield projctl.Database(settings)
        assert not (tmp_path / "unused.json").exists()


def follow(database: projctl.Database, since: int, count: int) -> list[dict[str, Any]]:
    """The first ``count`` messages of the feed from ``since``, within 20 s."""

    async def take() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        feed = database.subscribe(since=since, start_server=False)
        async with contextlib.aclosing(feed):
            async for message in feed:
                messages.append(message)
                if len(messages) == count:
                    break
        return messages

    return asyncio.run(asyncio.wait_for(take(), 20))


def caught_up(database: projctl.Database) -> None:
    """Wait until the feed's server has every committed event (a server following a file
    sees a commit at its next look)."""
    if isinstance(database.backend, Follower):
        return  # followed from the storage itself: nothing to catch up
    latest = database.latest_seq()
    wait_until(
        lambda: database.locate_server(start=False).latest_seq in (None, latest),
        what=f"the server to reach seq {latest}",
    )


def test_the_backend_is_a_backend(database: projctl.Database) -> None:
    assert isinstance(database.backend, Backend)
    assert database.latest_seq() == 0
    assert database.journal() == []
    assert database.list() == []


def test_create(database: projctl.Database) -> None:
    change = database.create("Billing API", type="ci", description="two\nlines")
    project = change.project
    assert (project.name, project.type, project.status) == ("Billing API", "ci", "created")
    assert (project.owner_id, project.description) == (OWNER, "two\nlines")
    assert change.updated_fields == ()
    assert change.event is not None
    assert change.event["event_type"] == "project_created"
    assert change.event["seq"] == 1
    assert change.event["data"] == project.to_dict()
    assert database.get(project.project_id) == project
    assert database.list() == [project]
    assert database.resolve("Billing API") == project.project_id
    assert database.journal() == [change.event]
    assert database.latest_seq() == 1
    assert database.database_id() != ""
    with pytest.raises(InvalidInputError):
        database.create("   ")
    assert database.latest_seq() == 1


def test_emit_journals_an_event_and_changes_no_project(database: projctl.Database) -> None:
    project = database.create("Billing API").project
    event = database.emit("Billing API", "tests_run", {"passed": 41, "failed": 0})
    assert event["event_type"] == "tests_run"
    assert event["seq"] == 2
    assert event["data"] == {
        "project_id": project.project_id,
        "name": "Billing API",
        "passed": 41,
        "failed": 0,
    }
    assert database.get(project.project_id) == project
    assert database.journal(after=1) == [event]
    caught_up(database)
    assert follow(database, since=1, count=1) == [event]
    with pytest.raises(ProjectNotFoundError):
        database.emit("proj_nope", "tests_run")
    with pytest.raises(InvalidInputError):
        database.emit(project.project_id, "project_deleted")
    assert database.latest_seq() == 2


def test_update_reports_the_fields_that_changed(database: projctl.Database) -> None:
    project_id = database.create("Old", owner_id="ann").project.project_id
    change = database.update(project_id, status="in_progress", name="New", owner_id="ann")
    assert change.updated_fields == ("name", "status")  # the contract's order; owner_id is equal
    assert change.event is not None
    assert change.event["event_type"] == "project_updated"
    assert change.event["data"]["updated_fields"] == ["name", "status"]
    assert change.event["seq"] == 2
    assert database.get(project_id) == change.project
    unchanged = database.update(project_id, name="New")
    assert (unchanged.event, unchanged.updated_fields) == (None, ())
    assert database.latest_seq() == 2
    with pytest.raises(ProjectNotFoundError):
        database.update("proj_20000101_000000", name="x")


def test_a_shared_name_is_reported_or_refused_by_the_commit(database: projctl.Database) -> None:
    # A stream has no index of names: it looks them up only to refuse one (unique).
    reported = database.settings.nats is None
    first = database.create("Billing").project.project_id
    second = database.create(" Billing ")
    assert second.project.name == "Billing"  # stored trimmed, as every backend validates
    assert second.same_name == ((first,) if reported else ())
    with pytest.raises(NameTakenError, match=f"another project is named 'Billing' \\({first}, "):
        database.create("Billing", unique=True)
    other = database.create("Other").project.project_id
    with pytest.raises(NameTakenError):
        database.update(other, name="Billing", unique=True)
    assert database.get(other).name == "Other"
    renamed = database.update(other, name="Billing")
    assert renamed.same_name == ((first, second.project.project_id) if reported else ())
    assert database.update(first, name="Billing", unique=True).event is None  # no rename
    assert database.latest_seq() == 4


def test_delete_several_is_all_or_nothing(database: projctl.Database) -> None:
    first = database.create("A").project
    second = database.create("B").project
    ghost = "proj_20000101_000000"
    with pytest.raises(ProjectNotFoundError):
        database.delete_many([first.project_id, ghost, second.project_id])
    assert database.list() == [first, second]
    assert database.latest_seq() == 2
    changes = database.delete_many([second.project_id, ghost, first.project_id], missing_ok=True)
    assert [change.project for change in changes] == [second, first]
    assert [change.event["seq"] for change in changes if change.event] == [3, 4]
    assert [change.event["data"] for change in changes if change.event] == [
        {"project_id": second.project_id, "name": "B"},
        {"project_id": first.project_id, "name": "A"},
    ]
    assert database.list() == []


def test_the_journal_is_in_commit_order(database: projctl.Database) -> None:
    project_id = database.create("A").project.project_id
    database.update(project_id, status="on_hold")
    database.delete(project_id)
    journal = database.journal()
    assert [(event["seq"], event["event_type"]) for event in journal] == [
        (1, "project_created"),
        (2, "project_updated"),
        (3, "project_deleted"),
    ]
    assert database.latest_seq() == 3


def test_resume_from_a_seq(database: projctl.Database) -> None:
    project_id = database.create("A").project.project_id
    database.update(project_id, status="in_progress")
    database.update(project_id, status="completed")
    assert [event["seq"] for event in database.journal(1)] == [2, 3]
    assert database.journal(3) == []
    caught_up(database)
    messages = follow(database, since=1, count=2)
    assert messages == database.journal(1)


def test_resync_past_the_window(database: projctl.Database) -> None:
    kept = database.create("kept").project
    for number in range(LIMIT + 1):
        database.update(kept.project_id, description=str(number))
    latest = LIMIT + 2
    assert database.latest_seq() == latest
    journal = database.journal()
    assert [event["seq"] for event in journal] == list(range(latest - LIMIT + 1, latest + 1))
    # Events after seq 1 are gone: the journal shows the gap, and the feed sends a resync.
    assert database.journal(1)[0]["seq"] > 2
    caught_up(database)
    (resync,) = follow(database, since=1, count=1)
    assert resync["event_type"] == "resync"
    assert resync["seq"] == latest
    assert resync["data"]["projects"] == [project.to_dict() for project in database.list()]


def test_a_write_retried_under_its_key_is_applied_once(database: projctl.Database) -> None:
    first = database.create("Once", idempotency_key="ci-42-create")
    again = database.create("Once", idempotency_key="ci-42-create")
    assert again.replayed
    assert not first.replayed
    assert again.project == first.project
    assert again.event == first.event
    assert [p.name for p in database.list()] == ["Once"]
    assert database.latest_seq() == 1
    project_id = first.project.project_id
    update = database.update(project_id, status="completed", idempotency_key="ci-42-update")
    database.update(project_id, status="on_hold")
    replay = database.update(project_id, status="completed", idempotency_key="ci-42-update")
    # The first answer comes back, as it was: the project is on hold now.
    assert replay.replayed
    assert (replay.project, replay.updated_fields) == (update.project, ("status",))
    assert database.get(project_id).status == "on_hold"
    assert database.latest_seq() == 3


def test_a_key_used_for_another_write_is_refused(database: projctl.Database) -> None:
    from projctl.errors import IdempotencyKeyReusedError

    database.create("First", idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReusedError, match="'k1'"):
        database.create("Second", idempotency_key="k1")
    assert [p.name for p in database.list()] == ["First"]


def test_a_change_on_a_stale_version_is_refused(database: projctl.Database) -> None:
    from projctl.errors import PreconditionFailedError

    seen = database.create("Tagged").project
    current = database.update(seen.project_id, status="in_progress").project
    assert current.version_tag != seen.version_tag
    with pytest.raises(PreconditionFailedError):
        database.update(seen.project_id, if_match=seen.version_tag, status="completed")
    with pytest.raises(PreconditionFailedError):
        database.delete(seen.project_id, if_match=seen.version_tag)
    assert database.get(seen.project_id) == current
    assert database.latest_seq() == 2
    done = database.update(seen.project_id, if_match=current.version_tag, status="completed")
    assert done.project.status == "completed"
    database.delete(seen.project_id, if_match=done.project.version_tag)
    assert database.list() == []
