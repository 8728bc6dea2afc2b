"""Connecting to the cluster and running one call: a private event loop, a deadline, the
stream's creation, JetStream API calls asked again while a leader is elected.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from projctl.errors import (
    ServerError,
    ServerUnavailableError,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["DUPLICATE_WINDOW", "StreamConnection"]


#: How long the stream remembers a ``Nats-Msg-Id``: a retry within it is applied once.
DUPLICATE_WINDOW = 3600.0
#: How many times a write is tried again after losing a compare-and-set race.
_MAX_ATTEMPTS = 200
_FINGERPRINT = "Projctl-Fingerprint"
_CREATED = "Projctl-Created"
_MSG_ID = "Nats-Msg-Id"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_EXPECT_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
_EXPECT_LAST = "Nats-Expected-Last-Sequence"
#: JetStream's error codes this backend acts on.
_WRONG_LAST_SEQUENCE = 10071
#: The same, said by a new leader that cannot yet tell which sequence was expected.
_WRONG_LAST_SEQUENCE_CONSTANT = 10164
_BATCH_DUPLICATE = 10201
_STREAM_NOT_FOUND = 10059
_NO_MESSAGE = 10037
_STREAM_IN_USE = 10058
_INSUFFICIENT_RESOURCES = 10023
_NOT_CLUSTERED = 10074
_UNAVAILABLE = 10008
#: How long one request waits for its answer before it is asked again (a leader that died
#: never answers; the next request reaches the one elected after it).
_REQUEST_TIMEOUT = 2.0

_T = TypeVar("_T")


class _Conflict(Exception):
    """A compare-and-set lost: the subject moved since it was read."""


class _BatchDuplicate(Exception):
    """An atomic batch holds a message id the stream has seen."""


@dataclass
class _Session:
    nc: Client
    js: JetStreamContext
    deadline: float
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def left(self, most: float = 10.0) -> float:
        """Seconds to the deadline (at least a little, at most ``most``)."""
        return max(0.05, min(most, self.deadline - time.monotonic()))


class StreamConnection:
    """The connection side of :class:`~projctl.jetstream.JetStreamBackend`: its settings,
    a fresh connection per call, the stream."""

    def __init__(
        self,
        *,
        servers: Sequence[str],
        name: str,
        display: str,
        source: str = "--db",
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds_file: str | None = None,
        ca_file: str | None = None,
        tls: bool = False,
        replicas: int | None = None,
        timeout: float = 10.0,
        journal_limit: int = 1000,
    ) -> None:
        self.servers = tuple(servers)
        self.name = name
        self.stream = f"PROJCTL_{name}"
        self.prefix = f"projctl.{name}"
        self._display = display
        self.source = source
        self._auth = {"user": user, "password": password, "token": token}
        self._creds_file = creds_file
        self._ca_file = ca_file
        self._tls = tls
        self.replicas = replicas
        self.timeout = timeout
        self.journal_limit = journal_limit

    def __repr__(self) -> str:
        return f"<projctl.jetstream.JetStreamBackend {self._display!r}>"

    @property
    def location(self) -> str:
        """The location without credentials: ``nats://HOST:PORT,.../NAME``."""
        return self._display

    # -- running a call ------------------------------------------------------------------

    def _run(self, work: Callable[[_Session], Awaitable[_T]]) -> _T:
        """Run ``work`` with a fresh connection on a private event loop, within the timeout.

        Called from a thread whose loop is running (async code calling the synchronous
        API), the loop runs in a helper thread instead: one cannot nest in another.
        """
        coroutine = self._session(work)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = asyncio.run(coroutine)
            except BaseException as error:  # handed to the caller's thread
                box["error"] = error

        helper = threading.Thread(target=run, name="projctl-jetstream", daemon=True)
        helper.start()
        helper.join(self.timeout + 5)
        if "error" in box:
            raise box["error"]
        if "value" not in box:
            raise self._no_answer()
        value: _T = box["value"]
        return value

    async def _session(self, work: Callable[[_Session], Awaitable[_T]]) -> _T:
        deadline = time.monotonic() + self.timeout
        try:
            return await asyncio.wait_for(self._connected(work, deadline), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._no_answer() from None

    async def _connected(self, work: Callable[[_Session], Awaitable[_T]], deadline: float) -> _T:
        nc = await self._connect()
        try:
            session = _Session(nc, nc.jetstream(timeout=_REQUEST_TIMEOUT), deadline)
            return await work(session)
        finally:
            await _close_quietly(nc)

    def _no_answer(self) -> ServerError:
        return ServerUnavailableError(
            f"the NATS cluster at {self._display} did not answer within {self.timeout:g}s "
            "(are most of its servers up?)"
        )

    async def _connect(self) -> Client:
        import nats
        import nats.errors

        async def quiet(*_args: Any) -> None:
            # nats-py logs connection trouble by default; the caller reports what matters.
            return None

        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": "projctl",
            "connect_timeout": max(1, min(5, int(self.timeout))),
            "allow_reconnect": True,
            "max_reconnect_attempts": 5,
            "reconnect_time_wait": 0.2,
            "error_cb": quiet,
            "disconnected_cb": quiet,
            "reconnected_cb": quiet,
            "closed_cb": quiet,
        }
        options.update({key: value for key, value in self._auth.items() if value is not None})
        if self._creds_file is not None:
            options["user_credentials"] = self._creds_file
        if self._tls:
            options["tls"] = ssl.create_default_context(cafile=self._ca_file)
        try:
            return await nats.connect(**options)
        except (OSError, nats.errors.Error, ssl.SSLError) as error:
            reason = str(error) or type(error).__name__
            raise ServerUnavailableError(
                f"cannot reach the NATS cluster at {self._display}: {reason}"
            ) from None

    # -- the stream ----------------------------------------------------------------------

    async def _stream_info(self, s: _Session) -> Any | None:
        """The stream's info, ``None`` when there is no stream yet."""
        from nats.js.errors import NotFoundError

        try:
            info = await self._api(s, lambda: s.js.stream_info(self.stream))
        except NotFoundError:
            return None
        s.limit = self._limit_of(info)
        return info

    def _limit_of(self, info: Any) -> int:
        metadata = info.config.metadata or {}
        try:
            return max(1, int(metadata.get("projctl.journal_limit", self.journal_limit)))
        except (TypeError, ValueError):
            return self.journal_limit

    async def _ensure_stream(self, s: _Session) -> Any:
        """The stream's info, the stream created first when there is none."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError

        info = await self._stream_info(s)
        if info is not None:
            return info
        choices = [self.replicas] if self.replicas is not None else [3, 2, 1]
        for replicas in choices:
            config = StreamConfig(
                name=self.stream,
                description=f"projctl database {self.name}",
                subjects=[f"{self.prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=DUPLICATE_WINDOW,
                allow_atomic=True,
                deny_delete=True,
                metadata={
                    "projctl.format": "1",
                    "projctl.journal_limit": str(self.journal_limit),
                    "projctl.database_id": secrets.token_hex(8),
                },
            )
            try:
                info = await self._api(s, functools.partial(s.js.add_stream, config))
            except APIError as error:
                if error.err_code == _STREAM_IN_USE:  # another client made it first
                    break
                if self.replicas is None and error.err_code in (
                    _INSUFFICIENT_RESOURCES,
                    _NOT_CLUSTERED,
                ):
                    continue
                raise self._refused(error) from None
            s.limit = self._limit_of(info)
            return info
        info = await self._stream_info(s)
        if info is None:
            raise ServerError(f"the NATS cluster at {self._display} cannot hold the stream")
        return info

    async def _api(self, s: _Session, call: Callable[[], Awaitable[_T]]) -> _T:
        """One JetStream API call, asked again while JetStream cannot answer yet (no
        responders, a stream or meta leader being elected: 503) until the deadline."""
        import nats.errors
        from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

        pause = 0.02
        while True:
            try:
                return await call()
            except (
                nats.errors.NoRespondersError,
                NoStreamResponseError,
                ServiceUnavailableError,
                nats.errors.TimeoutError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.StaleConnectionError,
            ) as error:
                if time.monotonic() + pause >= s.deadline:
                    raise ServerUnavailableError(
                        f"JetStream does not answer at {self._display} "
                        f"({type(error).__name__}; is it enabled, and are most of the servers up?)"
                    ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _refused(self, error: Any) -> ServerError:
        description = getattr(error, "description", None) or str(error)
        return ServerError(f"JetStream refused at {self._display}: {description}")


async def _close_quietly(nc: Client) -> None:
    """Close a connection, whatever it says: a node killed under it makes nats-py's close
    raise, a cancellation of its own reader task included. Only a cancellation of this very
    task (a timeout, Ctrl-C) goes on."""
    try:
        await nc.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        if cancelling is not None and cancelling():
            raise
    except Exception:
        pass
