"""The team protocol: projctl commands run against a server on another machine.

One authenticated WebSocket endpoint, ``/rpc``, carries JSON requests and replies
(``docs/protocol.md`` is the reference for other languages)::

    {"id": "4f1c...", "op": "create", "args": {"name": "Billing API", "owner_id": "ann"}}
    {"id": "4f1c...", "ok": true, "result": {"project": {...}, "event": {...}, ...}}
    {"id": "4f1c...", "ok": false, "error": {"code": "not_found", "message": "..."}}

The ``id`` is chosen by the client, and for a write it is also the idempotency key: a
retry after a lost reply (same ``id``) gets the first result, and the change is never
applied twice. Reads need a read or a write token, writes a write token.

This module owns the contract (op names, error codes, limits), the answering of one
request against a store (:func:`answer`, run by the server in a thread), and the
client, :class:`RemoteBackend`: the storage :class:`projctl.Database` uses when
``PROJCTL_URL`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from projctl import events
from projctl.backend import Change, Create, Delete, Update, Write
from projctl.config import Settings
from projctl.errors import (
    InvalidInputError,
    ProjctlError,
    ProjectNotFoundError,
    ServerError,
    StoreError,
)
from projctl.events import Event
from projctl.model import Project
from projctl.runtime import Endpoint

__all__ = [
    "ERROR_CLASSES",
    "MAX_REQUEST",
    "READ_OPS",
    "RPC_PATH",
    "RPC_WINDOW",
    "RPC_WINDOW_BYTES",
    "WRITE_OPS",
    "Answer",
    "RemoteBackend",
    "answer",
    "busy_reply",
    "error_reply",
]

log = logging.getLogger("projctl.remote")

#: The WebSocket path of the protocol.
RPC_PATH = "/rpc"
READ_OPS = frozenset({"get", "list", "resolve", "info", "journal"})
WRITE_OPS = frozenset({"create", "update", "delete"})
#: Error codes, stable for scripts and other languages, and the domain error each one raises
#: in the client (the CLI alone turns errors into exit codes).
ERROR_CLASSES: dict[str, type[ProjctlError]] = {
    "invalid_input": InvalidInputError,
    "not_found": ProjectNotFoundError,
    "store_error": StoreError,
    "forbidden": ServerError,
    "unknown_op": InvalidInputError,
    "bad_request": InvalidInputError,
    "busy": ServerError,
    "server_error": ServerError,
}
#: How the client words an error whose message alone would not say where it came from.
_CLIENT_WORDING = {
    "bad_request": "the server could not take the request: {message}",
    "unknown_op": "the server could not take the request: {message}",
    "server_error": "the server failed: {message}",
    "busy": "the server is busy: {message}",
}
#: The largest request: a create with a 10,000-character description fits many times.
MAX_REQUEST = 256 * 1024
#: Requests one connection may have received and not yet had answered (pipelining), and
#: their size at most (characters of text frames, bytes of binary ones; the first request
#: always fits); one beyond them is not carried out and gets a ``busy`` reply at once.
RPC_WINDOW = 64
RPC_WINDOW_BYTES = 1 << 20
#: Retries of one request on a dropped connection (the same id each time), and the first
#: pause (each next one three times longer).
RETRIES = 3
RETRY_FIRST = 0.1
_ID_MAX = 128


class StateRead(Protocol):
    """One consistent read of a database that a server shares between readers."""

    @property
    def journal(self) -> list[Event]: ...
    @property
    def latest_seq(self) -> int: ...
    @property
    def database_id(self) -> str: ...
    @property
    def project_records(self) -> list[dict[str, Any]]: ...
    @property
    def journal_limit(self) -> int: ...


class Answering(Protocol):
    """What :func:`answer` needs of a storage: the backend's writes and reads, and one
    consistent read of everything (``info``)."""

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]: ...
    def resolve(self, reference: str) -> str: ...
    def get(self, project_id: str) -> Project: ...
    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]: ...
    def journal(self, after: int = 0) -> list[Event]: ...
    def read_state(self) -> StateRead: ...


@dataclass(frozen=True)
class Answer:
    """One reply, and the events its change committed (for the server to broadcast)."""

    reply: bytes
    changes: list[Change] = field(default_factory=list)
    #: Whether the reply may be replayed to a retry of the same id (a write's reply).
    idempotent: bool = False


def error_reply(request_id: Any, code: str, message: str) -> bytes:
    """An error reply: ``{"id", "ok": false, "error": {"code", "message"}}``."""
    return _error(request_id, code, message)


def _error(request_id: Any, code: str, message: str) -> bytes:
    return orjson.dumps(
        {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
    )


def request_id_in(message: str | bytes) -> str | None:
    """The ``id`` of an encoded request, ``None`` when it has none usable."""
    try:
        return request_id_of(orjson.loads(message))
    except (orjson.JSONDecodeError, InvalidInputError):
        return None


def busy_reply(message: str | bytes) -> bytes:
    """The reply to a request beyond :data:`RPC_WINDOW`: ``busy``, nothing carried out."""
    return _error(
        request_id_in(message),
        "busy",
        f"more than {RPC_WINDOW} requests (or 1 MiB of them) waiting on this connection; "
        "nothing was done, send it again once replies have come",
    )


def _ok(request_id: Any, result: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": request_id, "ok": True, "result": result})


def _change_result(change: Change) -> dict[str, Any]:
    return {
        "project": change.project.to_dict(),
        "event": change.event,
        "updated_fields": list(change.updated_fields),
    }


def _text(args: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string")
    return value


def request_id_of(request: Any) -> str:
    """The ``id`` of a decoded request; ``InvalidInputError`` when it has none usable."""
    request_id = request.get("id") if isinstance(request, dict) else None
    if not isinstance(request_id, str) or not 0 < len(request_id) <= _ID_MAX:
        raise InvalidInputError(f"every request needs an id: a string of 1-{_ID_MAX} characters")
    return request_id


def answer(
    store: Answering,
    message: str | bytes,
    *,
    may_write: bool,
    state: StateRead | None = None,
) -> Answer:
    """Answer one request against ``store``: never raises, never applies half a change.

    Hostile input (not JSON, wrong types, unknown ops, missing ids) gets an error reply.
    A write is one locked transaction of the store, as a local command's is. ``list`` and
    ``info`` answer from ``state`` when given (a read the server shares between requests).
    A failure of our own (a bug, not the request) is logged with its traceback and
    answered ``server_error``.
    """
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError:
        return Answer(_error(None, "bad_request", "a request is one JSON object"))
    try:
        request_id = request_id_of(request)
    except InvalidInputError as error:
        return Answer(_error(None, "bad_request", str(error)))
    op, args = request.get("op"), request.get("args", {})
    if not isinstance(op, str) or op not in READ_OPS | WRITE_OPS:
        return Answer(_error(request_id, "unknown_op", f"unknown op {str(op)[:40]!r}"))
    if not isinstance(args, dict):
        return Answer(_error(request_id, "bad_request", "args must be a JSON object"))
    if op in WRITE_OPS and not may_write:
        return Answer(_error(request_id, "forbidden", "this token may only read"))
    try:
        if op in WRITE_OPS:
            changes = _write(store, op, args)
            if op == "delete":
                result: dict[str, Any] = {"deleted": [_change_result(c) for c in changes]}
            else:
                result = _change_result(changes[0])
            return Answer(_ok(request_id, result), changes, idempotent=True)
        return Answer(_ok(request_id, _read(store, op, args, state)))
    except InvalidInputError as error:
        return Answer(_error(request_id, "invalid_input", str(error)))
    except ProjectNotFoundError as error:
        reply = orjson.loads(_error(request_id, "not_found", str(error)))
        reply["error"]["project"] = error.project_id  # what was looked for, exactly
        return Answer(orjson.dumps(reply))
    except StoreError as error:
        return Answer(_error(request_id, "store_error", str(error)))
    except Exception:  # arguments are checked above: what is left is a bug of ours
        log.exception("request %r (%s) failed", request_id[:40], op)
        return Answer(
            _error(request_id, "server_error", "internal error; the server's log has the details")
        )


def _write(store: Answering, op: str, args: dict[str, Any]) -> list[Change]:
    if op == "create":
        optional = {
            name: value
            for name in ("type", "status", "description")
            if (value := _text(args, name, required=False))
        }
        name, owner = _text(args, "name") or "", _text(args, "owner_id") or ""
        return store.commit(Create(name, owner, **optional))
    if op == "update":
        changes = args.get("changes")
        if not isinstance(changes, dict) or not all(
            isinstance(value, str) for value in changes.values()
        ):
            raise InvalidInputError("changes must be an object of field names to strings")
        return store.commit(Update(store.resolve(_text(args, "project") or ""), changes))
    projects = args.get("projects")
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise InvalidInputError("projects must be a list of ids or names")
    missing_ok = args.get("missing_ok", False) is True
    ids = []
    for reference in projects:
        try:
            ids.append(store.resolve(reference))
        except ProjectNotFoundError:
            if not missing_ok:
                raise
    return store.commit(Delete(tuple(ids), missing_ok=missing_ok))


def _as_projects(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of a server's read (each checked by the store) as :meth:`Project.to_dict` gives
    them: a record with just those keys, in that order, is taken as it is, and rebuilding
    one costs more than encoding it."""
    projects: list[dict[str, Any]] = []
    keys: list[str] | None = None
    for record in records:
        if keys is None:
            keys = list(Project.from_dict(record).to_dict())
        projects.append(record if list(record) == keys else Project.from_dict(record).to_dict())
    return projects


