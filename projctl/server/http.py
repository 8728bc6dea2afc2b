"""HTTP: the routes (pages, ``/healthz``, ``/api``), JSON bodies and errors, query parsing."""

from __future__ import annotations

import functools
import http
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from projctl import remote
from projctl.events import dashboard_contract
from projctl.model import PROJECT_FIELDS, STATUSES
from projctl.sequencer import Sequencer
from projctl.server.access import AccessPolicy, canonical_host

_MAX_SINCE_DIGITS = 19


def _json_response(status: http.HTTPStatus, body: Any, *, encoded: bool = False) -> Response:
    payload = body if encoded else orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, payload)


def _api_error(status: http.HTTPStatus, code: str, message: str) -> Response:
    """An API error: ``{"error": code, "message": one line}``, codes stable for scripts."""
    return _json_response(status, {"error": code, "message": message})


#: The dashboard's files (package data in ``projctl/dashboard``), by the path they are served at:
#: the page, its style sheet and each of its ES modules (every ``*.js`` there), nothing else.
_PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    **{
        f"/{file.name}": (file.name, "text/javascript; charset=utf-8")
        for file in (resources.files("projctl") / "dashboard").iterdir()
        if file.name.endswith(".js") and file.is_file()
    },
}


@functools.cache
def _page(name: str) -> bytes:
    body = (resources.files("projctl") / "dashboard" / name).read_bytes()
    if name == "index.html":
        # The page's contract (fields, statuses, event names, timings) is typed once, in
        # Python; "<" is escaped so that no value can ever close the page's <script> block.
        contract = dashboard_contract(project_fields=PROJECT_FIELDS, statuses=STATUSES)
        body = body.replace(b"@CONTRACT@", orjson.dumps(contract).replace(b"<", b"\\u003c"))
    return body


def _page_response(path: str, host: str | None) -> Response:
    """One of the dashboard's files, with headers that allow only its own origin.

    ``host`` is the request's ``Host`` as :func:`canonical_host` gives it (``None``: only
    ``'self'``), so nothing but a host name and port ever reaches the policy."""
    name, content_type = _PAGES[path]
    body = _page(name)
    # 'self' covers ws:// and wss:// of the page's own host in current browsers; the
    # explicit sources keep older ones working.
    sockets = f" ws://{host} wss://{host}" if host is not None and canonical_host(host) else ""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Connection", "close"),
        ]
    )
    return Response(200, "OK", headers, body)


def _parse_since(query: dict[str, list[str]]) -> int | None:
    """``?since=N`` as an int >= 0; ``ValueError`` with a message for anything else."""
    if "since" not in query:
        return None
    raw = query["since"][-1].strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_SINCE_DIGITS:
        raise ValueError(f"since must be a whole number >= 0, got {raw[:40]!r}")
    return int(raw)


