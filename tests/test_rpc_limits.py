"""The team protocol's limits, in-process: pipelining on ``/rpc``, the memory a token holder
can take (the answers kept for retries, concurrent reads), and failures of our own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from projctl import remote
from projctl.cli._lazy import exit_code_for
from projctl.errors import ServerError
from projctl.runtime import runtime_paths
from projctl.server import BroadcastServer, ServerConfig
from projctl.server import writes as server_writes
from projctl.store import ProjectStore, StoreState

from .conftest import until

READ_TOKEN = secrets.token_urlsafe(24)
WRITE_TOKEN = secrets.token_urlsafe(24)
REPLY_TIMEOUT = 20.0


def run(coroutine: Coroutine[Any, Any, None], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(coroutine, timeout))


@contextlib.asynccontextmanager
async def serving(store: ProjectStore, **overrides: Any) -> AsyncIterator[BroadcastServer]:
    """A team server on 127.0.0.1, a free port, with one read and one write token."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "read_tokens": frozenset({READ_TOKEN}),
        "write_tokens": frozenset({WRITE_TOKEN}),
        **overrides,
    }
    server = BroadcastServer(
        store, runtime_paths(store.path, for_a_server=True), ServerConfig(**settings)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def rpc(server: BroadcastServer, token: str = WRITE_TOKEN) -> connect:
    return connect(
        f"ws://127.0.0.1:{server.port}{remote.RPC_PATH}",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
        max_size=None,
        ping_interval=None,
    )


def request(request_id: str, op: str, **args: Any) -> str:
    return orjson.dumps({"id": request_id, "op": op, "args": args}).decode()


async def reply_to(ws: ClientConnection, message: str) -> bytes:
    await ws.send(message)
    reply = await asyncio.wait_for(ws.recv(decode=False), REPLY_TIMEOUT)
    assert isinstance(reply, bytes)
    return reply


# -- pipelining ------------------------------------------------------------------------------


def test_pipelined_requests_get_one_reply_each_and_the_connection_stays_open(
    store: ProjectStore,
) -> None:
    """2,000 updates sent without waiting, with a short keepalive: every request gets exactly
    one reply, ``ok`` (in request order) or ``busy``; pings are answered meanwhile, so the server
    never closes the connection; and each ``ok`` is one change in the journal, each
    ``busy`` none."""
    project_id = store.create("Pipelined", owner_id="ann").project.project_id
    seq_before = store.latest_seq()
    count = 2000
    ids = [f"u{number}" for number in range(count)]
    messages = [
        request(request_id, "update", project=project_id, changes={"description": request_id})
        for request_id in ids
    ]
    replies: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with serving(store, ping_interval=0.5) as server, rpc(server) as ws:

            async def send_all() -> None:
                for message in messages:
                    await ws.send(message)

            sending = asyncio.ensure_future(send_all())
            try:
                while len(replies) < count:
                    replies.append(orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)))
            finally:
                await asyncio.wait_for(sending, REPLY_TIMEOUT)
            # Still open and answering, and its keepalive pings are answered.
            info = orjson.loads(await reply_to(ws, request("after", "info")))
            assert info["ok"] is True, info
            assert ws.state is State.OPEN
            assert server._ws_server is not None
            (connection,) = server._ws_server.connections
            await until(lambda: connection.latency > 0, what="a keepalive pong")

    run(scenario())
    # One reply each; those carried out in request order (a busy one comes at once).
    assert sorted(reply["id"] for reply in replies) == sorted(ids)
    applied = [reply["id"] for reply in replies if reply["ok"]]
    assert applied == sorted(applied, key=ids.index)
    outcomes = Counter("ok" if reply["ok"] else reply["error"]["code"] for reply in replies)
    assert set(outcomes) <= {"ok", "busy"}, outcomes
    assert outcomes["ok"] > 0
    assert outcomes["ok"] + outcomes["busy"] == count
    assert store.latest_seq() - seq_before == outcomes["ok"]
    assert [event["data"]["description"] for event in store.journal()[1:]] == applied
    assert all(reply["result"]["event"]["seq"] for reply in replies if reply["ok"])


