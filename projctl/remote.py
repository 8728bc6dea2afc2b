"""The client side of a team server: projctl commands run against a server on another
machine, through its REST API (``docs/protocol.md``; ``GET /api/openapi.json``).

Every call is one HTTP/1.1 request over a kept connection (HTTPS for a ``wss://``
server), made with the standard library's :mod:`http.client`: a remote ``create`` imports
neither asyncio nor websockets, and ``delete A B C`` is one request. Writes carry an
``Idempotency-Key`` (the caller's, or a fresh one), so a request retried after a dropped
connection or a server restart is applied once; only ``watch`` follows the WebSocket feed.

Errors come back as ``{"error": code, "message": ...}`` with a stable code;
:data:`ERROR_CLASSES` maps each to the domain error the client raises (the CLI alone
turns errors into exit codes).
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

from projctl import _client, events
from projctl.backend import Change, Create, Delete, Emit, Update, Write
from projctl.config import Settings, http_address
from projctl.errors import (
    AmbiguousReferenceError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    NameTakenError,
    PreconditionFailedError,
    ProjctlError,
    ProjectNotFoundError,
    ServerError,
    StoreError,
)
from projctl.events import Event
from projctl.model import Project, parse_project_id
from projctl.runtime import Endpoint

__all__ = ["ERROR_CLASSES", "RETRIES", "RETRY_FIRST", "RemoteBackend"]

#: Error codes of the API, stable for scripts and other languages, and the domain error each
#: raises in the client.
ERROR_CLASSES: dict[str, type[ProjctlError]] = {
    "invalid_input": InvalidInputError,
    "ambiguous": AmbiguousReferenceError,
    "name_taken": NameTakenError,
    "not_found": ProjectNotFoundError,
    "idempotency_key_reused": IdempotencyKeyReusedError,
    "precondition_failed": PreconditionFailedError,
    "unsupported_media_type": InvalidInputError,
    "too_large": InvalidInputError,
    "store_error": StoreError,
    "unauthorized": ServerError,
    "forbidden": ServerError,
    "misdirected": ServerError,
    "method_not_allowed": ServerError,
    "idempotency_key_in_use": ServerError,
    "unavailable": ServerError,
    "server_error": ServerError,
}
#: How the client words an error whose message alone would not say where it came from.
_CLIENT_WORDING = {
    "server_error": "the server failed: {message}",
    "unavailable": "the server is busy: {message}",
    "method_not_allowed": "the server does not take this request: {message}",
    "forbidden": "the server refused: {message} (forbidden)",
}
#: Retries of one request on a dropped connection or a server that asks for one (the same
#: idempotency key each time), and the first pause (each next one three times longer).
RETRIES = 3
RETRY_FIRST = 0.1
#: Statuses a later attempt may get past (the longest wait a ``Retry-After`` may ask).
_RETRY_STATUSES = frozenset({409, 502, 503, 504})
_RETRY_AFTER_MAX = 2.0
#: How long one request may take, connecting included.
_TIMEOUT = 60.0
#: The largest answer read (a list of 20,000 projects is about 10 MB).
_MAX_ANSWER = 64 << 20


class RemoteBackend:
    """A database on a team server, as a :class:`projctl.backend.Backend`.

    Errors are the local ones (:class:`InvalidInputError`, :class:`ProjectNotFoundError`,
    :class:`StoreError`, ...), validated by the server; an unreachable server, a TLS
    failure or a refused token is a :class:`ServerError`.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.url is None:
            raise InvalidInputError("a remote database needs PROJCTL_URL or --url")
        self.settings = settings
        self.url = settings.url
        self.token = settings.token
        parts = urlsplit(self.url)
        self._tls = parts.scheme in ("wss", "https")
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._connection: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"<projctl.remote.RemoteBackend {self.url!r}>"

    @property
    def location(self) -> str:
        """Where the database is, for messages: the server's URL."""
        return self.url

    def close(self) -> None:
        """Close the kept connection (a later call opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __del__(self) -> None:
        # The kept connection lives as long as the backend: a script that never closes its
        # Database leaves no socket behind for the garbage collector to warn about.
        self.close()

    # -- one request -------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._tls:
                context = _client.client_tls("https://", self.settings.ca_file)
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=_TIMEOUT, context=context
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=_TIMEOUT
                )
        return self._connection

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON answer (see :meth:`exchange`)."""
        return self.exchange(
            method, path, body, idempotency_key=idempotency_key, headers=headers
        ).body

    def exchange(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """Send one request and return its answer. A dropped connection, or a server that
        asks to come back (``503``; ``409`` for a key still being carried out), is retried a
        bounded number of times, with the same idempotency key; an error answer raises the
        domain error its code stands for."""
        sent = {"Accept": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        last_error = ""
        dropped = False  # the server closed the connection without an answer
        for pause in (*_client.backoff(RETRY_FIRST, factor=3, count=RETRIES), None):
            try:
                answer = self._send(method, path, payload, sent)
            except ssl.SSLCertVerificationError as error:
                raise _client.untrusted(error, self.url) from None
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as error:
                # The connection ended during TLS (a network cut, a restart): retried.
                self.close()
                dropped = True
                last_error = f"TLS ended early ({error.reason or error})"
            except ssl.SSLError as error:
                raise ServerError(f"TLS with {self.url} failed: {error.reason or error}") from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                dropped = isinstance(error, (http.client.RemoteDisconnected, ConnectionResetError))
                last_error = (
                    error.strerror if isinstance(error, OSError) and error.strerror else None
                ) or (str(error) or type(error).__name__)
            else:
                if answer.status < 300:
                    return answer
                if answer.status not in _RETRY_STATUSES or pause is None:
                    raise self._error(answer)
                last_error = f"HTTP {answer.status}"
                pause = max(pause, min(answer.retry_after, _RETRY_AFTER_MAX))
            if pause is not None:
                time.sleep(pause)
        hint = ""
        if not self._tls and dropped:
            # A TLS server closes a connection that speaks plain HTTP to it.
            hint = "; if the server uses TLS, use wss://"
        raise ServerError(f"cannot reach the server at {self.url}: {last_error}{hint}")

    def _send(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> _Answer:
        connection = self._connect()
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read(_MAX_ANSWER + 1)
        if len(raw) > _MAX_ANSWER:
            self.close()
            raise ServerError(f"the server at {self.url} sent more than {_MAX_ANSWER} bytes")
        if response.will_close:
            self.close()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            if response.status < 300:
                raise ServerError(f"the server at {self.url} sent a malformed answer") from None
            body = None
        return _Answer(response.status, body, response.headers)

    def _error(self, answer: _Answer) -> ProjctlError:
        """The domain error an error answer stands for."""
        body, status = answer.body, answer.status
        code = body.get("error") if isinstance(body, dict) else None
        if status in (401, 403) and code in ("unauthorized", "forbidden"):
            source = self.settings.token_source if self.token else None
            return _client.refused(status, self.url, token_from=source)
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return ServerError(f"the server at {self.url} answered HTTP {status}")
        code, message = body["error"], str(body.get("message", "no message"))
        kind = ERROR_CLASSES.get(code)
        if kind is ProjectNotFoundError:
            return ProjectNotFoundError(str(body.get("project", "")), looked_up_by="id or name")
        if kind is None:
            return ServerError(f"the server refused: {message} ({code})")
        return kind(_CLIENT_WORDING.get(code, "{message}").format(message=message))

    # -- the Backend protocol ------------------------------------------------------------

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        # Every write carries a key: a retry after a lost answer is then never applied twice.
        # secrets.token_hex(16), without importing secrets (its hmac loads OpenSSL's hashes).
        key = idempotency_key or os.urandom(16).hex()
        if isinstance(write, Create):
            body = {
                "name": write.name,
                "type": write.type,
                "status": write.status,
                "owner_id": write.owner_id,
                "description": write.description,
            }
            answer = self.exchange(
                "POST", "/api/projects" + _unique(write.unique), body, idempotency_key=key
            )
            project = answer.body
            created = events.project_created(
                project, seq=answer.seqs()[0], timestamp=project["created_at"]
            )
            return [_change(answer, project, created)]
        if isinstance(write, Update):
            answer = self.exchange(
                "PATCH",
                _project_path(write.project_id) + _unique(write.unique),
                dict(write.changes),
                idempotency_key=key,
                headers=_if_match(write.if_match),
            )
            project, fields = answer.body["project"], answer.body["updated_fields"]
            seqs = answer.seqs()
            event: Event | None = (
                events.project_updated(
                    project, fields, seq=seqs[0], timestamp=project["updated_at"]
                )
                if seqs
                else None
            )
            return [_change(answer, project, event, fields)]
        if isinstance(write, Delete):
            if len(write.project_ids) == 1 and not write.missing_ok:
                answer = self.exchange(
                    "DELETE",
                    _project_path(write.project_ids[0]),
                    idempotency_key=key,
                    headers=_if_match(write.if_match),
                )
                deleted = [answer.body]
            else:
                query = urlencode(
                    [("project_id", i) for i in write.project_ids]
                    + ([("missing_ok", "1")] if write.missing_ok else [])
                )
                answer = self.exchange(
                    "DELETE",
                    f"/api/projects?{query}",
                    idempotency_key=key,
                    headers=_if_match(write.if_match),
                )
                deleted = answer.body["deleted"]
            return [
                _change(
                    answer,
                    item["project"],
                    events.project_deleted(
                        item["project"], seq=item["seq"], timestamp=item["timestamp"]
                    ),
                )
                for item in deleted
            ]
        if isinstance(write, Emit):
            answer = self.exchange(
                "POST",
                _project_path(write.project_id) + "/events",
                {"event_type": write.event_type, "data": dict(write.data)},
                idempotency_key=key,
            )
            emitted = events.check_event(answer.body["event"])
            return [_change(answer, answer.body["project"], emitted)]
        raise InvalidInputError(f"a team server cannot commit {type(write).__name__}")

    def resolve(self, reference: str) -> str:
        return self.get(reference).project_id

    def get(self, project_id: str) -> Project:
        return Project.from_dict(self.request("GET", _project_path(project_id)))

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        query = urlencode(
            [(k, v) for k, v in (("status", status), ("type", type), ("owner", owner_id)) if v]
        )
        answer = self.request("GET", "/api/projects" + (f"?{query}" if query else ""))
        return [Project.from_dict(p) for p in answer["projects"]]

    def journal(self, after: int = 0) -> list[Event]:
        answer = self.request("GET", f"/api/events?since={after}")
        if answer.get("resync"):
            # ``after`` is older than the server keeps: what it keeps, from its oldest.
            oldest = int(answer.get("oldest_seq", 1))
            answer = self.request("GET", f"/api/events?since={max(after, oldest - 1)}")
        return [events.check_event(event) for event in answer.get("events", [])]

    def latest_seq(self) -> int:
        return int(self.request("GET", "/api/info")["latest_seq"])

    def identity(self) -> str:
        return str(self.request("GET", "/api/info")["database"]["id"])

    def info(self) -> dict[str, Any]:
        result = self.request("GET", "/api/info")
        return {
            "database": {"url": self.url, "source": self.settings.url_source, **result["database"]},
            "projects": result["projects"],
            "latest_seq": result["latest_seq"],
            "journal": result["journal"],
            "server": {"running": True, "url": self.url},
        }

    def server_status(self) -> dict[str, Any]:
        """The team server's health (``/healthz``, its detail for a token holder), with
        its feed's URL: what ``projctl server status`` shows of it."""
        health = self.request("GET", "/healthz")
        if not isinstance(health, dict):
            raise ServerError(f"the server at {self.url} sent a malformed health report")
        return {
            **health,
            "url": self.url.rstrip("/") + "/ws",
            "http_url": self.http_url,
            "team_server": True,
        }

    @property
    def http_url(self) -> str:
        """The server's HTTP address (the dashboard's): ``https://`` for ``wss://``."""
        return http_address(self.url)

    def feed(self, *, start: bool = True, deadline: float | None = None) -> Endpoint:
        """The server's feed: ``/ws`` over the same TLS, with the token (nothing is asked
        here, so there is nothing to bound by ``deadline``)."""
        base = self.url.rstrip("/")
        return Endpoint(url=base + "/ws", token=self.token, ca_file=self.settings.ca_file)


def _project_path(reference: str) -> str:
    return "/api/projects/" + quote(reference, safe="")


@dataclass(frozen=True)
class _Answer:
    """One answer: its status, decoded JSON body and headers."""

    status: int
    body: Any
    headers: Message

    @property
    def retry_after(self) -> float:
        try:
            return float(self.headers.get("Retry-After", "0"))
        except ValueError:
            return 0.0

    def seqs(self) -> list[int]:
        """The seqs of the events the write committed (``Projctl-Seq``), oldest first."""
        raw = self.headers.get("Projctl-Seq", "")
        return [int(part) for part in raw.split(",") if part.strip().isdigit()]

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed", "").lower() == "true"

    def same_name(self) -> tuple[str, ...]:
        """The other projects that had the new name (``Projctl-Same-Name``): well-formed
        ids only, as they are printed to a terminal."""
        raw = self.headers.get("Projctl-Same-Name", "")
        ids = (part.strip() for part in raw.split(","))
        return tuple(i for i in ids if parse_project_id(i) is not None)


def _unique(unique: bool) -> str:
    return "?unique=true" if unique else ""


def _if_match(version: str | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": version if version == "*" else f'"{version}"'}


def _change(
    answer: _Answer,
    project: dict[str, Any],
    event: Event | None,
    updated_fields: list[str] | tuple[str, ...] = (),
) -> Change:
    """A change as the API answers it."""
    return Change(
        project=Project.from_dict(project),
        event=event,
        updated_fields=tuple(updated_fields),
        replayed=answer.replayed,
        same_name=answer.same_name(),
    )
