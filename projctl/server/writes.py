"""The one write path: the REST routes that change projects, with their rules.

``POST /api/projects`` creates, ``PUT`` or ``PATCH /api/projects/{ref}`` updates (a
partial body, as the backend this contract comes from took it), ``DELETE
/api/projects/{ref}`` deletes one project and ``DELETE /api/projects?project_id=A&...``
several, all or none. Every write

- needs a write token (``Authorization: Bearer``): none is ``401``, a read token ``403``;
- takes ``application/json`` only (``415`` before the body is looked at: a page's form
  post, which needs no preflight, never reaches the database);
- refuses unknown fields by name, and takes the original backend's ``project_type`` for
  ``type``;
- may carry ``Idempotency-Key`` (the IETF httpapi draft): the key is recorded with the
  write, in the database, so the same request again, even after a restart, gets the first
  answer and writes nothing; the key with another request is ``422``, and with a request
  still being carried out ``409``;
- may carry ``If-Match`` with the project's ``ETag``: ``412`` when it changed since.

Writes are committed one at a time, in a thread; each committed event goes to
``accept`` (the feed) before the answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from websockets.http11 import Response

from projctl import config, events
from projctl.backend import (
    Change,
    Create,
    Delete,
    Emit,
    FileVersion,
    Update,
    Write,
    check_idempotency_key,
    write_fingerprint,
)
from projctl.errors import InvalidInputError, ProjctlError
from projctl.events import Event
from projctl.model import EDITABLE_FIELDS, Project
from projctl.server.access import AccessPolicy
from projctl.server.connection import HttpRequest
from projctl.server.http import Handler, error_response, json_response, problem

__all__ = ["Committer", "RestWrites", "entity_tag"]

log = logging.getLogger("projctl.server")

#: The original backend's name for ``type``, taken as it is.
_ORIGINAL_NAMES = {"project_type": "type"}
#: How long a stopping server waits for the writes begun to be answered (a write may wait
#: 10 s for the database lock).
_FINISH_TIMEOUT = 15.0


class Committer(Protocol):
    """What the write path needs of the storage: a :class:`~projctl.backend.Backend`'s
    ``commit``, which resolves the projects a write names (an id, or an exact name)."""

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]: ...


class RestWrites:
    """Answers the write routes against ``storage``: what a write commits goes to
    ``accept`` (the feed); ``access`` says who may write; ``default_owner`` owns a project
    created without one."""

    def __init__(
        self,
        storage: Committer,
        access: AccessPolicy,
        *,
        accept: Callable[[Event, FileVersion | None, tuple[int, int] | None], None],
        default_owner: str | None = None,
    ) -> None:
        self.storage = storage
        self.access = access
        self._accept = accept
        self._default_owner = default_owner
        self._turn = asyncio.Lock()
        #: Idempotency keys whose write is being carried out, with its fingerprint.
        self._in_progress: dict[str, str] = {}
        self._begun = 0
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._stopping = False

    def routes(self) -> dict[str, dict[str, Handler]]:
        """The write routes, by path pattern and method (see :class:`~.http.Routes`)."""
        return {
            "/api/projects": {"POST": self.create, "DELETE": self.delete_several},
            "/api/projects/{id}": {
                "PUT": self.update,
                "PATCH": self.update,
                "DELETE": self.delete,
            },
            "/api/projects/{id}/events": {"POST": self.emit},
        }

    async def finish(self) -> None:
        """Before a stopping server closes its connections: begin no more writes, and let
        those begun be answered, so that no write is applied unanswered."""
        self._stopping = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), _FINISH_TIMEOUT)

    # -- the routes ------------------------------------------------------------------

    async def create(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        def build(body: dict[str, Any]) -> Write:
            fields = _fields(body, required=("name",))
            owner = fields.pop("owner_id") if "owner_id" in fields else self._owner()
            return Create(fields.pop("name"), owner, unique=_unique(request), **fields)

        return await self._write(request, build, _created)

    async def update(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        reference = params["id"]

        def build(body: dict[str, Any]) -> Write:
            fields = _fields(body, required=())
            if not fields:
                raise InvalidInputError(
                    f"nothing to update: give at least one of {', '.join(EDITABLE_FIELDS)}"
                )
            return Update(reference, fields, if_match=_if_match(request), unique=_unique(request))

        return await self._write(request, build, _updated)

    async def delete(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        reference = params["id"]

        def build(body: dict[str, Any]) -> Write:
            return Delete((reference,), if_match=_if_match(request))

        return await self._write(request, build, _deleted_one, body_allowed=False)

    async def emit(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        """Record an event about the project: ``{"event_type": ..., "data": {...}}``."""
        reference = params["id"]

        def build(body: dict[str, Any]) -> Write:
            unknown = sorted(set(body) - {"event_type", "data"})
            if unknown:
                raise InvalidInputError(
                    f"unknown field{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; an event has event_type and data"
                )
            kind = body.get("event_type")
            if not isinstance(kind, str):
                raise InvalidInputError("event_type is required, a string")
            data = body.get("data", {})
            if not isinstance(data, dict):
                raise InvalidInputError("data must be a JSON object")
            return Emit(
                reference, events.validate_event_type(kind), events.validate_emit_data(data)
            )

        return await self._write(request, build, _emitted)

    async def delete_several(self, request: HttpRequest, params: Mapping[str, str]) -> Response:
        query = parse_qs(request.query, keep_blank_values=True)

        def build(body: dict[str, Any]) -> Write:
            references = query.get("project_id", [])
            if not references:
                raise InvalidInputError("name the projects to delete: ?project_id=A&project_id=B")
            missing_ok = _query_flag(query, "missing_ok")
            return Delete(tuple(references), missing_ok=missing_ok, if_match=_if_match(request))

        return await self._write(request, build, _deleted_several, body_allowed=False)

    # -- the one write path ------------------------------------------------------------

    def _owner(self) -> str:
        return self._default_owner or config.login_name()

    async def _write(
        self,
        request: HttpRequest,
        build: Callable[[dict[str, Any]], Write],
        respond: Callable[[list[Change]], Response],
        *,
        body_allowed: bool = True,
    ) -> Response:
        refused = self._refused(request, body_allowed=body_allowed)
        if refused is not None:
            return refused
        try:
            key = _idempotency_key(request)
            body = _json_body(request) if body_allowed else {}
        except InvalidInputError as error:
            return problem(http.HTTPStatus.BAD_REQUEST, "invalid_input", str(error))
        if self._stopping:
            return _unavailable()
        self._begun += 1
        self._all_answered.clear()
        try:
            return await self._carry_out(build, body, key, respond)
        finally:
            self._begun -= 1
            if not self._begun:
                self._all_answered.set()

    async def _carry_out(
        self,
        build: Callable[[dict[str, Any]], Write],
        body: dict[str, Any],
        key: str | None,
        respond: Callable[[list[Change]], Response],
    ) -> Response:
        fingerprint = None
        try:
            async with self._turn:
                write = build(body)
                if key is not None:
                    fingerprint = write_fingerprint(write)
                    if key in self._in_progress:
                        return _key_in_use(key)
                    self._in_progress[key] = fingerprint
                changes = await asyncio.to_thread(self.storage.commit, write, idempotency_key=key)
        except ProjctlError as error:
            return error_response(error)
        finally:
            if key is not None and self._in_progress.get(key) == fingerprint:
                self._in_progress.pop(key, None)
        for change in changes:
            if change.event is not None and not change.replayed:
                self._accept(change.event, change.version, change.restore)
        response = respond(changes)
        seqs = [str(change.event["seq"]) for change in changes if change.event is not None]
        if seqs:
            # Where the write is on the feed: /ws?since=<first - 1> sees it happen.
            response.headers["Projctl-Seq"] = ", ".join(seqs)
        if changes and all(change.replayed for change in changes):
            response.headers["Idempotent-Replayed"] = "true"
        return response

    def _refused(self, request: HttpRequest, *, body_allowed: bool) -> Response | None:
        """Who may write, and in what form (checked before the body is parsed)."""
        token = self.access.presented_token(request.headers, request.target)
        if token is None:
            response = problem(
                http.HTTPStatus.UNAUTHORIZED,
                "unauthorized",
                "a write needs the server's write token, as Authorization: Bearer <token>",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
            return response
        if not self.access.may_write(token):
            return problem(http.HTTPStatus.FORBIDDEN, "forbidden", "this token may only read")
        if body_allowed:
            kind = (request.headers.get("Content-Type") or "").partition(";")[0].strip()
            if kind.lower() != "application/json":
                return problem(
                    http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    f"a write's body is application/json, not {kind or 'nothing'}",
                )
        return None


# -- request parts -----------------------------------------------------------------------


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    return body


def _fields(body: dict[str, Any], *, required: tuple[str, ...]) -> dict[str, str]:
    """A body's project fields, by their names here; unknown ones are refused by name."""
    fields: dict[str, str] = {}
    unknown = []
    for name, value in body.items():
        field = _ORIGINAL_NAMES.get(name, name)
        if field not in EDITABLE_FIELDS:
            unknown.append(name)
            continue
        if not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a string, not {type(value).__name__}")
        if field in fields and fields[field] != value:
            raise InvalidInputError(f"{name} and {field} are given with different values")
        fields[field] = value
    if unknown:
        raise InvalidInputError(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"a project has {', '.join(EDITABLE_FIELDS)} (project_type is taken for type)"
        )
    for name in required:
        if name not in fields:
            raise InvalidInputError(f"{name} is required")
    return fields


