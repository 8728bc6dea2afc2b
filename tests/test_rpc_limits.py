"""The team protocol's limits, in-process: pipelining on ``/rpc``, the memory a token holder
can take (the answers kept for retries, concurrent reads), and failures of our own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from projctl import remote
from projctl import server as server_module
from projctl.runtime import runtime_paths
from projctl.server import BroadcastServer, ServerConfig
from projctl.store import ProjectStore

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


# -- the answers kept for retries --------------------------------------------------------------


def test_the_answers_kept_for_retries_stay_under_a_byte_cap(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replies of large writes (10,000 emoji each, ~80 KB a reply) are kept within the byte
    cap, not only the count: the oldest go, and the newest still replay byte for byte."""
    cap = 512 * 1024
    monkeypatch.setattr(server_module, "_RPC_ANSWER_BYTES_KEPT", cap, raising=False)
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
            kept = server._rpc_answered
            assert sum(len(reply) for reply in kept.values()) <= cap
            assert 1 < len(kept) < len(messages)
            seq = store.latest_seq()
            for message, reply in list(zip(messages, first, strict=False))[-2:]:
                assert await reply_to(ws, message) == reply
            assert store.latest_seq() == seq  # replayed, not applied again

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
    assert remote.ERROR_CODES["server_error"] == 5
