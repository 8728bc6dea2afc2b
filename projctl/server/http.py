"""HTTP: the routes (pages, ``/healthz``, ``/api``), their methods, CORS, JSON bodies and
errors, query parsing; and the checks of a WebSocket handshake (``/ws``).

A plain request comes in as an :class:`~projctl.server.connection.HttpRequest` (the
connection reads it with h11); a WebSocket upgrade goes through
:meth:`Routes.check_handshake`, websockets' ``process_request``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from projctl.errors import (
    AmbiguousReferenceError,
    CorruptDatabaseError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    NameTakenError,
    PreconditionFailedError,
    ProjctlError,
    ProjectNotFoundError,
    StoreError,
)
from projctl.events import dashboard_contract
from projctl.model import PROJECT_FIELDS, STATUSES, Project
from projctl.sequencer import Sequencer
from projctl.server.access import AccessPolicy, canonical_host
from projctl.server.connection import HttpRequest

log = logging.getLogger("projctl.server")

_MAX_SINCE_DIGITS = 19


def json_response(status: http.HTTPStatus, body: Any, *, encoded: bool = False) -> Response:
    """A JSON answer (``encoded``: ``body`` is JSON bytes already), never cached."""
    payload = body if encoded else orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, payload)


def problem(status: http.HTTPStatus, code: str, message: str, **extra: Any) -> Response:
    """An API error: ``{"error": code, "message": one line}``, codes stable for scripts
    (``docs/protocol.md`` lists them); ``extra`` adds what a client may need (the project
    looked for)."""
    return json_response(status, {"error": code, "message": message, **extra})


#: Each domain error as an answer: its status and stable code (most specific first).
_ERROR_ANSWERS: tuple[tuple[type[ProjctlError], http.HTTPStatus, str], ...] = (
    (IdempotencyKeyReusedError, http.HTTPStatus.UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
    (AmbiguousReferenceError, http.HTTPStatus.CONFLICT, "ambiguous"),
    (NameTakenError, http.HTTPStatus.CONFLICT, "name_taken"),
    (PreconditionFailedError, http.HTTPStatus.PRECONDITION_FAILED, "precondition_failed"),
    (ProjectNotFoundError, http.HTTPStatus.NOT_FOUND, "not_found"),
    (InvalidInputError, http.HTTPStatus.BAD_REQUEST, "invalid_input"),
    # A database that cannot be read as it is: a retry would find the same.
    (CorruptDatabaseError, http.HTTPStatus.INTERNAL_SERVER_ERROR, "store_error"),
    # Locked too long, or being replaced: a retry may well succeed.
    (StoreError, http.HTTPStatus.SERVICE_UNAVAILABLE, "store_error"),
)


def error_response(error: ProjctlError) -> Response:
    """A domain error as the API answers it: its status, stable code and message."""
    for kind, status, code in _ERROR_ANSWERS:
        if isinstance(error, kind):
            extra = {"project": error.project_id} if isinstance(error, ProjectNotFoundError) else {}
            response = problem(status, code, str(error), **extra)
            if status == http.HTTPStatus.SERVICE_UNAVAILABLE:
                response.headers["Retry-After"] = "1"
            return response
    log.error("a request failed: %s", error)
    return problem(http.HTTPStatus.INTERNAL_SERVER_ERROR, "server_error", str(error))


def _text_response(status: http.HTTPStatus, message: str) -> Response:
    body = f"{message}\n".encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


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
def _page_tag(name: str) -> str:
    """The entity tag of one of the dashboard's files (they change only with the package)."""
    return '"' + hashlib.sha256(_page(name)).hexdigest()[:32] + '"'


@functools.cache
def _page(name: str) -> bytes:
    body = (resources.files("projctl") / "dashboard" / name).read_bytes()
    if name == "index.html":
        # The page's contract (fields, statuses, event names, timings) is typed once, in
        # Python; "<" is escaped so that no value can ever close the page's <script> block.
        contract = dashboard_contract(project_fields=PROJECT_FIELDS, statuses=STATUSES)
        body = body.replace(b"@CONTRACT@", orjson.dumps(contract).replace(b"<", b"\\u003c"))
    return body