def _idempotency_key(request: HttpRequest) -> str | None:
    """The ``Idempotency-Key`` header (a structured-field string, quotes optional)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return check_idempotency_key(key)


def _query_flag(query: Mapping[str, list[str]], name: str) -> bool:
    """A boolean query parameter: set by ``1``, ``true`` or ``yes`` (its last value)."""
    return query.get(name, ["0"])[-1].lower() in ("1", "true", "yes")


def _unique(request: HttpRequest) -> bool:
    """``?unique=true``: a name another project has is refused (``name_taken``)."""
    return _query_flag(parse_qs(request.query, keep_blank_values=True), "unique")


def _if_match(request: HttpRequest) -> str | None:
    """The one entity tag of ``If-Match`` (``*``: any version), without its quotes."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    tag = raw.strip()
    if tag == "*":
        return tag
    if "," in tag:
        raise InvalidInputError("If-Match takes one entity tag (the project's ETag)")
    if tag.startswith("W/"):
        return "W/"  # a weak tag never matches strongly: the change is refused (412)
    return tag.strip('"')


# -- answers -----------------------------------------------------------------------------


def entity_tag(project: Project) -> str:
    """The ``ETag`` header of a project."""
    return f'"{project.version_tag}"'


def _project_response(status: http.HTTPStatus, body: Any, change: Change) -> Response:
    response = json_response(status, body)
    response.headers["ETag"] = entity_tag(change.project)
    if change.same_name:
        response.headers["Projctl-Same-Name"] = ", ".join(change.same_name)
    return response