def test_the_window_is_bounded_in_bytes_too(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request is being carried out, large ones wait their turn only up to
    ``RPC_WINDOW_BYTES``: the ones beyond are answered ``busy`` at once, not queued."""
    project_id = store.create("Held", owner_id="ann").project.project_id
    released = threading.Event()
    original_update = ProjectStore.update

    def held_update(self: ProjectStore, *args: Any, **kwargs: Any) -> Any:
        assert released.wait(60), "the test never released the update"
        return original_update(self, *args, **kwargs)

    monkeypatch.setattr(ProjectStore, "update", held_update)
    large = 200_000  # characters: five fit in the window, the sixth does not
    assert 5 * large < remote.RPC_WINDOW_BYTES < 6 * large
    messages = [
        request(f"large-{number}", "create", name="x", owner_id="ann", description="d" * large)
        for number in range(8)
    ]

    async def scenario() -> None:
        async with serving(store) as server, rpc(server) as ws:
            try:
                await ws.send(request("held", "update", project=project_id, changes={"name": "y"}))
                for message in messages:
                    await ws.send(message)
                early = [
                    orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)) for _ in range(3)
                ]
            finally:
                released.set()
            later = [
                orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)) for _ in range(6)
            ]
            assert [(r["id"], r["error"]["code"]) for r in early] == [
                (f"large-{number}", "busy") for number in (5, 6, 7)
            ]
            assert [r["id"] for r in later] == ["held"] + [f"large-{n}" for n in range(5)]
            assert later[0]["ok"] is True
            assert {r["error"]["code"] for r in later[1:]} == {"invalid_input"}  # too long

    run(scenario())


def test_a_stopping_server_sends_the_reply_of_a_write_in_progress_before_closing(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write being carried out when the server is asked to stop is answered before the
    connection closes (1001); requests not begun by then are not carried out."""
    project_id = store.create("Busy", owner_id="ann").project.project_id
    released = threading.Event()
    entered: list[str] = []
    original_update = ProjectStore.update

    def held_update(self: ProjectStore, *args: Any, **kwargs: Any) -> Any:
        entered.append("update")
        assert released.wait(60), "the test never released the update"
        return original_update(self, *args, **kwargs)

    monkeypatch.setattr(ProjectStore, "update", held_update)

    async def scenario() -> None:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            read_tokens=frozenset({READ_TOKEN}),
            write_tokens=frozenset({WRITE_TOKEN}),
        )
        server = BroadcastServer(store, runtime_paths(store.path, for_a_server=True), config)
        await server.start()
        closing: asyncio.Future[None] | None = None
        try:
            async with rpc(server) as ws:
                await ws.send(request("w1", "update", project=project_id, changes={"name": "A"}))
                await until(lambda: entered, what="the write begun")
                await ws.send(request("w2", "update", project=project_id, changes={"name": "B"}))
                closing = asyncio.ensure_future(server.close())
                # Stopping has begun: the server either closed the connection already, or
                # waits for the write.
                await until(
                    lambda: ws.state is not State.OPEN or server.writes._stopping,
                    what="the server stopping",
                )
                released.set()
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                assert reply["id"] == "w1"
                assert reply["ok"] is True
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
        finally:
            released.set()
            await asyncio.wait_for(closing if closing is not None else server.close(), 30)

    run(scenario())
    assert [event["data"]["name"] for event in store.journal()[1:]] == ["A"]


def test_busy_is_a_documented_error_the_client_reports_as_a_server_error() -> None:
    assert exit_code_for(remote.ERROR_CLASSES["busy"]("busy")) == 5
    reply = orjson.loads(remote.busy_reply(request("b1", "list")))
    assert reply["id"] == "b1"
    assert reply["ok"] is False
    assert reply["error"]["code"] == "busy"
    database = remote.RemoteBackend.__new__(remote.RemoteBackend)
    database.url = "ws://127.0.0.1:1"
    with pytest.raises(ServerError, match="busy"):
        database._result(remote.busy_reply(request("b1", "list")), "b1")


# -- the answers kept for retries --------------------------------------------------------------


def test_the_answers_kept_for_retries_stay_under_a_byte_cap(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replies of large writes (10,000 emoji each, ~80 KB a reply) are kept within the byte
    cap, not only the count: the oldest go, and the newest still replay byte for byte."""
    cap = 512 * 1024
    monkeypatch.setattr(server_writes, "_ANSWER_BYTES_KEPT", cap)
    project_id = store.create("Large", owner_id="ann").project.project_id
    messages = [
        request(
            f"big-{number}",
            "update",
            project=project_id,
            changes={"description": chr(0x1F600 + number) * 10_000},
        )
        for number in range(16)
    ]

    async def scenario() -> None:
        async with serving(store) as server, rpc(server) as ws:
            first = [await reply_to(ws, message) for message in messages]
            assert all(orjson.loads(reply)["ok"] for reply in first)
            kept = server.writes._answered
            assert sum(len(reply) for reply in kept.values()) <= cap
            assert 1 < len(kept) < len(messages)
            seq = store.latest_seq()
            for message, reply in list(zip(messages, first, strict=False))[-2:]:
                assert await reply_to(ws, message) == reply
            assert store.latest_seq() == seq  # replayed, not applied again

    run(scenario())


# -- concurrent reads ------------------------------------------------------------------------


def _large_database(store: ProjectStore, projects: int) -> None:
    """Fill the store fast: one transaction per project is slow, so write the file whole."""
    store.create("seed", owner_id="ann")
    data = orjson.loads(store.path.read_bytes())
    template = next(iter(data["projects"].values()))
    for number in range(projects):
        project_id = f"proj_20240101_000000_{number}"
        data["projects"][project_id] = {
            **template,
            "project_id": project_id,
            "name": f"project {number}",
            "description": "d" * 100,
        }
    store.path.write_bytes(orjson.dumps(data))


def test_concurrent_lists_share_one_read_and_a_write_goes_first(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 ``list`` requests in flight on 16 connections, their read of the file held up: a
    write is still answered (it does not queue behind them for the server's threads), and
    the lists then share one read of the file instead of each parsing it."""
    _large_database(store, 2000)
    target = store.create("Target", owner_id="ann").project.project_id
    released = threading.Event()
    writing = threading.local()
    reads: list[str] = []
    original_read = ProjectStore._read_file_with_version
    original_write = remote._write

    def held_read(self: ProjectStore, **options: Any) -> Any:
        if not getattr(writing, "active", False):
            reads.append(threading.current_thread().name)
            assert released.wait(60), "the test never released the reads"
        return original_read(self, **options)

    def write(*args: Any, **kwargs: Any) -> Any:
        writing.active = True
        try:
            return original_write(*args, **kwargs)
        finally:
            writing.active = False

    lists = 16

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=8))
        async with (
            serving(store, poll_interval=60.0) as server,
            contextlib.AsyncExitStack() as stack,
        ):
            readers = [
                await stack.enter_async_context(rpc(server, READ_TOKEN)) for _ in range(lists)
            ]
            writer = await stack.enter_async_context(rpc(server))
            monkeypatch.setattr(ProjectStore, "_read_file_with_version", held_read)
            monkeypatch.setattr(remote, "_write", write)
            try:
                for number, ws in enumerate(readers):
                    await ws.send(request(f"list-{number}", "list"))
                await until(lambda: reads, what="a list reading the file")
                written = orjson.loads(
                    await reply_to(
                        writer,
                        request("w", "update", project=target, changes={"status": "on_hold"}),
                    )
                )
                assert written["ok"] is True, written
            finally:
                released.set()
            listed = [
                orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)) for ws in readers
            ]
            assert [reply["id"] for reply in listed] == [f"list-{n}" for n in range(lists)]
            assert all(len(reply["result"]["projects"]) == 2002 for reply in listed)
            assert len(reads) <= 2, reads

    run(scenario())