class Routes:
    """Route each HTTP request: pages, ``/healthz``, the read-only ``/api``; and check each
    WebSocket handshake (``/ws``, ``/rpc``) before it goes on.

    Who may do what is the :class:`AccessPolicy`'s; the data comes from the sequencer and,
    for the projects, ``current_projects`` (the feed's shared read of the database).
    """

    def __init__(
        self,
        access: AccessPolicy,
        sequencer: Sequencer,
        *,
        current_projects: Callable[[], Awaitable[list[dict[str, Any]]]],
        max_connections: int,
        open_connections: Callable[[], int],
        health: Callable[[], dict[str, Any]],
        public_health: Callable[[], dict[str, Any]],
    ) -> None:
        self.access = access
        self.sequencer = sequencer
        self._current_projects = current_projects
        self._max_connections = max_connections
        self._open_connections = open_connections
        self._health = health
        self._public_health = public_health

    def is_trusted(self, connection: ServerConnection, request: Request) -> bool:
        """Whether ``/healthz`` shows this client its detail: a token holder, or, when the
        server asks for no read token, a loopback client."""
        address = connection.remote_address
        peer = str(address[0]) if address else None
        return self.access.shows_health_detail(peer, self.presented_token(request))

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Route one request: answer HTTP ones here, let WebSocket handshakes go on (``None``)."""
        if not self.access.host_allowed(request.headers.get("Host")):
            return connection.respond(
                http.HTTPStatus.MISDIRECTED_REQUEST, "this server does not answer to that Host\n"
            )
        url = urlsplit(request.path)
        # Every other open connection counts, from its accept (its handshake too). /healthz
        # is answered past the cap, in a spare slot: monitoring must see a full server.
        if url.path != "/healthz" and self._open_connections() - 1 >= self._max_connections:
            response = connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later\n"
            )
            response.headers["Retry-After"] = "5"
            return response
        if not self.access.origin_allowed(
            request.headers.get("Origin"), request.headers.get("Host")
        ):
            if url.path.startswith("/api/"):
                return _api_error(http.HTTPStatus.FORBIDDEN, "forbidden", "origin not allowed")
            return connection.respond(http.HTTPStatus.FORBIDDEN, "this origin is not allowed\n")
        if self.access.token_in_url_refused(url.path, url.query):
            message = "a token never travels in a URL: send it as Authorization: Bearer"
            if url.path.startswith("/api/"):
                return _api_error(http.HTTPStatus.BAD_REQUEST, "invalid_input", message)
            return connection.respond(http.HTTPStatus.BAD_REQUEST, message + "\n")
        if url.path == "/healthz":
            trusted = self.is_trusted(connection, request)
            return _json_response(
                http.HTTPStatus.OK, self._health() if trusted else self._public_health()
            )
        if url.path in _PAGES:
            return _page_response(url.path, canonical_host(request.headers.get("Host")))
        if url.path.startswith("/api/"):
            return await self._answer_api(request, url.path, parse_qs(url.query))
        if url.path == remote.RPC_PATH:
            if self.presented_token(request) is None:
                response = connection.respond(
                    http.HTTPStatus.UNAUTHORIZED, "the team protocol needs a read or write token\n"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
                return response
            return None
        if url.path != "/ws":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found; subscribe at /ws\n")
        query = parse_qs(url.query, keep_blank_values=True)
        if not self.token_presented(request):
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                "subscribing needs the token: ?token= or the projctl-token subprotocol\n",
            )
        try:
            _parse_since(query)
        except ValueError as error:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{error}\n")
        return None

    def token_presented(self, request: Request) -> bool:
        """Whether a reader holds a token, if one is needed: as ``Authorization: Bearer``,
        (from a browser, which can set no header) as the WebSocket subprotocol
        ``projctl-token.<token>``, or as ``?token=`` on a plain server's ``/ws``."""
        return self.access.may_read(self.presented_token(request))

    def presented_token(self, request: Request) -> str | None:
        """The server token a request carries, found in constant time (see
        :meth:`AccessPolicy.presented_token`); ``None`` when it carries none."""
        return self.access.presented_token(request.headers, request.path)

    async def _answer_api(
        self, request: Request, path: str, query: dict[str, list[str]]
    ) -> Response:
        """The read-only HTTP API: the same data, Host, Origin and token rules as ``/ws``
        (Host and Origin are checked for every route before this)."""
        origin = request.headers.get("Origin")
        if not self.token_presented(request):
            response = _api_error(
                http.HTTPStatus.UNAUTHORIZED,
                "unauthorized",
                "this server needs the subscriber token (Authorization: Bearer ...)",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
            return response
        response = await self._api_route(path, query)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    async def _api_route(self, path: str, query: dict[str, list[str]]) -> Response:
        sequencer = self.sequencer
        if path == "/api/events":
            try:
                since = _parse_since(query) or 0
            except ValueError as error:
                return _api_error(http.HTTPStatus.BAD_REQUEST, "invalid_input", str(error))
            if sequencer.can_replay(since):
                messages = [m for seq, m in sequencer.recent_after(since)]
                body = (
                    b'{"events":['
                    + b",".join(messages)
                    + b'],"latest_seq":'
                    + str(sequencer.last_seq).encode()
                    + b',"resync":false}'
                )
                return _json_response(http.HTTPStatus.OK, body, encoded=True)
            projects = await self._current_projects()
            return _json_response(
                http.HTTPStatus.OK,
                {
                    "events": [],
                    "latest_seq": sequencer.last_seq,
                    "resync": True,
                    "projects": projects,
                },
            )
        if path == "/api/projects":
            projects = await self._current_projects()
            wanted = {
                field: set(query.get(name, []))
                for name, field in (("status", "status"), ("owner", "owner_id"), ("type", "type"))
            }
            chosen = [
                project
                for project in projects
                if all(
                    not values or project.get(field) in values for field, values in wanted.items()
                )
            ]
            return _json_response(
                http.HTTPStatus.OK, {"seq": sequencer.last_seq, "projects": chosen}
            )
        prefix = "/api/projects/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            project_id = unquote(path[len(prefix) :])
            for project in await self._current_projects():
                if project.get("project_id") == project_id:
                    return _json_response(http.HTTPStatus.OK, project)
            return _api_error(
                http.HTTPStatus.NOT_FOUND, "not_found", f"no project with id {project_id!r}"
            )
        return _api_error(http.HTTPStatus.NOT_FOUND, "not_found", f"no such route {path}")
