"""The server's HTTP side: the dashboard's files and the read-only API, with their policies."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from projctl.store import ProjectStore

from .conftest import OwnedStore
from .test_server import commit, receive, run, serving, until, ws_url


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 GET on loopback; the status, headers (lower-case names) and body."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while chunk := raw.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


async def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], Any]:
    status, head, body = await asyncio.to_thread(
        http_get, port, path, {k.replace("_", "-"): v for k, v in headers.items()}
    )
    if head.get("content-type", "").startswith("application/json"):
        return status, head, orjson.loads(body)
    return status, head, body


def test_the_dashboard_is_served_with_a_strict_policy(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            status, head, body = await get(server.port, "/")
            assert status == 200
            assert head["content-type"] == "text/html; charset=utf-8"
            assert b"dashboard.js" in body
            policy = head["content-security-policy"]
            assert "default-src 'none'" in policy
            assert "script-src 'self'" in policy
            assert f"connect-src 'self' ws://127.0.0.1:{server.port}" in policy
            assert head["x-content-type-options"] == "nosniff"
            for path, kind in (
                ("/dashboard.js", "text/javascript"),
                ("/dashboard.css", "text/css"),
            ):
                status, head, body = await get(server.port, path)
                assert (status, head["content-type"].split(";")[0]) == (200, kind)
                assert body
            assert (await get(server.port, "/nowhere"))[0] == 404

    run(scenario())


def test_the_page_policy_holds_no_more_than_a_host_name_and_port() -> None:
    """Whatever reaches it, the Content-Security-Policy names only a well-formed host."""
    from projctl.server import _page_response

    for host in ("a; script-src * 'unsafe-inline'", "a 'unsafe-eval'", "x\\", "[::1]evil"):
        policy = _page_response("/", host).headers["Content-Security-Policy"]
        assert "unsafe" not in policy, policy
        assert "evil" not in policy, policy
        assert "connect-src 'self'; " in policy
    policy = _page_response("/", "projctl.example:8443").headers["Content-Security-Policy"]
    assert "connect-src 'self' ws://projctl.example:8443 wss://projctl.example:8443;" in policy


def test_a_token_never_travels_in_a_url(store: ProjectStore) -> None:
    """?token= is refused on /api (and /healthz); a plain server's /ws keeps it, a
    TLS server's does not; headers and the browser's subprotocol always work."""
    from projctl.server import AccessPolicy

    async def scenario() -> None:
        async with serving(store, subscriber_token="s3cret") as server:
            status, _, body = await get(server.port, "/api/projects?token=s3cret")
            assert (status, body["error"]) == (400, "invalid_input")
            assert "Authorization: Bearer" in body["message"]
            assert "s3cret" not in body["message"]
            status, _, _ = await get(server.port, "/healthz?token=s3cret")
            assert status == 400
            for query in ("?token=s3cret", "?token=wrong"):
                status, _, body = await get(server.port, "/api/events" + query)
                assert (status, body["error"]) == (400, "invalid_input")
            # On /ws a header or the browser's subprotocol works as well as ?token=.
            async with connect(ws_url(server), subprotocols=["projctl-token.s3cret"]):  # type: ignore[list-item]
                pass
            async with connect(ws_url(server, "?token=s3cret")):
                pass
            status, _, _ = await get(server.port, "/api/projects", Authorization="Bearer s3cret")
            assert status == 200

    run(scenario())
    plain = AccessPolicy(host="127.0.0.1", read_tokens=frozenset({"s3cret"}))
    tls = AccessPolicy(host="127.0.0.1", read_tokens=frozenset({"s3cret"}), tls=True)
    assert not plain.token_in_url_refused("/ws", "since=3&token=s3cret")
    assert plain.presented_token({}, "/ws?token=s3cret") == "s3cret"
    for path, query in (
        ("/api/projects", "token=s3cret"),
        ("/api/events", "token="),
        ("/", "token"),
    ):
        assert plain.token_in_url_refused(path, query)
    assert tls.token_in_url_refused("/ws", "token=s3cret")
    assert tls.presented_token({}, "/ws?token=s3cret") is None
    assert tls.presented_token({"Authorization": "Bearer s3cret"}, "/ws") == "s3cret"


def test_the_read_only_api(store: ProjectStore) -> None:
    alpha = store.create("alpha", status="completed", owner_id="ann").project
    beta = store.create("beta", type="web", owner_id="bob").project

    async def scenario() -> None:
        async with serving(store) as server:
            status, head, body = await get(server.port, "/api/projects")
            assert status == 200
            assert head["content-type"] == "application/json"
            assert head["cache-control"] == "no-store"
            assert body == {"seq": 2, "projects": [alpha.to_dict(), beta.to_dict()]}
            _, _, one = await get(server.port, "/api/projects?owner=bob&owner=carol")
            assert [p["name"] for p in one["projects"]] == ["beta"]
            _, _, none = await get(server.port, "/api/projects?owner=ann&type=web")
            assert none["projects"] == []
            _, _, either = await get(server.port, "/api/projects?status=completed&status=created")
            assert len(either["projects"]) == 2
            status, _, found = await get(server.port, f"/api/projects/{alpha.project_id}")
            assert (status, found) == (200, alpha.to_dict())
            status, _, missing = await get(server.port, "/api/projects/proj_nope")
            assert (status, missing) == (
                404,
                {
                    "error": "not_found",
                    "message": "no project with id or name 'proj_nope'",
                    "project": "proj_nope",
                },
            )
            # A change committed but not forwarded is seen too: the journal is the truth.
            live = await commit(store, lambda: store.update(beta.project_id, {"name": "b2"}))
            _, _, events = await get(server.port, "/api/events?since=1")
            assert events["resync"] is False
            assert events["latest_seq"] == 3
            assert [e["seq"] for e in events["events"]] == [2, 3]
            assert events["events"][-1] == live
            status, _, bad = await get(server.port, "/api/events?since=abc")
            assert (status, bad["error"]) == (400, "invalid_input")

    run(scenario())


def test_api_events_too_old_give_a_resync_marker(tmp_path: Path) -> None:
    store = OwnedStore(tmp_path / "db.json", journal_limit=2)
    kept = store.create("kept").project
    for number in range(4):
        store.update(kept.project_id, {"description": str(number)})

    async def scenario() -> None:
        async with serving(store, journal_window=2) as server:
            _, _, body = await get(server.port, "/api/events?since=1")
            assert body["resync"] is True
            assert body["latest_seq"] == 5
            assert body["projects"] == [store.get(kept.project_id).to_dict()]

    run(scenario())


def test_api_keeps_the_origin_and_token_policy_of_ws(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            status, _, body = await get(server.port, "/api/projects", Origin="https://evil.example")
            assert (status, body["error"]) == (403, "forbidden")
            status, head, _ = await get(
                server.port, "/api/projects", Origin="http://localhost:5173"
            )
            assert status == 200
            assert head["access-control-allow-origin"] == "http://localhost:5173"
        async with serving(store, subscriber_token="s3cret") as server:
            status, head, body = await get(server.port, "/api/projects")
            assert (status, body["error"]) == (401, "unauthorized")
            assert head["www-authenticate"] == 'Bearer realm="projctl"'
            status, _, _ = await get(server.port, "/api/projects", Authorization="Bearer s3cret")
            assert status == 200
            # A browser offers the token as a subprotocol (it can set no header); it is echoed.
            async with connect(ws_url(server), subprotocols=["projctl-token.s3cret"]) as ws:
                assert ws.subprotocol == "projctl-token.s3cret"
                created = await commit(store, lambda: store.create("for the page"))
                await until(lambda: len(server.feed.subscribers) == 1)
                assert await receive(ws) == created
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(server), subprotocols=["projctl-token.wrong"])
            assert refused.value.response.status_code == 401

    run(scenario())


def test_the_seed_snippet_needs_no_subprotocol(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            assert ws.subprotocol is None
            await until(lambda: len(server.feed.subscribers) == 1)

    run(scenario())


@pytest.mark.usefixtures("broadcasting")
def test_open_prints_the_dashboard_url_and_starts_the_server(
    projctl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened = projctl("open")  # no display: it only prints
    assert opened.returncode == 0
    url = opened.stdout.strip()
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/")
    status = projctl("server", "status", "--json")
    assert orjson.loads(status.stdout)["url"] == url.replace("http://", "ws://") + "ws"
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    assert http_get(port, "/")[0] == 200
    assert projctl("server", "stop").returncode == 0
    locked = projctl("open", "--no-browser", env={"PROJCTL_REQUIRE_TOKEN": "1"})
    assert "/#token=" in locked.stdout


def test_whoami_says_what_a_token_may_do_and_info_names_the_file(store: ProjectStore) -> None:
    """What the dashboard asks: whether its token may write (it shows write controls only
    then), and the database's name for its header (the file's name, never its folder)."""
    write, read = "w-" + "x" * 22, "r-" + "y" * 22

    async def scenario() -> None:
        async with serving(
            store, write_tokens=frozenset({write}), read_tokens=frozenset({read})
        ) as server:
            port = server.port
            answers = {
                name: await get(port, "/api/whoami", **headers)
                for name, headers in (
                    ("none", {}),
                    ("read", {"Authorization": f"Bearer {read}"}),
                    ("write", {"Authorization": f"Bearer {write}"}),
                    ("unknown", {"Authorization": "Bearer " + "z" * 24}),
                )
            }
            assert {name: (status, body) for name, (status, _, body) in answers.items()} == {
                "none": (200, {"may_read": False, "may_write": False}),
                "read": (200, {"may_read": True, "may_write": False}),
                "write": (200, {"may_read": True, "may_write": True}),
                "unknown": (200, {"may_read": False, "may_write": False}),
            }
            assert answers["none"][1]["cache-control"] == "no-store"
            status, _, info = await get(port, "/api/info", Authorization=f"Bearer {read}")
            assert status == 200
            assert info["database"]["name"] == store.path.name
            assert "/" not in info["database"]["name"]

    run(scenario())