def _page_response(path: str, host: str | None, if_none_match: str | None = None) -> Response:
    """One of the dashboard's files, with headers that allow only its own origin.

    ``host`` is the request's ``Host`` as :func:`canonical_host` gives it (``None``: only
    ``'self'``), so nothing but a host name and port ever reaches the policy."""
    name, content_type = _PAGES[path]
    body = _page(name)
    tag = _page_tag(name)
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
            # Checked each time, answered 304 while unchanged: a reload costs no body.
            ("Cache-Control", "no-cache"),
            ("ETag", tag),
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
    )
    if if_none_match is not None and tag in (t.strip() for t in if_none_match.split(",")):
        del headers["Content-Length"]
        return Response(304, "Not Modified", headers, b"")
    return Response(200, "OK", headers, body)


def _parse_since(query: dict[str, list[str]]) -> int | None:
    """``?since=N`` as an int >= 0; ``ValueError`` with a message for anything else."""
    if "since" not in query:
        return None
    raw = query["since"][-1].strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_SINCE_DIGITS:
        raise ValueError(f"since must be a whole number >= 0, got {raw[:40]!r}")
    return int(raw)


class RepeatedHeaderError(ValueError):
    """A request repeats a header that must appear once (``Host``, ``Origin``, ...)."""


#: Headers a request may carry at most once: two would leave who is asking ambiguous.
_SINGLE_HEADERS = ("Host", "Origin", "Authorization", "Content-Type", "If-Match", "Idempotency-Key")


def single_headers(headers: Headers) -> dict[str, str | None]:
    """The value of each of :data:`_SINGLE_HEADERS` (``None`` when absent).

    Raises :class:`RepeatedHeaderError` naming the first one given twice.
    """
    values: dict[str, str | None] = {}
    for name in _SINGLE_HEADERS:
        given = headers.get_all(name)
        if len(given) > 1:
            raise RepeatedHeaderError(f"the {name} header is given {len(given)} times")
        values[name] = given[0] if given else None
    return values


class Handler(Protocol):
    """Answers one route's request; ``params`` holds what the path named (a project id)."""

    def __call__(self, request: HttpRequest, params: Mapping[str, str]) -> Awaitable[Response]: ...


@dataclass(frozen=True)
class Route:
    """One path's methods (``HEAD`` comes with ``GET``) and what answers them."""

    methods: Mapping[str, Handler]
    #: Whether its answers and errors are the API's JSON (else plain text, or a page).
    api: bool = True

    @property
    def allow(self) -> str:
        """The ``Allow`` header: every method the route answers."""
        names = list(self.methods)
        if "GET" in names:
            names.append("HEAD")
        return ", ".join([*names, "OPTIONS"])


#: What a browser's preflight may ask to send.
_CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-Match"
#: What a page may read of an answer, besides the simple headers.
_CORS_EXPOSED = (
    "ETag, Location, Retry-After, WWW-Authenticate, Projctl-Seq, Idempotent-Replayed, "
    "Projctl-Same-Name"
)
#: How long a browser may keep a preflight's answer, in seconds.
_CORS_MAX_AGE = "600"
#: Every way a reader can present a token, named by a 401.
_TOKEN_WAYS = (
    "present the token as Authorization: Bearer, as the WebSocket subprotocol "
    "projctl-token.<token>, or (a plain ws:// server only) as ?token="
)