def _read(
    store: Answering, op: str, args: dict[str, Any], state: StateRead | None
) -> dict[str, Any]:
    if op == "journal":
        after = args.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise InvalidInputError("after must be a whole number, 0 or more")
        return {"events": store.journal(after)}
    if op == "resolve":
        return {"project_id": store.resolve(_text(args, "project") or "")}
    if op == "get":
        return {"project": store.get(store.resolve(_text(args, "project") or "")).to_dict()}
    if op == "list" and state is not None:
        wanted = {
            name: value
            for name in ("status", "type", "owner_id")
            if (value := _text(args, name, required=False)) is not None
        }
        return {
            "projects": _as_projects(
                record
                for record in state.project_records
                if all(record.get(name) == value for name, value in wanted.items())
            )
        }
    if op == "list":
        projects = store.list_projects(
            status=_text(args, "status", required=False),
            type=_text(args, "type", required=False),
            owner_id=_text(args, "owner_id", required=False),
        )
        return {"projects": [project.to_dict() for project in projects]}
    if state is None:
        state = store.read_state()  # one read for every figure
    return {
        "database": {"id": state.database_id},
        "projects": len(state.project_records),
        "latest_seq": state.latest_seq,
        "journal": {"events": len(state.journal), "limit": state.journal_limit},
    }