def _created(changes: list[Change]) -> Response:
    (change,) = changes
    response = _project_response(http.HTTPStatus.CREATED, change.project.to_dict(), change)
    response.headers["Location"] = f"/api/projects/{change.project.project_id}"
    return response


def _updated(changes: list[Change]) -> Response:
    (change,) = changes
    body = {"project": change.project.to_dict(), "updated_fields": list(change.updated_fields)}
    return _project_response(http.HTTPStatus.OK, body, change)


def _emitted(changes: list[Change]) -> Response:
    (change,) = changes
    body = {"event": change.event, "project": change.project.to_dict()}
    return json_response(http.HTTPStatus.CREATED, body)


def _deletion(change: Change) -> dict[str, Any]:
    """What a deletion answers: the contract's three keys, then the project as it was and
    its event's seq and time."""
    assert change.event is not None  # a deletion always has its event
    return {
        "project_id": change.project.project_id,
        "name": change.project.name,
        "deleted": True,
        "project": change.project.to_dict(),
        "seq": change.event["seq"],
        "timestamp": change.event["timestamp"],
    }


def _deleted_one(changes: list[Change]) -> Response:
    (change,) = changes
    return json_response(http.HTTPStatus.OK, _deletion(change))


def _deleted_several(changes: list[Change]) -> Response:
    return json_response(http.HTTPStatus.OK, {"deleted": [_deletion(c) for c in changes]})


def _key_in_use(key: str) -> Response:
    response = problem(
        http.HTTPStatus.CONFLICT,
        "idempotency_key_in_use",
        f"a request with Idempotency-Key {key!r} is still being carried out; retry shortly",
    )
    response.headers["Retry-After"] = "1"
    return response


def _unavailable() -> Response:
    response = problem(
        http.HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "the server is stopping; retry"
    )
    response.headers["Retry-After"] = "1"
    return response
