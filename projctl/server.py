"""The broadcast server: /ws subscribers, authenticated publishing, replay from the journal.

One server serves one database file. It listens on

- a TCP port (default ``localhost:8000``) for HTTP and WebSocket:

  ``GET /ws``
      subscribers. Each lifecycle event arrives as one text frame holding the
      JSON of the event contract, in ``seq`` order. ``?since=N`` first replays
      every retained event with ``seq > N``; ``?snapshot=1`` first sends the
      current projects as one ``snapshot`` message. When ``N`` is older than
      the journal keeps (or newer than the database has), a ``resync``
      message with the current projects comes first instead. When the server
      listens beyond loopback, ``?token=`` must carry the subscriber token.
  ``GET /publish``
      WebSocket for publishers holding the server token
      (``Authorization: Bearer <token>``); each text frame is one forward.
  ``GET /healthz``
      a small JSON status.

- a Unix socket in the database's private runtime folder, for local commands:
  one JSON request per line, one JSON reply per line. The folder is only
  accessible to its owner, which is what authenticates a local publisher.

**The journal is the truth.** A forward is a fast hint: an event whose
``seq`` is the next one is broadcast at once; events that arrive early wait
for the ones before them; and when a forward never comes (the command died
after committing), the server notices that the database file changed without
a forward explaining it and reads the missing events from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import os
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from projctl import __version__
from projctl.errors import ServerError, StoreError
from projctl.events import (
    Event,
    EventDecodeError,
    check_event,
    decode_event,
    encode_event,
    format_timestamp,
    projects_message,
    utc_now,
)
from projctl.store import FileVersion, ProjectStore, StoreState

__all__ = [
    "BroadcastServer",
    "ServerConfig",
    "run_server",
]

log = logging.getLogger("projctl.server")

#: Browsers on these origins (any port) may subscribe without being allowed explicitly.
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")
#: Subscribers have nothing to say; anything larger than this closes them with 1009.
SUBSCRIBER_MAX_MESSAGE = 4096
#: One forward: an event with a 10,000-character description fits with room to spare.
PUBLISHER_MAX_MESSAGE = 1 << 20
_MAX_SINCE_DIGITS = 19


@dataclass(frozen=True)
class ServerConfig:
    """How one server runs. Paths come from the client's runtime folder for the database."""

    db_path: Path
    state_file: Path
    socket_path: Path
    host: str = "localhost"
    port: int = 8000
    #: Extra browser origins allowed to subscribe; ``"*"`` allows any.
    allow_origins: tuple[str, ...] = ()
    #: Stop after this many seconds with no subscribers and no events (``None``: never).
    idle_timeout: float | None = None
    #: Required as ``?token=`` on ``/ws`` (set when listening beyond loopback).
    subscriber_token: str | None = None
    #: A subscriber whose unsent data passes this many bytes is closed with 1013.
    slow_subscriber_limit: int = 1 << 20
    #: How long an early event waits for the ones before it before the journal is read.
    gap_grace: float = 0.3
    #: How often the database file is checked for commits nobody forwarded.
    poll_interval: float = 0.2
    ping_interval: float | None = 20.0
    journal_window: int = 1000


@dataclass
class _Stats:
    started: float = field(default_factory=time.time)
    events: int = 0
    gap_fills: int = 0
    slow_closed: int = 0