def test_a_read_waiting_for_its_turn_holds_no_copy_of_the_database(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads wait for one of the few read slots before they read: lists that come between
    writes, while the slots are taken, do not each keep their own read of the file."""
    _large_database(store, 200)
    target = store.create("Target", owner_id="ann").project.project_id
    released = threading.Event()
    answering: list[str] = []
    original_answer = remote.answer

    def held_answer(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("state") is not None:
            answering.append("list")
            assert released.wait(60), "the test never released the lists"
        return original_answer(*args, **kwargs)

    def reads_alive() -> int:
        gc.collect()
        return sum(1 for thing in gc.get_objects() if isinstance(thing, StoreState))

    async def scenario() -> None:
        async with (
            serving(store, poll_interval=60.0) as server,
            contextlib.AsyncExitStack() as stack,
        ):
            monkeypatch.setattr(remote, "answer", held_answer)
            writer = await stack.enter_async_context(rpc(server))
            try:
                for number in range(2):  # the read slots, held
                    ws = await stack.enter_async_context(rpc(server, READ_TOKEN))
                    await ws.send(request(f"held-{number}", "list"))
                await until(lambda: len(answering) == 2, what="both read slots taken")
                for number in range(3):
                    reply = orjson.loads(
                        await reply_to(
                            writer,
                            request(
                                f"w{number}",
                                "update",
                                project=target,
                                changes={"name": f"T{number}"},
                            ),
                        )
                    )
                    assert reply["ok"] is True, reply
                    ws = await stack.enter_async_context(rpc(server, READ_TOKEN))
                    await ws.send(request(f"waiting-{number}", "list"))
                    await until(
                        lambda number=number: (
                            len(server.writes._reads._waiters or ()) == number + 1
                        ),
                        what="the list waiting for a read slot",
                    )
                assert reads_alive() == 1
            finally:
                released.set()

    run(scenario())


# -- failures of our own -----------------------------------------------------------------------


def test_a_bug_of_ours_is_a_logged_server_error_not_invalid_input(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``KeyError`` from our own code is no fault of the request: the reply is
    ``server_error`` (projctl exit 5), the log has the traceback, the connection goes on."""
    project_id = store.create("Fine", owner_id="ann").project.project_id

    def broken_get(self: ProjectStore, project_id: str) -> Any:
        raise KeyError("a bug")

    async def scenario() -> None:
        async with serving(store) as server, rpc(server) as ws:
            with monkeypatch.context() as patch:
                patch.setattr(ProjectStore, "get", broken_get)
                failed = orjson.loads(await reply_to(ws, request("g1", "get", project=project_id)))
            assert failed == {
                "id": "g1",
                "ok": False,
                "error": {
                    "code": "server_error",
                    "message": "internal error; the server's log has the details",
                },
            }
            again = orjson.loads(await reply_to(ws, request("g2", "get", project=project_id)))
            assert again["ok"] is True

    with caplog.at_level(logging.ERROR):
        run(scenario())
    failures = [record for record in caplog.records if record.exc_info is not None]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is KeyError
    assert "a bug" in caplog.text
    assert exit_code_for(remote.ERROR_CLASSES["server_error"]("failed")) == 5
