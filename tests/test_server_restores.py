"""The server following a database another program rewrites: half-way reads and restores.

Once the server knows the database, an empty read is transient (logged and retried, never
a new, empty registry), ``seq`` never moves backwards, and an older copy put back makes
every subscriber start over with a ``resync`` instead of silently reusing seqs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from projctl import rpc, runtime
from projctl.runtime import runtime_paths
from projctl.server import BroadcastServer
from projctl.store import Change, ProjectStore

from .conftest import until
from .test_server import receive, run, serving, ws_url


def _forward(store: ProjectStore, change: Change) -> None:
    """Forward a committed change the way a command does, restore note included."""
    state = runtime.read_server_state(runtime_paths(store.path))
    assert state is not None
    rpc.request(
        state.socket,
        rpc.OP_FORWARD,
        event=change.event,
        version=change.version,
        database_id=change.database_id,
        restore=change.restore,
    )


async def _create(store: ProjectStore, name: str) -> Change:
    def work() -> Change:
        change = store.create(name)
        _forward(store, change)
        return change

    return await asyncio.to_thread(work)


async def _nothing_more(ws: ClientConnection, within: float = 0.8) -> None:
    with contextlib.suppress(TimeoutError):
        message = await asyncio.wait_for(ws.recv(), within)
        raise AssertionError(f"unexpected message: {message!r}")


def _api_projects(server: BroadcastServer) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/api/projects", headers={"Host": f"127.0.0.1:{server.port}"})
        response = connection.getresponse()
        assert response.status == 200
        return orjson.loads(response.read())  # type: ignore[no-any-return]
    finally:
        connection.close()


def test_a_database_rewritten_in_place_is_never_shown_empty(
    store: ProjectStore, db_path: Path
) -> None:
    for number in range(30):
        store.create(f"p{number}")
    original = db_path.read_bytes()

    async def scenario() -> None:
        async with (
            serving(store) as server,
            connect(ws_url(server, "?since=0")) as since,
            connect(ws_url(server, "?snapshot=1")) as snapshot,
        ):
            assert [(await receive(since))["seq"] for _ in range(30)] == list(range(1, 31))
            opening = await receive(snapshot)
            assert (opening["event_type"], opening["seq"]) == ("snapshot", 30)
            await until(lambda: len(server.feed.subscribers) == 2)
            with db_path.open("r+b") as rewriting:
                rewriting.truncate()  # `cp backup.json db.json` has begun
                await until(lambda: server.watcher.read_failures >= 1)
                answered: list[dict[str, Any]] = []
                api = threading.Thread(target=lambda: answered.append(_api_projects(server)))
                api.start()
                await asyncio.sleep(0.3)  # the API read waits while the file is empty
                rewriting.write(original)
            await asyncio.to_thread(api.join, 15)
            assert [(body["seq"], len(body["projects"])) for body in answered] == [(30, 30)]
            assert server.last_seq == 30
            await _nothing_more(since)  # no resync, no seq 1..30 a second time
            await _nothing_more(snapshot, within=0.1)
            after = await _create(store, "after")
            assert after.event is not None
            assert await receive(since) == after.event
            assert await receive(snapshot) == after.event

    run(scenario())


@pytest.mark.parametrize("noticed_by", ["the server first", "a writer first"])
def test_a_restored_older_copy_makes_everyone_start_over(
    store: ProjectStore, db_path: Path, tmp_path: Path, noticed_by: str
) -> None:
    for number in range(5):
        store.create(f"p{number}")
    older = tmp_path / "older.json"
    shutil.copyfile(db_path, older)
    for number in range(5, 10):
        store.create(f"p{number}")

    async def scenario() -> None:
        # For "a writer first", the server does not look at the file by itself meanwhile.
        polling = {"poll_interval": 60.0} if noticed_by == "a writer first" else {}
        async with (
            serving(store, **polling) as server,
            connect(ws_url(server, "?since=10")) as live,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            restoring = db_path.with_name("restoring.json")
            shutil.copyfile(older, restoring)
            restoring.replace(db_path)  # the proper way: one atomic rename
            if noticed_by == "the server first":
                resync = await receive(live)
                assert (resync["event_type"], resync["seq"]) == ("resync", 10)
                assert len(resync["data"]["projects"]) == 5
            creates = [await _create(store, f"after{number}") for number in range(6)]
            seqs = [change.event["seq"] for change in creates if change.event]
            assert seqs == list(range(11, 17))
            received = [
                await receive(live) for _ in range(6 if noticed_by != "a writer first" else 1)
            ]
            if noticed_by == "a writer first":
                # The first create found the restore: a resync from the journal, which
                # holds the first new event already; the rest follow one by one.
                assert received[0]["event_type"] == "resync"
                assert received[0]["seq"] >= 11
                resync_seq = received[0]["seq"]
                received = [await receive(live) for _ in range(16 - resync_seq)]
                assert [message["seq"] for message in received] == list(range(resync_seq + 1, 17))
            else:
                assert [message["seq"] for message in received] == list(range(11, 17))
            # A subscriber resuming from a seq the restore lost starts over too.
            async with connect(ws_url(server, "?since=10")) as resumed:
                opening = await receive(resumed)
                assert (opening["event_type"], opening["seq"]) == ("resync", 16)
                names = sorted(project["name"] for project in opening["data"]["projects"])
                assert names == sorted(
                    [f"p{n}" for n in range(5)] + [f"after{n}" for n in range(6)]
                )
            async with connect(ws_url(server, "?since=5")) as consistent:
                assert [(await receive(consistent))["seq"] for _ in range(6)] == list(range(11, 17))

    run(scenario())


def test_a_database_file_gone_for_a_while_is_logged_once(
    store: ProjectStore, db_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.create("kept")
    aside = tmp_path / "aside.json"

    reads = 0
    read_state = store.read_state

    def counted_read() -> Any:
        nonlocal reads
        reads += 1
        return read_state()

    async def scenario() -> None:
        async with serving(store, poll_interval=0.02, gap_grace=0.02) as server:
            store.read_state = counted_read  # type: ignore[method-assign]
            db_path.rename(aside)  # `rm db.json; cp backup.json db.json` has begun
            before = server.watcher.failures
            # Many rounds see no file: the server waits, it does not take it for a new one.
            await until(lambda: reads >= 5)
            assert server.last_seq == 1
            assert server.watcher.failures == before
            aside.rename(db_path)

    with caplog.at_level("INFO", logger="projctl.server"):
        run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("the database file is gone; waiting for it to come back") == 1
    assert not any("readable again" in message for message in messages)