class Routes:
    """Route each HTTP request: pages, ``/healthz``, the ``/api`` routes; and check each
    WebSocket handshake (``/ws``) before it goes on.

    Every route answers only its methods (any other: ``405`` with ``Allow``), ``HEAD``
    like ``GET``, and a CORS preflight (``OPTIONS``) for the origins the policy allows.
    Who may do what is the :class:`AccessPolicy`'s; the data comes from the sequencer and,
    for the projects, ``current_projects`` (the feed's shared read of the database);
    writes from ``write_routes`` (path -> methods), answered by the server's one write path.
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
        database_info: Callable[[], Awaitable[dict[str, Any]]],
        write_routes: Mapping[str, Mapping[str, Handler]] | None = None,
    ) -> None:
        self.access = access
        self.sequencer = sequencer
        self._current_projects = current_projects
        self._max_connections = max_connections
        self._open_connections = open_connections
        self._health = health
        self._public_health = public_health
        self._database_info = database_info
        writes = write_routes or {}
        page = Route({"GET": self._get_page}, api=False)
        self._routes: dict[str, Route] = {
            **dict.fromkeys(_PAGES, page),
            "/healthz": Route({"GET": self._get_health}),
            "/ws": Route({"GET": self._get_ws}, api=False),
            "/api/openapi.json": Route({"GET": self._get_openapi}),
            "/api/events": Route({"GET": self._get_events}),
            "/api/info": Route({"GET": self._get_info}),
            "/api/whoami": Route({"GET": self._get_whoami}),
            "/api/projects": Route({"GET": self._get_projects, **writes.get("/api/projects", {})}),
            "/api/projects/{id}": Route(
                {"GET": self._get_project, **writes.get("/api/projects/{id}", {})}
            ),
        }
        for path, methods in writes.items():
            if path not in self._routes:
                self._routes[path] = Route(dict(methods))

    def _match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route of ``path`` and what it names (``{"id": ...}``), ``None`` when none."""
        route = self._routes.get(path)
        if route is not None:
            return route, {}
        prefix = "/api/projects/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            project_id, _, tail = rest.partition("/")
            if project_id:
                pattern = "/api/projects/{id}" + (f"/{tail}" if tail else "")
                if "/" not in tail and pattern in self._routes:
                    return self._routes[pattern], {"id": unquote(project_id)}
        return None

    def is_trusted(self, connection: Any, request: Request | HttpRequest) -> bool:
        """Whether ``/healthz`` shows this client its detail: a token holder, or, when the
        server asks for no read token, a loopback client."""
        if isinstance(request, HttpRequest):
            peer = request.peer
        else:
            address = connection.remote_address
            peer = str(address[0]) if address else None
        return self.access.shows_health_detail(peer, self.presented_token(request))

    # -- plain HTTP ----------------------------------------------------------------

    async def answer(self, request: HttpRequest) -> Response:
        """Answer one plain HTTP request: its route, with the checks every route shares."""
        path = request.path
        api = path == "/api" or path.startswith("/api/") or path == "/healthz"
        try:
            single = single_headers(request.headers)
        except RepeatedHeaderError as error:
            return _refusal(api, http.HTTPStatus.BAD_REQUEST, "invalid_input", str(error))
        host, origin = single["Host"], single["Origin"]
        if not self.access.host_allowed(host):
            return _refusal(
                api,
                http.HTTPStatus.MISDIRECTED_REQUEST,
                "misdirected",
                "this server does not answer to that Host",
            )
        # Every other open connection counts, from its accept. /healthz is answered past
        # the cap, in a spare slot: monitoring must see a full server.
        if path != "/healthz" and self._open_connections() - 1 >= self._max_connections:
            response = _refusal(
                api,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "unavailable",
                "too many connections; try again later",
            )
            response.headers["Retry-After"] = "5"
            return response
        if not self.access.origin_allowed(origin, host):
            return _refusal(api, http.HTTPStatus.FORBIDDEN, "forbidden", "origin not allowed")
        matched = self._match(path)
        if matched is None:
            message = f"no such route {path}" if api else "not found; subscribe at /ws"
            return self._with_cors(
                _refusal(api, http.HTTPStatus.NOT_FOUND, "not_found", message), origin
            )
        route, params = matched
        method = "GET" if request.method == "HEAD" else request.method
        if method == "OPTIONS":
            return self._preflight(route, origin)
        handler = route.methods.get(method)
        if handler is None:
            response = _refusal(
                route.api,
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                "method_not_allowed",
                f"{request.method} is not allowed here; allowed: {route.allow}",
            )
            response.headers["Allow"] = route.allow
            return self._with_cors(response, origin)
        if self.access.token_in_url_refused(path, request.query):
            return self._with_cors(
                _refusal(
                    route.api,
                    http.HTTPStatus.BAD_REQUEST,
                    "invalid_input",
                    "a token never travels in a URL: send it as Authorization: Bearer",
                ),
                origin,
            )
        try:
            response = await handler(request, params)
        except ProjctlError as error:  # the database could not be read, for one
            response = error_response(error)
        return self._with_cors(response, origin)

    def _preflight(self, route: Route, origin: str | None) -> Response:
        """A CORS preflight: what a page at ``origin`` (allowed, or it would not be here)
        may send to this route."""
        response = Response(204, "No Content", Headers([("Allow", route.allow)]), b"")
        if origin is not None:
            response.headers["Access-Control-Allow-Methods"] = route.allow
            response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = _CORS_MAX_AGE
        return self._with_cors(response, origin)

    @staticmethod
    def _with_cors(response: Response, origin: str | None) -> Response:
        """Let the page at ``origin`` (the policy allowed it) read this answer, errors too."""
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
            response.headers["Vary"] = "Origin"
        return response

    def _unauthorized(self, api: bool) -> Response:
        response = _refusal(
            api,
            http.HTTPStatus.UNAUTHORIZED,
            "unauthorized",
            f"this server needs a read token: {_TOKEN_WAYS}",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
        return response

    async def _get_page(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        return _page_response(
            request.path,
            canonical_host(request.headers.get("Host")),
            request.headers.get("If-None-Match"),
        )

    async def _get_health(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        trusted = self.is_trusted(None, request)
        return json_response(
            http.HTTPStatus.OK, self._health() if trusted else self._public_health()
        )

    async def _get_openapi(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        """The OpenAPI document: public, like ``/healthz``'s short answer (it describes the
        API, and holds nothing of the database); revalidated with its ``ETag``."""
        from projctl.server import openapi

        tag = openapi.document_tag()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-cache"),
                ("ETag", tag),
                ("X-Content-Type-Options", "nosniff"),
            ]
        )
        given = request.headers.get("If-None-Match")
        if given is not None and tag in (t.strip() for t in given.split(",")):
            return Response(304, "Not Modified", headers, b"")
        body = openapi.document_bytes()
        headers["Content-Length"] = str(len(body))
        return Response(200, "OK", headers, body)

    async def _get_ws(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        """``GET /ws`` without an upgrade: what a WebSocket handshake would have been told,
        or that it must be one."""
        if not self.token_presented(request):
            return self._unauthorized(api=False)
        try:
            _parse_since(parse_qs(request.query, keep_blank_values=True))
        except ValueError as error:
            return _text_response(http.HTTPStatus.BAD_REQUEST, str(error))
        response = _text_response(
            http.HTTPStatus.UPGRADE_REQUIRED,
            "/ws is a WebSocket: connect with a WebSocket client (ws:// or wss://)",
        )
        response.headers["Upgrade"] = "websocket"
        response.headers["Connection"] = "Upgrade"
        return response

    # -- WebSocket handshakes ------------------------------------------------------

    async def check_handshake(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """websockets' ``process_request``: refuse a handshake (with the answer a plain
        request would get), or let it go on (``None``)."""
        url = urlsplit(request.path)
        try:
            single = single_headers(request.headers)
        except RepeatedHeaderError as error:
            return _text_response(http.HTTPStatus.BAD_REQUEST, str(error))
        host, origin = single["Host"], single["Origin"]
        if not self.access.host_allowed(host):
            return _text_response(
                http.HTTPStatus.MISDIRECTED_REQUEST, "this server does not answer to that Host"
            )
        if self._open_connections() - 1 >= self._max_connections:
            response = _text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later"
            )
            response.headers["Retry-After"] = "5"
            return response
        if not self.access.origin_allowed(origin, host):
            return _text_response(http.HTTPStatus.FORBIDDEN, "this origin is not allowed")
        if self.access.token_in_url_refused(url.path, url.query):
            return _text_response(
                http.HTTPStatus.BAD_REQUEST,
                "a token never travels in a URL: send it as Authorization: Bearer",
            )
        if url.path != "/ws":
            return _text_response(http.HTTPStatus.NOT_FOUND, "not found; subscribe at /ws")
        if not self.token_presented(request):
            return self._unauthorized(api=False)
        try:
            _parse_since(parse_qs(url.query, keep_blank_values=True))
        except ValueError as error:
            return _text_response(http.HTTPStatus.BAD_REQUEST, str(error))
        return None

    def token_presented(self, request: Request | HttpRequest) -> bool:
        """Whether a reader holds a token, if one is needed: as ``Authorization: Bearer``,
        (from a browser, which can set no header) as the WebSocket subprotocol
        ``projctl-token.<token>``, or as ``?token=`` on a plain server's ``/ws``."""
        return self.access.may_read(self.presented_token(request))

    def presented_token(self, request: Request | HttpRequest) -> str | None:
        """The server token a request carries, found in constant time (see
        :meth:`AccessPolicy.presented_token`); ``None`` when it carries none."""
        target = request.target if isinstance(request, HttpRequest) else request.path
        return self.access.presented_token(request.headers, target)

    # -- the read API --------------------------------------------------------------

    def _read_refused(self, request: HttpRequest) -> Response | None:
        """The read routes need what ``/ws`` needs (Host and Origin were checked)."""
        if not self.token_presented(request):
            return self._unauthorized(api=True)
        return None

    async def _get_events(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        refused = self._read_refused(request)
        if refused is not None:
            return refused
        sequencer = self.sequencer
        try:
            since = _parse_since(parse_qs(request.query)) or 0
        except ValueError as error:
            return problem(http.HTTPStatus.BAD_REQUEST, "invalid_input", str(error))
        if sequencer.can_replay(since):
            messages = [m for seq, m in sequencer.recent_after(since)]
            body = (
                b'{"events":['
                + b",".join(messages)
                + b'],"latest_seq":'
                + str(sequencer.last_seq).encode()
                + b',"resync":false}'
            )
            return json_response(http.HTTPStatus.OK, body, encoded=True)
        projects = await self._current_projects()
        return json_response(
            http.HTTPStatus.OK,
            {
                "events": [],
                "latest_seq": sequencer.last_seq,
                "resync": True,
                # From here on the events are kept: ?since=oldest_seq-1 replays them.
                "oldest_seq": sequencer.oldest_seq,
                "projects": projects,
            },
        )

    async def _get_info(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        refused = self._read_refused(request)
        if refused is not None:
            return refused
        return json_response(http.HTTPStatus.OK, await self._database_info())

    async def _get_whoami(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        """What the token presented (or none) may do: public, like ``/healthz``'s short
        answer (a read route's ``401`` would tell as much); the dashboard shows its write
        controls only to a token that may write."""
        token = self.presented_token(request)
        return json_response(
            http.HTTPStatus.OK,
            {"may_read": self.access.may_read(token), "may_write": self.access.may_write(token)},
        )

    async def _get_projects(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        refused = self._read_refused(request)
        if refused is not None:
            return refused
        query = parse_qs(request.query)
        projects = await self._current_projects()
        wanted = {
            field: set(query.get(name, []))
            for name, field in (("status", "status"), ("owner", "owner_id"), ("type", "type"))
        }
        chosen = [
            project
            for project in projects
            if all(not values or project.get(field) in values for field, values in wanted.items())
        ]
        return json_response(
            http.HTTPStatus.OK, {"seq": self.sequencer.last_seq, "projects": chosen}
        )

    async def _get_project(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        """One project, by its id or else its exact name (``409`` when several share it),
        with its ``ETag`` for a later ``If-Match``."""
        refused = self._read_refused(request)
        if refused is not None:
            return refused
        reference = params["id"]
        projects = await self._current_projects()
        found = [p for p in projects if p.get("project_id") == reference] or [
            p for p in projects if p.get("name") == reference
        ]
        if not found:
            return problem(
                http.HTTPStatus.NOT_FOUND,
                "not_found",
                f"no project with id or name {reference!r}",
                project=reference,
            )
        if len(found) > 1:
            ids = ", ".join(str(p.get("project_id")) for p in found)
            return problem(
                http.HTTPStatus.CONFLICT,
                "ambiguous",
                f"{len(found)} projects are named {reference!r}: {ids}; give one of these ids",
            )
        (record,) = found
        response = json_response(http.HTTPStatus.OK, record)
        with contextlib.suppress(KeyError, TypeError):
            response.headers["ETag"] = f'"{Project.from_dict(record).version_tag}"'
        return response


def _refusal(api: bool, status: http.HTTPStatus, code: str, message: str) -> Response:
    """A refusal in the route's own shape: the API's JSON error, or one line of text."""
    return problem(status, code, message) if api else _text_response(status, message)
