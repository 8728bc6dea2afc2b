"""The server's HTTP/1.1: methods and 405, HEAD, CORS preflight, kept connections, bodies,
repeated headers, and the hand-over of a WebSocket upgrade to websockets."""

from __future__ import annotations

import asyncio
import http.client
import socket
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from projctl.server.connection import MAX_REQUEST_BODY
from projctl.store import ProjectStore

from .test_server import run, serving, ws_url

PAGE_ORIGIN = "https://dashboard.example"


def exchange(port: int, requests: list[tuple[str, str, dict[str, str], bytes]]) -> list[Any]:
    """Send each ``(method, path, headers, body)`` on ONE kept connection; the answers as
    ``(status, headers, body)``, headers as an ``http.client.HTTPMessage``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    answers = []
    try:
        for method, path, headers, body in requests:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            answers.append((response.status, response.headers, response.read()))
    finally:
        connection.close()
    return answers


def one(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return exchange(port, [(method, path, headers or {}, b"")])[0]


def raw(port: int, request: bytes) -> bytes:
    """Send bytes as they are; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def in_thread(function: Any, *args: Any) -> Any:
    return asyncio.to_thread(function, *args)


def test_one_connection_carries_many_requests_and_every_answer_is_dated(
    store: ProjectStore,
) -> None:
    """The dashboard's page, style sheet and modules come over one kept connection."""

    async def scenario() -> None:
        async with serving(store) as server:
            paths = ["/", "/dashboard.css", "/dashboard.js", "/healthz", "/api/projects"]
            answers = await in_thread(
                exchange, server.port, [("GET", path, {}, b"") for path in paths]
            )
            assert [status for status, _, _ in answers] == [200] * len(paths)
            for _, headers, _ in answers:
                assert headers["Date"].endswith(" GMT")
                assert headers.get("Connection") != "close"

    run(scenario())


def test_a_page_asked_again_with_its_etag_is_not_sent_again(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            status, headers, body = await in_thread(one, server.port, "GET", "/dashboard.js")
            assert (status, bool(body)) == (200, True)
            tag = headers["ETag"]
            again = await in_thread(
                one, server.port, "GET", "/dashboard.js", {"If-None-Match": tag}
            )
            assert (again[0], again[2]) == (304, b"")

    run(scenario())


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/", "GET, HEAD, OPTIONS"),
        ("/api/events", "GET, HEAD, OPTIONS"),
    ],
)
@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "POST"])
def test_a_route_answers_only_its_methods(
    store: ProjectStore, path: str, allowed: str, method: str
) -> None:
    """Routing used to look at the path only: DELETE /healthz was answered as a GET."""

    async def scenario() -> None:
        async with serving(store) as server:
            status, headers, body = await in_thread(one, server.port, method, path)
            assert status == 405
            assert headers["Allow"] == allowed
            assert method.encode() in body

    run(scenario())


def test_head_has_the_headers_of_get_and_no_body(store: ProjectStore) -> None:
    store.create("x")

    async def scenario() -> None:
        async with serving(store) as server:
            get, head = await in_thread(
                exchange,
                server.port,
                [("GET", "/api/projects", {}, b""), ("HEAD", "/api/projects", {}, b"")],
            )
            assert get[0] == head[0] == 200
            assert head[2] == b""
            assert head[1]["Content-Length"] == str(len(get[2]))
            assert head[1]["Content-Type"] == "application/json"
            # The kept connection is still in step: a request after the HEAD is answered.
            after = await in_thread(
                exchange,
                server.port,
                [("HEAD", "/", {}, b""), ("GET", "/healthz", {}, b"")],
            )
            assert [a[0] for a in after] == [200, 200]
            assert orjson.loads(after[1][2])["status"] == "ok"

    run(scenario())