# -- the client ----------------------------------------------------------------------------


def _change_from(result: dict[str, Any]) -> Change:
    event = result.get("event")
    return Change(
        project=Project.from_dict(result["project"]),
        event=events.check_event(event) if event is not None else None,
        updated_fields=tuple(result.get("updated_fields", ())),
    )


class RemoteBackend:
    """A database on a team server, as a :class:`projctl.backend.Backend`. Every call is
    one request over ``wss://HOST:PORT/rpc``.

    Errors are the local ones (:class:`InvalidInputError`, :class:`ProjectNotFoundError`,
    :class:`StoreError`), validated by the server; an unreachable server, a TLS failure
    or a refused token is a :class:`ServerError`.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.url is None:
            raise InvalidInputError("a remote database needs PROJCTL_URL or --url")
        self.settings = settings
        self.url = settings.url
        self.token = settings.token

    def __repr__(self) -> str:
        return f"<projctl.remote.RemoteBackend {self.url!r}>"

    @property
    def location(self) -> str:
        """Where the database is, for messages: the server's URL."""
        return self.url

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its result; a dropped connection is retried with the
        same id (so a write is never applied twice), a bounded number of times."""
        import asyncio

        request_id = secrets.token_hex(16)
        message = orjson.dumps({"id": request_id, "op": op, "args": args})
        return asyncio.run(self._call(message, request_id))

    async def _call(self, message: bytes, request_id: str) -> dict[str, Any]:
        import asyncio

        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        from projctl.subscribe import backoff, client_tls, refusal

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        last_error = ""
        for pause in (*backoff(RETRY_FIRST, factor=3, count=RETRIES), None):
            try:
                async with connect(
                    self.url.rstrip("/") + RPC_PATH,
                    ssl=client_tls(self.url, self.settings.ca_file),
                    additional_headers=headers,
                    open_timeout=10,
                    compression=None,
                    max_size=64 << 20,
                ) as ws:
                    await ws.send(message.decode())
                    raw = await asyncio.wait_for(ws.recv(), 60)
                return self._result(raw, request_id)
            except InvalidStatus as error:
                status = error.response.status_code
                if status in (401, 403):
                    raise refusal(error, self.url) from None
                last_error = f"HTTP {status}"
                if status < 500:
                    break
            except ssl.SSLCertVerificationError as error:
                raise refusal(error, self.url) from None
            except ssl.SSLError as error:
                raise ServerError(f"TLS with {self.url} failed: {error.reason or error}") from None
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as error:
                last_error = str(error) or type(error).__name__
            if pause is not None:
                await asyncio.sleep(pause)
        raise ServerError(f"cannot reach the server at {self.url}: {last_error}")

    def _result(self, raw: str | bytes, request_id: str) -> dict[str, Any]:
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ServerError(f"the server at {self.url} sent a malformed reply") from None
        if not isinstance(reply, dict) or reply.get("id") != request_id:
            raise ServerError(f"the server at {self.url} sent a reply to another request")
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            result: dict[str, Any] = reply["result"]
            return result
        error: dict[str, Any] = reply["error"] if isinstance(reply.get("error"), dict) else {}
        code, message = str(error.get("code", "")), str(error.get("message", "no message"))
        kind = ERROR_CLASSES.get(code)
        if kind is ProjectNotFoundError:
            raise ProjectNotFoundError(str(error.get("project", "")), looked_up_by="id or name")
        if kind is None or code == "forbidden":
            raise ServerError(f"the server refused: {message} ({code or 'no code'})")
        raise kind(_CLIENT_WORDING.get(code, "{message}").format(message=message))

    # -- the Backend protocol ----------------------------------------------------------

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        if isinstance(write, Create):
            return [_change_from(self.call("create", dataclasses.asdict(write)))]
        if isinstance(write, Update):
            # The server validates the fields, with the local messages.
            update = {"project": write.project_id, "changes": dict(write.changes)}
            return [_change_from(self.call("update", update))]
        if isinstance(write, Delete):
            args: dict[str, Any] = {
                "projects": list(write.project_ids),
                "missing_ok": write.missing_ok,
            }
            return [_change_from(item) for item in self.call("delete", args)["deleted"]]
        raise InvalidInputError(f"a team server cannot commit {type(write).__name__}")

    def resolve(self, reference: str) -> str:
        return str(self.call("resolve", {"project": reference})["project_id"])

    def get(self, project_id: str) -> Project:
        return Project.from_dict(self.call("get", {"project": project_id})["project"])

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        args = {k: v for k, v in (("status", status), ("type", type), ("owner_id", owner_id)) if v}
        return [Project.from_dict(p) for p in self.call("list", args)["projects"]]

    def journal(self, after: int = 0) -> list[Event]:
        found = self.call("journal", {"after": after})["events"]
        return [events.check_event(event) for event in found]

    def latest_seq(self) -> int:
        return int(self.call("info", {})["latest_seq"])

    def identity(self) -> str:
        return str(self.call("info", {})["database"]["id"])

    def info(self) -> dict[str, Any]:
        result = self.call("info", {})
        return {
            "database": {"url": self.url, "source": self.settings.url_source, **result["database"]},
            "projects": result["projects"],
            "latest_seq": result["latest_seq"],
            "journal": result["journal"],
            "server": {"running": True, "url": self.url},
        }

    def feed(self, *, start: bool = True, deadline: float | None = None) -> Endpoint:
        """The server's feed: ``/ws`` over the same TLS, with the token (nothing is asked
        here, so there is nothing to bound by ``deadline``)."""
        base = self.url.rstrip("/")
        return Endpoint(url=base + "/ws", token=self.token, ca_file=self.settings.ca_file)