class BroadcastServer:
    """Fans committed events out to subscribers, in ``seq`` order, with nothing lost.

    Everything runs on one event loop; methods that touch the stream state
    never await in the middle, so a subscriber is registered, replayed to and
    switched to the live feed in one step and no event can slip in between.
    """

    def __init__(self, store: ProjectStore, config: ServerConfig) -> None:
        self.store = store
        self.config = config
        self.token = secrets.token_urlsafe(32)
        self.subscribers: set[ServerConnection] = set()
        self.stats = _Stats()
        self.last_seq = 0
        self.database_id = ""
        # Encoded recent events, oldest first, for replay; at least the journal's size.
        # Only the encoded form: the rare snapshot that needs an event's data decodes it again.
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=config.journal_window)
        self._pending: dict[int, Event] = {}
        self._highest_forwarded = 0
        self._explained_version: FileVersion | None = None
        self._gap_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._last_activity = time.monotonic()
        self._stopping = asyncio.Event()
        self._ws_server: Server | None = None
        self._unix_server: asyncio.Server | None = None
        self.port = config.port

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Load the journal, listen on TCP and the Unix socket, then publish the state file."""
        self._load(await asyncio.to_thread(self.store.read_state))
        origins: list[Any] | None = [None, _LOCAL_ORIGIN, *self.config.allow_origins]
        if "*" in self.config.allow_origins:
            origins = None
        try:
            self._ws_server = await serve(
                self._handle_websocket,
                self.config.host,
                self.config.port,
                origins=origins,
                process_request=self._process_request,
                compression=None,  # small JSON gains nothing; deflate costs CPU per connection
                max_size=PUBLISHER_MAX_MESSAGE,
                ping_interval=self.config.ping_interval,
                ping_timeout=self.config.ping_interval,
                close_timeout=5,
                server_header=f"projctl/{__version__}",
            )
        except OSError as error:
            raise ServerError(
                f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror or error}"
            ) from None
        sockets = self._ws_server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        with contextlib.suppress(FileNotFoundError):
            self.config.socket_path.unlink()
        old_umask = os.umask(0o077)
        try:
            self._unix_server = await asyncio.start_unix_server(
                self._handle_local,
                path=str(self.config.socket_path),
                limit=2 * PUBLISHER_MAX_MESSAGE,
            )
        finally:
            os.umask(old_umask)
        self._write_state_file()
        self._spawn(self._watch_database())
        if self.config.idle_timeout is not None:
            self._spawn(self._stop_when_idle(self.config.idle_timeout))
        log.info("serving %s for %s (pid %d)", self.url, self.config.db_path, os.getpid())

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}/ws"

    def stop(self) -> None:
        """Ask :meth:`serve_until_stopped` to shut down."""
        self._stopping.set()

    async def serve_until_stopped(self) -> None:
        """Serve until :meth:`stop`, then close every connection and remove the state file."""
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._unix_server is not None:
            self._unix_server.close()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)
        self._remove_state_file()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the event stream --------------------------------------------------------

    def _load(self, state: StoreState) -> None:
        self.database_id = state.database_id
        self.last_seq = state.latest_seq
        self._highest_forwarded = state.latest_seq
        self._explained_version = state.version
        window = max(self.config.journal_window, len(state.journal))
        self._recent = deque(
            ((event["seq"], encode_event(event)) for event in state.journal), maxlen=window
        )
        self._pending.clear()

    def accept(self, event: Event, version: FileVersion | None = None) -> None:
        """Take one committed event (from a forward or the journal) into the stream.

        The next ``seq`` is broadcast at once, together with any early events
        waiting behind it; an event already broadcast is ignored; an early one
        waits, and after ``gap_grace`` the journal fills the gap.
        """
        seq = event["seq"]
        self._last_activity = time.monotonic()
        if seq > self._highest_forwarded:
            self._highest_forwarded = seq
            if version is not None:
                self._explained_version = version
        if seq <= self.last_seq:
            return
        self._pending[seq] = event
        while self.last_seq + 1 in self._pending:
            self._emit(self._pending.pop(self.last_seq + 1))
        if self._pending and self._gap_task is None:
            self._gap_task = asyncio.ensure_future(self._fill_gap_later())

    def _emit(self, event: Event) -> None:
        message = encode_event(event)
        self.last_seq = event["seq"]
        self._recent.append((event["seq"], message))
        self.stats.events += 1
        broadcast(self.subscribers, message, text=True)
        self._cut_off_slow_subscribers()

    def _cut_off_slow_subscribers(self) -> None:
        limit = self.config.slow_subscriber_limit
        for connection in list(self.subscribers):
            if connection.transport.get_write_buffer_size() > limit:
                self.subscribers.discard(connection)
                self.stats.slow_closed += 1
                log.warning("closing a subscriber that stopped reading (%s)", connection.id)
                self._spawn(
                    connection.close(1013, f"too slow; reconnect with ?since={self.last_seq}")
                )

    async def _fill_gap_later(self) -> None:
        try:
            await asyncio.sleep(self.config.gap_grace)
            if self._pending:
                await self.reconcile()
        finally:
            self._gap_task = None

    async def reconcile(self) -> None:
        """Read the journal and broadcast every committed event not broadcast yet."""
        try:
            state = await asyncio.to_thread(self.store.read_state)
        except StoreError as error:
            log.error("cannot read the journal: %s", error)
            return
        self._catch_up(state)

    def _catch_up(self, state: StoreState) -> None:
        """Bring the stream up to ``state`` (synchronously: nothing else runs meanwhile)."""
        self.stats.gap_fills += 1
        # A read older than what forwards already told us is merely stale (it ran in a
        # thread while events kept arriving); only a new database id means a new database.
        if self.database_id and state.database_id != self.database_id:
            log.warning("the database was replaced; sending everyone a resync")
            self._load(state)
            self._broadcast_resync(state)
            return
        self.database_id = state.database_id  # adopts the id of a database created meanwhile
        missing = [event for event in state.journal if event["seq"] > self.last_seq]
        if missing and missing[0]["seq"] != self.last_seq + 1:
            log.warning(
                "events %d..%d left the journal unbroadcast",
                self.last_seq + 1,
                missing[0]["seq"] - 1,
            )
            self._load(state)
            self._broadcast_resync(state)
            return
        for event in missing:
            self.accept(event)
        for seq in [seq for seq in self._pending if seq <= self.last_seq]:
            del self._pending[seq]
        if self.last_seq == state.latest_seq:
            self._explained_version = state.version
            self._highest_forwarded = max(self._highest_forwarded, state.latest_seq)

    def _broadcast_resync(self, state: StoreState) -> None:
        message = projects_message(
            "resync", state.project_records, seq=state.latest_seq, timestamp=_now()
        )
        broadcast(self.subscribers, message, text=True)

    def _projects_at_last_seq(self, state: StoreState) -> list[dict[str, Any]]:
        """The projects as of ``last_seq``, from a read of the file at or before it."""
        projects = {record["project_id"]: record for record in state.project_records}
        for seq, message in self._recent:
            if seq <= state.latest_seq:
                continue
            event = decode_event(message)
            data = event["data"]
            if event["event_type"] == "project_deleted":
                projects.pop(data["project_id"], None)
            else:
                projects[data["project_id"]] = {
                    key: value for key, value in data.items() if key != "updated_fields"
                }
        return list(projects.values())

    async def _watch_database(self) -> None:
        """Notice commits whose forward never came: the file changed and no forward explains it."""
        unexplained_since: float | None = None
        while True:
            await asyncio.sleep(self.config.poll_interval)
            version = self.store.file_version()
            if version == self._explained_version:
                unexplained_since = None
                continue
            now = time.monotonic()
            if unexplained_since is None:
                unexplained_since = now
            elif now - unexplained_since >= self.config.gap_grace:
                unexplained_since = None
                await self.reconcile()

    async def _stop_when_idle(self, idle_timeout: float) -> None:
        while True:
            await asyncio.sleep(min(1.0, idle_timeout / 4))
            idle = time.monotonic() - self._last_activity
            if not self.subscribers and idle >= idle_timeout:
                log.info("idle for %.0fs with no subscribers; stopping", idle)
                self.stop()
                return

    # -- HTTP and WebSocket ------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` and ``projctl server status`` report."""
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "url": self.url,
            "database": {"path": str(self.config.db_path), "id": self.database_id},
            "latest_seq": self.last_seq,
            "subscribers": len(self.subscribers),
            "events_broadcast": self.stats.events,
            "gap_fills": self.stats.gap_fills,
            "slow_subscribers_closed": self.stats.slow_closed,
            "uptime_seconds": round(time.time() - self.stats.started, 3),
            "idle_timeout": self.config.idle_timeout,
        }

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return _json_response(http.HTTPStatus.OK, self.health())
        if url.path == "/publish":
            if not _bearer_matches(request.headers, self.token):
                response = connection.respond(
                    http.HTTPStatus.UNAUTHORIZED, "publishing needs the server token\n"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
                return response
            return None
        if url.path != "/ws":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found; subscribe at /ws\n")
        query = parse_qs(url.query, keep_blank_values=True)
        token = self.config.subscriber_token
        if token is not None and not hmac.compare_digest(
            query.get("token", [""])[-1].encode(), token.encode()
        ):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "subscribing needs ?token=\n")
        try:
            _parse_since(query)
        except ValueError as error:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{error}\n")
        return None

    async def _handle_websocket(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        url = urlsplit(connection.request.path)
        if url.path == "/publish":
            await self._serve_publisher(connection)
            return
        query = parse_qs(url.query, keep_blank_values=True)
        since = _parse_since(query)
        snapshot = query.get("snapshot", ["0"])[-1] in ("1", "true", "yes")
        await self._serve_subscriber(connection, since=since, snapshot=snapshot)

    async def _serve_subscriber(
        self, connection: ServerConnection, *, since: int | None, snapshot: bool
    ) -> None:
        connection.protocol.max_message_size = SUBSCRIBER_MAX_MESSAGE
        needs_projects = snapshot or (since is not None and not self._can_replay(since))
        state = await asyncio.to_thread(self.store.read_state) if needs_projects else None
        # From here to the registration nothing awaits: replay and live feed join seamlessly.
        if state is not None and state.latest_seq > self.last_seq:
            self._catch_up(state)
        if since is not None and self._can_replay(since):
            for seq, message in self._recent:
                if seq > since:
                    broadcast([connection], message, text=True)
        elif state is not None:
            message = projects_message(
                "snapshot" if since is None else "resync",
                self._projects_at_last_seq(state),
                seq=self.last_seq,
                timestamp=_now(),
            )
            broadcast([connection], message, text=True)
        self.subscribers.add(connection)
        self._last_activity = time.monotonic()
        try:
            async for _message in connection:
                pass  # subscribers cannot publish: what they send is ignored
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.discard(connection)
            self._last_activity = time.monotonic()

    def _can_replay(self, since: int) -> bool:
        """Whether every event after ``since`` is still in the replay window."""
        oldest = self._recent[0][0] if self._recent else self.last_seq + 1
        return oldest - 1 <= since <= self.last_seq

    async def _serve_publisher(self, connection: ServerConnection) -> None:
        async for message in connection:
            try:
                request = orjson.loads(message)
            except orjson.JSONDecodeError as error:
                reply = {"ok": False, "error": f"not JSON: {error}"}
            else:
                reply = self._handle_forward(request)
            await connection.send(orjson.dumps(reply).decode())

    def _handle_forward(self, request: Any) -> dict[str, Any]:
        """Accept one forward, ``{"event": {...}, "version": [...]}``, already parsed."""
        try:
            event = check_event(request.get("event"))
            raw_version = request.get("version")
            version = (
                (int(raw_version[0]), int(raw_version[1]), int(raw_version[2]))
                if isinstance(raw_version, list) and len(raw_version) == 3
                else None
            )
        except (EventDecodeError, AttributeError, TypeError, ValueError) as error:
            return {"ok": False, "error": f"not a forward: {error}"}
        self.accept(event, version)
        return {"ok": True, "seq": event["seq"]}

    async def _handle_local(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Requests on the private Unix socket: forward, status, stop."""
        try:
            while line := await reader.readline():
                try:
                    request = orjson.loads(line)
                    operation = request.get("op")
                except (orjson.JSONDecodeError, AttributeError):
                    operation = None
                if operation == "forward":
                    reply = self._handle_forward(request)
                elif operation == "status":
                    reply = {"ok": True, **self.health()}
                elif operation == "stop":
                    reply = {"ok": True}
                    self.stop()
                else:
                    reply = {"ok": False, "error": "unknown request"}
                writer.write(orjson.dumps(reply) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    # -- the state file ------------------------------------------------------------

    def _write_state_file(self) -> None:
        state = {
            "pid": os.getpid(),
            "host": self.config.host,
            "port": self.port,
            "url": self.url,
            "token": self.token,
            "socket": str(self.config.socket_path),
            "db": str(self.config.db_path),
            "database_id": self.database_id,
            "version": __version__,
            "auto": self.config.idle_timeout is not None,
            "subscriber_token": self.config.subscriber_token,
            "started_at": self.stats.started,
        }
        path = self.config.state_file
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(state))
        os.replace(temp, path)

    def _remove_state_file(self) -> None:
        # Only our own: a server started after us may already have replaced it.
        try:
            state = orjson.loads(self.config.state_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return
        if state.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.config.state_file.unlink()
            with contextlib.suppress(OSError):
                self.config.socket_path.unlink()


def _now() -> str:
    return format_timestamp(utc_now())


def _json_response(status: http.HTTPStatus, body: Any) -> Response:
    payload = orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, payload)


def _bearer_matches(headers: Headers, token: str) -> bool:
    given = headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def _parse_since(query: dict[str, list[str]]) -> int | None:
    """``?since=N`` as an int >= 0; ``ValueError`` with a message for anything else."""
    if "since" not in query:
        return None
    raw = query["since"][-1].strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_SINCE_DIGITS:
        raise ValueError(f"since must be a whole number >= 0, got {raw[:40]!r}")
    return int(raw)


def _raise_open_file_limit() -> None:
    """Let one server hold thousands of subscribers: the usual soft limit is 1024 sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run_server(
    store: ProjectStore,
    config: ServerConfig,
    *,
    on_ready: Callable[[BroadcastServer], None] | None = None,
) -> None:
    """Run a server in the foreground until SIGINT/SIGTERM or a ``stop`` request.

    Raises :class:`ServerError` when it cannot listen.
    """

    _raise_open_file_limit()

    async def main() -> None:
        server = BroadcastServer(store, config)
        await server.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
        if on_ready is not None:
            on_ready(server)
        await server.serve_until_stopped()

    asyncio.run(main())