def test_unknown_api_paths_answer_with_the_json_error_shape(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            for path in ("/api", "/api/", "/api/nothing", "/api/projects/x/y/z"):
                status, headers, body = await in_thread(one, server.port, "GET", path)
                assert status == 404, path
                assert headers["Content-Type"] == "application/json"
                assert orjson.loads(body)["error"] == "not_found"

    run(scenario())


def test_a_cors_preflight_is_answered_for_an_allowed_origin_only(store: ProjectStore) -> None:
    """A preflight used to run the GET route: 401 with no Access-Control-Allow-Origin, so a
    page on an allowed origin could never send Authorization."""

    async def scenario() -> None:
        async with serving(
            store,
            allow_origins=(PAGE_ORIGIN,),
            read_tokens=frozenset({"r3ad"}),
        ) as server:
            ask = {
                "Origin": PAGE_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            }
            status, headers, body = await in_thread(
                one, server.port, "OPTIONS", "/api/projects", ask
            )
            assert status == 204
            assert body == b""
            assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
            assert "GET" in headers["Access-Control-Allow-Methods"]
            assert "Authorization" in headers["Access-Control-Allow-Headers"]
            # An error to an allowed origin is readable by its page.
            status, headers, body = await in_thread(
                one, server.port, "GET", "/api/projects", {"Origin": PAGE_ORIGIN}
            )
            assert status == 401
            assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
            # Another origin gets nothing it could use.
            status, headers, _ = await in_thread(
                one,
                server.port,
                "OPTIONS",
                "/api/projects",
                {**ask, "Origin": "https://evil.example"},
            )
            assert status == 403
            assert "Access-Control-Allow-Origin" not in headers

    run(scenario())


@pytest.mark.parametrize("name", ["Host", "Origin", "Authorization"])
def test_a_repeated_identity_header_is_a_bad_request(store: ProjectStore, name: str) -> None:
    """Two Host, Origin or Authorization lines used to be a 500 and a traceback in the log."""
    values = {
        "Host": ("127.0.0.1", "localhost"),
        "Origin": ("http://127.0.0.1", "http://localhost"),
        "Authorization": ("Bearer a", "Bearer b"),
    }[name]

    async def scenario() -> None:
        async with serving(store) as server:
            lines = [f"{name}: {value}" for value in values]
            if name != "Host":
                lines.append("Host: 127.0.0.1")
            for path, upgrade in (("/healthz", []), ("/ws", _UPGRADE)):
                request = "\r\n".join(
                    [f"GET {path} HTTP/1.1", *lines, *upgrade, "Connection: close"]
                )
                answer = await in_thread(raw, server.port, (request + "\r\n\r\n").encode())
                assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
                assert name.encode() in answer

    run(scenario())


_UPGRADE = [
    "Upgrade: websocket",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
]


def test_two_subprotocol_lines_complete_the_handshake(store: ProjectStore) -> None:
    """Several Sec-WebSocket-Protocol lines are legal; their values combine."""

    async def scenario() -> None:
        async with serving(store, read_tokens=frozenset({"r3ad"})) as server:
            request = "\r\n".join(
                [
                    "GET /ws HTTP/1.1",
                    "Host: 127.0.0.1",
                    "Connection: Upgrade",
                    *_UPGRADE,
                    "Sec-WebSocket-Protocol: projctl",
                    "Sec-WebSocket-Protocol: projctl-token.r3ad",
                ]
            )

            def handshake() -> bytes:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    sock.sendall((request + "\r\n\r\n").encode())
                    return sock.recv(4096)

            answer = await asyncio.to_thread(handshake)
            assert answer.startswith(b"HTTP/1.1 101"), answer[:200]

    run(scenario())


def test_the_ws_401_names_every_way_to_present_a_token(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, read_tokens=frozenset({"r3ad"})) as server:
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(server))
            response = refused.value.response
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="projctl"'
            for way in (b"Authorization: Bearer", b"projctl-token.", b"?token="):
                assert way in response.body
            # A plain GET of /ws says the same, and that it wants an upgrade once allowed.
            status, headers, _ = await in_thread(one, server.port, "GET", "/ws")
            assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="projctl"')
            status, headers, _ = await in_thread(
                one, server.port, "GET", "/ws", {"Authorization": "Bearer r3ad"}
            )
            assert (status, headers["Upgrade"]) == (426, "websocket")

    run(scenario())


def test_a_body_too_large_is_refused_before_it_is_read(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            request = (
                "POST /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {MAX_REQUEST_BODY + 1}\r\n\r\n"
            ).encode()
            answer = await in_thread(raw, server.port, request)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    run(scenario())


def test_a_malformed_request_gets_400_and_the_server_goes_on(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            answer = await in_thread(raw, server.port, b"NOT HTTP AT ALL\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
            status, _, _ = await in_thread(one, server.port, "GET", "/healthz")
            assert status == 200

    run(scenario())


def test_a_kept_connection_idle_too_long_is_closed(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, handshake_timeout=0.5) as server:

            def idle() -> bytes:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(65536):  # ends when the server closes
                        answer += chunk
                    return answer

            answer = await asyncio.wait_for(in_thread(idle), 5)
            assert answer.startswith(b"HTTP/1.1 200")
            assert len(server._accepted) == 0

    run(scenario())
