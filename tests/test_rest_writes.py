"""The REST write routes: the original backend's three requests as it sent them, who may
write, every error with its status and code, ETag and If-Match, emitted events."""

from __future__ import annotations

import asyncio
import http.client
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projctl.store import ProjectStore

from .test_server import receive, run, serving, ws_url

WRITE, READ = "w-" + "x" * 22, "r-" + "y" * 22
JSON = {"Content-Type": "application/json"}


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = WRITE,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, Any]:
    """One request on loopback: status, headers and decoded JSON body (``None``: empty)."""
    sent = {**(JSON if body is not None else {}), **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return response.status, response.headers, orjson.loads(data) if data else None


async def acall(port: int, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    return await asyncio.to_thread(call, port, method, path, body, **kw)


def tokens() -> dict[str, Any]:
    return {"write_tokens": frozenset({WRITE}), "read_tokens": frozenset({READ})}


def test_the_original_three_requests_work_unchanged_and_broadcast_the_contract(
    store: ProjectStore,
) -> None:
    async def scenario() -> None:
        async with (
            serving(store, write_tokens=frozenset({WRITE})) as server,
            connect(ws_url(server)) as ws,
        ):
            port = server.port
            status, headers, created = await acall(
                port, "POST", "/api/projects", {"name": "My Project", "project_type": "api"}
            )
            assert status == 201
            project_id = created["project_id"]
            assert headers["Location"] == f"/api/projects/{project_id}"
            assert (created["name"], created["type"], created["status"]) == (
                "My Project",
                "api",
                "created",
            )
            assert headers["ETag"].startswith('"')
            status, _, updated = await acall(
                port, "PUT", f"/api/projects/{project_id}", {"status": "in_progress"}
            )
            assert status == 200
            assert updated["updated_fields"] == ["status"]
            assert updated["project"]["status"] == "in_progress"
            status, _, deleted = await acall(port, "DELETE", f"/api/projects/{project_id}")
            assert status == 200
            assert {k: deleted[k] for k in ("project_id", "name", "deleted")} == {
                "project_id": project_id,
                "name": "My Project",
                "deleted": True,
            }
            events = [await receive(ws) for _ in range(3)]
        assert [e["event_type"] for e in events] == [
            "project_created",
            "project_updated",
            "project_deleted",
        ]
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert events[0]["data"] == created
        assert events[1]["data"]["updated_fields"] == ["status"]
        assert events[2]["data"] == {"project_id": project_id, "name": "My Project"}
        assert store.journal() == events

    run(scenario())


def test_patch_is_put_and_an_update_that_changes_nothing_records_nothing(
    store: ProjectStore,
) -> None:
    project_id = store.create("Same").project.project_id

    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            path = f"/api/projects/{project_id}"
            status, _, answer = await acall(server.port, "PATCH", path, {"name": "Same"})
            assert (status, answer["updated_fields"]) == (200, [])
            status, headers, answer = await acall(
                server.port, "PATCH", path, {"name": "Other", "type": "ci"}
            )
            assert (status, answer["updated_fields"]) == (200, ["name", "type"])
            assert headers["Projctl-Seq"] == "2"

    run(scenario())
    assert store.latest_seq() == 2


def test_writes_need_the_write_token(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            body = {"name": "x"}
            status, headers, answer = await acall(
                server.port, "POST", "/api/projects", body, token=None
            )
            assert (status, answer["error"]) == (401, "unauthorized")
            assert headers["WWW-Authenticate"] == 'Bearer realm="projctl"'
            status, _, answer = await acall(server.port, "POST", "/api/projects", body, token=READ)
            assert (status, answer["error"]) == (403, "forbidden")
            status, _, _ = await acall(server.port, "GET", "/api/projects", token=READ)
            assert status == 200

    run(scenario())
    assert store.latest_seq() == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code", "says"),
    [
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "json"),
        (b'{"name": "x"}', "text/plain", 415, "unsupported_media_type", "text/plain"),
        (b'{"name": ', "application/json", 400, "invalid_input", "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "invalid_input", "JSON object"),
        (b'{"name": "x", "colour": "red"}', "application/json", 400, "invalid_input", "'colour'"),
        (b'{"name": 7}', "application/json", 400, "invalid_input", "name must be a string"),
        (b'{"name": ""}', "application/json", 400, "invalid_input", "name"),
        (b'{"name": "x", "status": "done"}', "application/json", 400, "invalid_input", "status"),
        (b'{"type": "api"}', "application/json", 400, "invalid_input", "name is required"),
        (
            b'{"name": "x", "type": "api", "project_type": "ci"}',
            "application/json",
            400,
            "invalid_input",
            "different values",
        ),
    ],
)
def test_a_bad_create_is_refused_with_its_code_and_writes_nothing(
    store: ProjectStore, raw: bytes, content_type: str, status: int, code: str, says: str
) -> None:
    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            got, _, answer = await acall(
                server.port,
                "POST",
                "/api/projects",
                raw=raw,
                headers={"Content-Type": content_type},
            )
            assert (got, answer["error"]) == (status, code), answer
            assert says in answer["message"]

    run(scenario())
    assert store.latest_seq() == 0


def test_missing_and_ambiguous_projects(store: ProjectStore) -> None:
    store.create("Twin")
    store.create("Twin")

    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            for method in ("PUT", "DELETE"):
                body = {"status": "completed"} if method == "PUT" else None
                status, _, answer = await acall(server.port, method, "/api/projects/ghost", body)
                assert (status, answer["error"], answer["project"]) == (404, "not_found", "ghost")
                status, _, answer = await acall(server.port, method, "/api/projects/Twin", body)
                assert (status, answer["error"]) == (409, "ambiguous"), answer
            status, _, answer = await acall(server.port, "GET", "/api/projects/Twin")
            assert (status, answer["error"]) == (409, "ambiguous")

    run(scenario())
    assert store.latest_seq() == 2


def test_if_match_refuses_a_change_made_on_a_stale_version(store: ProjectStore) -> None:
    project_id = store.create("Tagged").project.project_id

    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            path = f"/api/projects/{project_id}"
            _, headers, _ = await acall(server.port, "GET", path)
            seen = headers["ETag"]
            status, headers, _ = await acall(
                server.port, "PATCH", path, {"status": "on_hold"}, headers={"If-Match": seen}
            )
            assert status == 200
            now = headers["ETag"]
            assert now != seen
            for method, body in (("PUT", {"status": "completed"}), ("DELETE", None)):
                status, _, answer = await acall(
                    server.port, method, path, body, headers={"If-Match": seen}
                )
                assert (status, answer["error"]) == (412, "precondition_failed")
            status, _, _ = await acall(server.port, "DELETE", path, headers={"If-Match": now})
            assert status == 200

    run(scenario())
    assert [e["event_type"] for e in store.journal()] == [
        "project_created",
        "project_updated",
        "project_deleted",
    ]


def test_several_projects_are_deleted_all_or_none(store: ProjectStore) -> None:
    a = store.create("A").project.project_id
    b = store.create("B").project.project_id

    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            query = f"/api/projects?project_id={a}&project_id=ghost&project_id={b}"
            status, _, answer = await acall(server.port, "DELETE", query)
            assert (status, answer["error"]) == (404, "not_found")
            status, headers, answer = await acall(server.port, "DELETE", query + "&missing_ok=1")
            assert status == 200
            assert [d["project_id"] for d in answer["deleted"]] == [a, b]
            assert headers["Projctl-Seq"] == "3, 4"

    run(scenario())
    assert store.list_projects() == []


def test_an_event_is_emitted_through_its_route(store: ProjectStore) -> None:
    project = store.create("Docs").project

    async def scenario() -> None:
        async with serving(store, **tokens()) as server:
            path = "/api/projects/Docs/events"
            body = {"event_type": "documentation_generated", "data": {"pages": 12}}
            status, _, answer = await acall(server.port, "POST", path, body)
            assert status == 201
            event = answer["event"]
            assert event["event_type"] == "documentation_generated"
            assert event["data"] == {"project_id": project.project_id, "name": "Docs", "pages": 12}
            for bad in (
                {"event_type": "project_deleted"},
                {"event_type": "tests_run", "data": {"name": "x"}},
                {"event_type": "tests_run", "extra": 1},
                {"data": {}},
            ):
                status, _, answer = await acall(server.port, "POST", path, bad)
                assert (status, answer["error"]) == (400, "invalid_input"), bad
            status, _, events = await acall(server.port, "GET", "/api/events?since=1")
            assert events["events"] == [event]

    run(scenario())
    assert store.get(project.project_id) == project
