"""Hostile input on ``/rpc``: malformed and oversized requests get error replies or a 1009
close, write nothing, and leave the server serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from projctl.remote import MAX_REQUEST

from ._remote import (
    TeamServer,
    ask,
    error_reply,
    healthy,
    rpc_connection,
    run_async,
)

NEEDS_AN_ID = "every request needs an id: a string of 1-128 characters"


def test_hostile_requests_get_error_replies_and_write_nothing(team: TeamServer) -> None:
    def request(request_id: str, op: str, **args: Any) -> str:
        return orjson.dumps({"id": request_id, "op": op, "args": args}).decode()

    async def scenario() -> None:
        async with rpc_connection(team) as ws:
            created = await ask(ws, request("seed", "create", name="Existing", owner_id="ann"))
            assert created["ok"] is True, created
            project_id = created["result"]["project"]["project_id"]
            before = team.server_db.read_bytes()
            cases: list[tuple[str | bytes, dict[str, Any]]] = [
                ("not json", error_reply(None, "bad_request", "a request is one JSON object")),
                ("", error_reply(None, "bad_request", "a request is one JSON object")),
                (
                    b"\xff\xfe binary",
                    error_reply(None, "bad_request", "a request is one JSON object"),
                ),
                (
                    "[" * 5000 + "]" * 5000,
                    error_reply(None, "bad_request", "a request is one JSON object"),
                ),
                (
                    '{"id": "a", "op": NaN}',
                    error_reply(None, "bad_request", "a request is one JSON object"),
                ),
                ("[1, 2]", error_reply(None, "bad_request", NEEDS_AN_ID)),
                ('"a string"', error_reply(None, "bad_request", NEEDS_AN_ID)),
                ("null", error_reply(None, "bad_request", NEEDS_AN_ID)),
                ('{"op": "list", "args": {}}', error_reply(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": 5, "op": "list"}', error_reply(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": ["x"], "op": "list"}', error_reply(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": "", "op": "list"}', error_reply(None, "bad_request", NEEDS_AN_ID)),
                (request("i" * 129, "list"), error_reply(None, "bad_request", NEEDS_AN_ID)),
                (
                    request("h1", "drop_database"),
                    error_reply("h1", "unknown_op", "unknown op 'drop_database'"),
                ),
                ('{"id": "h2", "args": {}}', error_reply("h2", "unknown_op", "unknown op 'None'")),
                (
                    '{"id": "h3", "op": ["create"]}',
                    error_reply("h3", "unknown_op", "unknown op \"['create']\""),
                ),
                (
                    '{"id": "h4", "op": "create", "args": [1]}',
                    error_reply("h4", "bad_request", "args must be a JSON object"),
                ),
                (
                    '{"id": "h5", "op": "create", "args": null}',
                    error_reply("h5", "bad_request", "args must be a JSON object"),
                ),
                (
                    request("h6", "create", name=5, owner_id="ann"),
                    error_reply("h6", "invalid_input", "name must be a string"),
                ),
                (
                    request("h7", "create", name="x"),
                    error_reply("h7", "invalid_input", "owner_id must be a string"),
                ),
                (
                    request("h8", "create", name="", owner_id="ann"),
                    error_reply("h8", "invalid_input", "name must not be empty"),
                ),
                (
                    request("h9", "create", name="x", owner_id="ann", status="done!"),
                    error_reply(
                        "h9",
                        "invalid_input",
                        "status 'done!' is not one of created, in_progress, on_hold, completed, "
                        "archived",
                    ),
                ),
                (
                    request("h10", "create", name="x", owner_id="ann", description=["d"]),
                    error_reply("h10", "invalid_input", "description must be a string"),
                ),
                (
                    request("h11", "update", project=project_id, changes={"name": 5}),
                    error_reply(
                        "h11",
                        "invalid_input",
                        "changes must be an object of field names to strings",
                    ),
                ),
                (
                    request("h12", "update", project=project_id, changes="name=x"),
                    error_reply(
                        "h12",
                        "invalid_input",
                        "changes must be an object of field names to strings",
                    ),
                ),
                (
                    request("h13", "update", project=project_id, changes={"project_id": "p"}),
                    error_reply("h13", "invalid_input", "unknown project field(s): project_id"),
                ),
                (
                    request("h14", "update", project=project_id, changes={}),
                    error_reply(
                        "h14",
                        "invalid_input",
                        "nothing to update: give at least one field to change",
                    ),
                ),
                (
                    request("h15", "update", project=5, changes={"name": "y"}),
                    error_reply("h15", "invalid_input", "project must be a string"),
                ),
                (
                    request("h16", "delete", projects="all"),
                    error_reply("h16", "invalid_input", "projects must be a list of ids or names"),
                ),
                (
                    request("h17", "delete", projects=[project_id, 5]),
                    error_reply("h17", "invalid_input", "projects must be a list of ids or names"),
                ),
                (
                    request("h18", "delete", projects=[project_id, "ghost"], missing_ok="yes"),
                    error_reply(
                        "h18", "not_found", "no project with id or name 'ghost'", project="ghost"
                    ),
                ),
                (
                    request("h19", "get", project=None),
                    error_reply("h19", "invalid_input", "project must be a string"),
                ),
                (
                    request("h20", "list", status=5),
                    error_reply("h20", "invalid_input", "status must be a string"),
                ),
                (
                    request("h21", "get", project="ghost"),
                    error_reply(
                        "h21", "not_found", "no project with id or name 'ghost'", project="ghost"
                    ),
                ),
            ]
            replies = [(message, await ask(ws, message)) for message, _ in cases]
            assert replies == cases
            # The connection and the server are still fine, and nothing was written.
            listed = await ask(ws, request("after", "list"))
            assert listed["ok"] is True
            assert [p["project_id"] for p in listed["result"]["projects"]] == [project_id]
            assert team.server_db.read_bytes() == before

    run_async(scenario())
    assert healthy(team.server.port, team.ca)


def test_an_oversized_request_is_closed_with_1009(team: TeamServer) -> None:
    async def scenario() -> None:
        async with rpc_connection(team) as ws:
            seeded = await ask(
                ws,
                orjson.dumps({"id": "s", "op": "create", "args": {"name": "x", "owner_id": "a"}}),
            )
            assert seeded["ok"] is True
        before = team.server_db.read_bytes()
        huge = orjson.dumps(
            {
                "id": "big",
                "op": "create",
                "args": {"name": "big", "owner_id": "a", "description": "d" * 300_000},
            }
        )
        assert len(huge) > MAX_REQUEST
        async with rpc_connection(team) as ws:
            await ws.send(huge.decode())
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        assert team.server_db.read_bytes() == before
        # A request just under the limit is still answered (refused for its description).
        async with rpc_connection(team) as ws:
            fitting = orjson.dumps(
                {
                    "id": "fits",
                    "op": "create",
                    "args": {"name": "x", "owner_id": "a", "description": "d" * 200_000},
                }
            )
            assert len(fitting) < MAX_REQUEST
            reply = await ask(ws, fitting.decode())
            assert reply["ok"] is False
            assert reply["error"]["code"] == "invalid_input"

    run_async(scenario())
    assert healthy(team.server.port, team.ca)
    assert len(team.store().journal()) == 1
