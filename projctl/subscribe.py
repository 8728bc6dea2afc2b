"""The reconnecting subscriber: every message of a server's feed, in ``seq`` order, once.

:func:`follow` connects to ``/ws``, resumes with ``?since=<last seq>`` after any
disconnect and yields what arrives, so a consumer sees no gap and no repeat
across server restarts. It retries only what a retry can fix: a refused or lost
connection, a server that is not there yet, a handshake the server turned away
for now. Anything else (a refused token, a frame that is not JSON, a bug) is
raised to the caller instead of becoming an endless reconnect loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from projctl._client import BACKOFF_FIRST, BACKOFF_MAX, backoff, client_tls, refused, untrusted
from projctl.errors import (
    ServerError,
    ServerNotAnsweringError,
    ServerUnavailableError,
)
from projctl.events import PROJECTS_MESSAGE_TYPES, is_event
from projctl.runtime import Endpoint

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "MAX_FRAME",
    "Connection",
    "Locate",
    "Message",
    "backoff",
    "client_tls",
    "follow",
    "refusal",
]

#: The largest frame accepted: a snapshot of a large database (20,000 projects are about
#: 10 MB), with room to spare; a server sending more is not followed.
MAX_FRAME = 64 << 20
#: Finds the server to follow (and may start one); called in a thread before each attempt.
Locate = Callable[[], Endpoint]
#: HTTP statuses of a handshake that a later attempt may get past.
_RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Message:
    """One message from the server: the text exactly as received, and its decoded form."""

    text: str
    data: dict[str, Any]

    @property
    def event_type(self) -> str:
        return str(self.data.get("event_type", ""))

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


@dataclass(frozen=True)
class Connection:
    """A change in :func:`follow`'s connection to the server."""

    state: Literal["starting", "connected", "reconnecting"]
    url: str | None = None
    #: Seconds until the next attempt (``reconnecting`` only).
    retry_in: float | None = None
    error: str | None = None


def _decode(frame: str | bytes) -> Message:
    try:
        text = frame.decode() if isinstance(frame, bytes) else frame
        data = orjson.loads(text)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        raise ServerError("the server sent a frame that is not JSON") from None
    if not isinstance(data, dict):
        raise ServerError("the server sent a frame that is not a JSON object")
    problem = _malformed(data)
    if problem:
        raise ServerError(f"the server sent a malformed {data['event_type']} message ({problem})")
    return Message(text, data)


def _malformed(data: dict[str, Any]) -> str:
    """What is wrong with a message that every consumer folds (a snapshot, a resync, a
    lifecycle or emitted event); ``""`` when nothing is, or when it is of a type nobody
    folds.

    Checked as it enters, so that a consumer never meets a missing key or a wrong type
    half-way through rebuilding its projects.
    """
    event_type = data.get("event_type")
    an_event = is_event(data)
    if event_type not in PROJECTS_MESSAGE_TYPES and not an_event:
        return ""
    seq = data.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "seq is not a whole number"
    payload = data.get("data")
    if not isinstance(payload, dict):
        return "data is not an object"
    if an_event:
        return "" if isinstance(payload.get("project_id", ""), str) else "project_id is not text"
    projects = payload.get("projects")
    if not isinstance(projects, list):
        return "data.projects is not a list"
    for number, project in enumerate(projects):
        if not isinstance(project, dict) or not isinstance(project.get("project_id"), str):
            return f"data.projects[{number}] is not a project with a project_id"
    return ""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, InvalidStatus):
        return error.response.status_code in _RETRYABLE_STATUSES
    if isinstance(error, ssl.SSLCertVerificationError):
        return False  # the same certificate will fail the same way
    return isinstance(
        error,
        OSError
        | ConnectionClosed
        | InvalidHandshake
        | ServerUnavailableError
        | ServerNotAnsweringError
        | TimeoutError,
    )


def refusal(
    error: InvalidStatus | ssl.SSLCertVerificationError, url: str, *, token_given: bool = False
) -> ServerError:
    """One line for a server that turned a subscriber away for good: a refused token (or
    any other refused handshake) or a certificate that cannot be trusted."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return untrusted(error, url)
    token_from = (
        "the settings (PROJCTL_TOKEN, a token file or the context)" if token_given else None
    )
    return refused(error.response.status_code, url, token_from=token_from)


async def follow(
    locate: Locate,
    *,
    since: int | None,
    snapshot: bool = False,
    give_up_after: int | None = None,
) -> AsyncGenerator[Message | Connection, None]:
    """Yield every message of the server that ``locate`` finds, in ``seq`` order, forever.

    ``locate`` is called (in a thread) before every connection attempt: it finds
    the server, or starts one. The stream starts with a replay of the events after
    ``since`` (``None``: only what happens from now on), or with a ``snapshot``
    message when ``snapshot`` is true. On a disconnect it yields a ``reconnecting``
    :class:`Connection`, waits with backoff and resumes after the last ``seq`` seen:
    no event is lost and none is yielded twice. Lifecycle and emitted events, ``snapshot``
    and ``resync`` messages are yielded as :class:`Message`.

    Raises what cannot be retried as :class:`~projctl.errors.ServerError`: a server
    that cannot be started or sends garbage, a handshake refused for good (a missing
    token: 401), a certificate that cannot be trusted; a bug is raised as it is. With
    ``give_up_after``, that many failed attempts in a row (no connection made in
    between) raise :class:`~projctl.errors.ServerError` too.
    """
    failures = 0
    last_seq = since
    want_snapshot = snapshot
    pauses = backoff()
    while True:
        server_url = None
        endpoint: Endpoint | None = None
        try:
            endpoint = await asyncio.to_thread(locate)
            server_url = endpoint.url
            if last_seq is None and not want_snapshot:
                # "From now on" is the server's latest seq: resuming from it after a
                # disconnect then loses nothing that happened in between.
                last_seq = endpoint.latest_seq
            query: dict[str, Any] = {}
            if want_snapshot:
                query["snapshot"] = 1
            elif last_seq is not None:
                query["since"] = last_seq
            url = f"{endpoint.url}?{urlencode(query)}" if query else endpoint.url
            # The token goes in a header, never in the request line a proxy may log.
            headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
            async with connect(
                url,
                ssl=client_tls(endpoint.url, endpoint.ca_file),
                additional_headers=headers,
                open_timeout=10,
                compression=None,
                max_size=MAX_FRAME,
            ) as ws:
                yield Connection("connected", endpoint.url)
                pauses = backoff()
                failures = 0
                async for frame in ws:
                    message = _decode(frame)
                    seq = message.seq
                    if message.event_type in PROJECTS_MESSAGE_TYPES:
                        want_snapshot = False
                    elif seq is not None and last_seq is not None and seq <= last_seq:
                        continue  # already seen before a reconnect
                    if seq is not None:
                        last_seq = seq
                    yield message
            error = "the server closed the connection"
        except Exception as failure:
            if not _retryable(failure):
                if isinstance(failure, InvalidStatus | ssl.SSLCertVerificationError):
                    token_given = endpoint is not None and endpoint.token is not None
                    raise refusal(failure, server_url or "", token_given=token_given) from None
                raise
            error = str(failure) or type(failure).__name__
            failures += 1
            if give_up_after is not None and failures >= give_up_after:
                raise ServerError(f"gave up after {failures} failed attempts: {error}") from None
        pause = next(pauses)
        yield Connection("reconnecting", server_url, retry_in=pause, error=error)
        await asyncio.sleep(pause)
