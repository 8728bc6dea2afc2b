"""A local request that gets no reply: the server answers even its own failures, and a
client does not take a server that hangs up on it for a dead one (and start a second)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projctl import open_database, rpc, runtime
from projctl.errors import ServerError
from projctl.events import Event
from projctl.runtime import runtime_paths
from projctl.server import BroadcastServer, ServerConfig
from projctl.store import ProjectStore

from .conftest import fake_server_state


@contextlib.contextmanager
def hanging_up_server(address: Path) -> Iterator[list[bytes]]:
    """A server on ``address`` (in this process) that reads each request and closes the
    connection without a reply, as a server with a bug in its request handling did."""
    received: list[bytes] = []
    stopping = threading.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(address))
        listener.listen()
        listener.settimeout(0.05)

        def serve() -> None:
            while not stopping.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection, contextlib.suppress(OSError):
                    connection.settimeout(5)
                    received.append(connection.recv(65536))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield received
        finally:
            stopping.set()
            thread.join(5)


def test_a_server_that_hangs_up_without_answering_is_not_replaced(db_path: Path) -> None:
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    # This process is the server the state entry names: alive, and its socket hangs up.
    fake_server_state(os.getpid(), paths.socket, str(paths.db_path)).write(paths.state_file)
    failures: list[tuple[Event, ServerError]] = []
    database = open_database(
        db_path, broadcast=True, on_broadcast_error=lambda e, f: failures.append((e, f))
    )
    with hanging_up_server(paths.socket) as received:
        change = database.create("kept")
    assert change.event is not None
    assert [(event["seq"], str(error)) for event, error in failures] == [
        (
            1,
            f"the server (pid {os.getpid()}) closed the connection without answering; "
            f"its log may say why: {paths.log_file}",
        )
    ]
    assert len(received) == 1  # asked once, not again through a second server
    state = runtime.read_server_state(paths)
    assert state is not None
    assert state.pid == os.getpid()  # still the one named: no second server took its place
    assert not paths.log_file.exists()  # and none was started
    assert [event["seq"] for event in database.journal()] == [1]


def test_a_failure_in_answering_a_local_request_is_answered_and_logged(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_health(_self: BroadcastServer) -> dict[str, Any]:
        raise ValueError("a bug")

    async def scenario() -> None:
        server = BroadcastServer(
            store,
            runtime_paths(store.path, for_a_server=True),
            ServerConfig(host="127.0.0.1", port=0),
        )
        await server.start()
        try:
            monkeypatch.setattr(BroadcastServer, "health", broken_health)
            with pytest.raises(ServerError) as raised:
                await asyncio.to_thread(rpc.request, server.paths.socket, rpc.OP_STATUS, timeout=5)
            assert str(raised.value) == (
                "the server refused the request: the server failed: ValueError: a bug"
            )
            monkeypatch.undo()
            status = await asyncio.to_thread(
                rpc.request, server.paths.socket, rpc.OP_STATUS, timeout=5
            )
            assert status["status"] == "ok"  # and it goes on serving
        finally:
            await server.close()

    with caplog.at_level(logging.ERROR, logger="projctl.server"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
    failed = [record for record in caplog.records if record.message == "a local request failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None


def test_a_stop_with_a_local_client_still_connected_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client connected to the Unix socket and waiting (its readline() pending) when the
    server stops: the connection is closed, and nothing is logged as an error (it used to
    be an ``ERROR asyncio ... CancelledError`` traceback in the server log)."""
    store = ProjectStore(tmp_path / "db.json")

    async def scenario() -> None:
        server = BroadcastServer(
            store,
            runtime_paths(store.path, for_a_server=True),
            ServerConfig(host="127.0.0.1", port=0),
        )
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(server.paths.socket))
        writer.write(rpc.encode_request(rpc.OP_STATUS))
        await asyncio.wait_for(reader.readline(), 5)  # served; now it waits for more
        await server.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
