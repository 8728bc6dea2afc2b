"""The broadcast server's I/O: /ws subscribers, publishers, the Unix socket, the file watcher.

One server serves one database file. It listens on

- a TCP port (default ``localhost:8000``) for HTTP and WebSocket:

  ``GET /ws``
      subscribers. Each lifecycle event arrives as one text frame holding the
      JSON of the event contract, in ``seq`` order. ``?since=N`` first replays
      every retained event with ``seq > N``; ``?snapshot=1`` first sends the
      current projects as one ``snapshot`` message. When ``N`` is older than
      the journal keeps (or newer than the database has), a ``resync``
      message with the current projects comes first instead. When the server
      has read tokens (beyond loopback, or ``--require-token``), subscribers present
      one (see :class:`AccessPolicy`).
  ``GET /publish``
      WebSocket for publishers holding the server token
      (``Authorization: Bearer <token>``); each text frame is one forward.
  ``GET /healthz``
      a small JSON status.

- a Unix socket in the database's private runtime folder, for local commands
  (the ``rpc`` protocol: forward, status, stop).

Every decision (order, gaps, replay, snapshots) is the :class:`~projctl.sequencer.Sequencer`'s;
this module only moves bytes between it, the sockets and the database file.
``python -m projctl.server`` runs a background server (see ``runtime.ServerLaunch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import hashlib
import hmac
import http
import ipaddress
import logging
import os
import re
import secrets
import signal
import ssl
import stat
import sys
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from projctl import __version__, remote, rpc, runtime
from projctl.errors import CorruptDatabaseError, ProjctlError, ServerError, StoreError
from projctl.events import Event, EventDecodeError, check_event, dashboard_contract
from projctl.model import PROJECT_FIELDS, STATUSES
from projctl.runtime import RuntimePaths, ServerLaunch, ServerState
from projctl.sequencer import Sequencer
from projctl.store import FileVersion, ProjectStore, StoreState

__all__ = [
    "BroadcastServer",
    "ServerConfig",
    "configure_logging",
    "main",
    "run_server",
]

log = logging.getLogger("projctl.server")

#: Browsers on these origins (any port) may subscribe without being allowed explicitly.
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")
#: Subscribers have nothing to say; anything larger than this closes them with 1009.
SUBSCRIBER_MAX_MESSAGE = 4096
_MAX_SINCE_DIGITS = 19
#: Answers to writes kept for retries of the same request id, and their bytes at most.
_RPC_ANSWERS_KEPT = 4096
_RPC_ANSWER_BYTES_KEPT = 16 << 20
#: Team-protocol reads answered at once; more wait their turn (writes go first).
_RPC_READS_AT_ONCE = 2
#: Reads answered from one read of the whole file, shared by every request at the time.
_RPC_SHARED_READS = frozenset({"list", "info"})
#: How long a read waits for queued writes before it takes its turn anyway.
_RPC_READ_YIELD = 1.0
#: How long a stopping server waits for the team-protocol requests begun to be answered (a
#: write may wait 10 s for the database lock).
_RPC_FINISH_TIMEOUT = 15.0
#: A browser cannot set headers on a WebSocket: it offers the token as this subprotocol.
_TOKEN_PROTOCOL = "projctl-token."
#: Listening on every address: every name is ours.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: Accepted sockets kept past ``max_connections``: room to answer a 503, and for ``/healthz``.
_SPARE_SLOTS = 2
#: After a burst of at least this many TLS handshakes, freed memory is handed back.
_TRIM_AFTER_HANDSHAKES = 32


@dataclass(frozen=True)
class ServerConfig:
    """How one server runs."""

    host: str = "localhost"
    port: int = 8000
    #: Extra browser origins allowed to subscribe; ``"*"`` allows any.
    allow_origins: tuple[str, ...] = ()
    #: Stop after this many seconds with no subscribers and no events (``None``: never).
    idle_timeout: float | None = None
    #: A read token subscribers may present (set when listening beyond loopback).
    subscriber_token: str | None = None
    #: A subscriber whose unsent data passes this many bytes is closed with 1013.
    slow_subscriber_limit: int = 1 << 20
    #: Unsent bytes of all subscribers together; past it the furthest behind are closed.
    send_budget: int = 32 << 20
    #: How long an early event waits for the ones before it before the journal is read.
    gap_grace: float = 0.3
    #: How often the database file is checked for commits nobody forwarded.
    poll_interval: float = 0.2
    #: How long a snapshot or API read waits out a file another program is rewriting.
    transient_read_wait: float = 2.0
    ping_interval: float | None = 20.0
    #: How long a closing handshake may take before the connection is dropped.
    close_timeout: float = 5.0
    journal_window: int = 1000
    #: Open connections (subscribers, publishers, HTTP requests) beyond this get 503.
    #: Every accepted socket counts, from its accept; past this and a few spare slots
    #: (to answer with a 503, and for ``/healthz``), one is closed as soon as it is accepted.
    max_connections: int = runtime.DEFAULT_MAX_CONNECTIONS
    #: How long a new connection may take for its TLS handshake, and then for its HTTP
    #: request, before it is closed.
    handshake_timeout: float = 10.0
    #: TLS handshakes under way at once; the next ones wait their turn (holding only their
    #: socket) within ``handshake_timeout``.
    max_handshakes: int = 64
    #: When ``port`` is taken, listen on any free port instead of failing.
    port_fallback: bool = False
    #: Tokens that may read (subscribe, the HTTP API, the team protocol's reads).
    read_tokens: frozenset[str] = frozenset()
    #: Tokens that may also write through the team protocol (``/rpc``).
    write_tokens: frozenset[str] = frozenset()
    #: TLS for ``wss://`` and ``https://`` (``None``: plain).
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        # The subscriber token is one of the read tokens, however the config was built.
        if self.subscriber_token is not None and self.subscriber_token not in self.read_tokens:
            object.__setattr__(self, "read_tokens", self.read_tokens | {self.subscriber_token})

    @classmethod
    def for_host(
        cls,
        host: str,
        *,
        require_token: bool = False,
        token_file: Path | None = None,
        **settings: Any,
    ) -> ServerConfig:
        """A config for ``host`` with its tokens: from ``token_file``, or fresh ones. A read
        token is needed beyond loopback, and on loopback too with ``require_token`` (or a
        token file); a write token always exists (the team protocol never runs without)."""
        if token_file is not None:
            read, write = read_token_file(token_file)
        else:
            needs_token = require_token or not runtime.is_loopback(host)
            read = frozenset({secrets.token_urlsafe(24)}) if needs_token else frozenset()
            write = frozenset({secrets.token_urlsafe(24)})
        subscriber = min(read) if read else (min(write) if token_file is not None else None)
        return cls(
            host=host,
            subscriber_token=subscriber,
            read_tokens=read,
            write_tokens=write,
            **settings,
        )


@dataclass
class _Backlog:
    """Live events for a subscriber still receiving its opening, and their size in bytes."""

    messages: deque[bytes] = field(default_factory=deque)
    size: int = 0


@dataclass
class _RpcWindow:
    """A ``/rpc`` connection's requests received and not yet answered (how many, how large),
    and whether it ended."""

    taken: int = 0
    size: int = 0
    closed: bool = False

    def fits(self, message: str | bytes) -> bool:
        """Whether ``message`` may wait its turn: within the window, or the only one."""
        return not self.taken or (
            self.taken < remote.RPC_WINDOW and self.size + len(message) <= remote.RPC_WINDOW_BYTES
        )


@dataclass
class _Stats:
    started: float = field(default_factory=time.time)
    slow_closed: int = 0
    #: Sockets closed as soon as they were accepted, the server being full.
    refused_at_accept: int = 0
    journal_read_failures: int = 0


class _CountedConnection(ServerConnection):
    """A connection counted from the moment its socket is accepted, not from its handshake.

    ``serve`` makes one for each accepted socket (its documented ``create_connection``
    hook), before a byte is read: past the server's cap it is closed at once. With TLS the
    handshake is done here, with ``loop.start_tls``, at most ``max_handshakes`` at a time and
    within ``handshake_timeout``: when asyncio did it for ``serve``, every accepted socket got
    its TLS buffers (256 KiB each) before websockets, and so the cap, ever saw it.
    """

    #: The server that counts this connection (set on the subclass each server makes).
    owner: BroadcastServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The transport asyncio handed this protocol (for TLS, once its handshake is done):
        #: its write buffer is what a subscriber holds unsent. Kept here, through asyncio's
        #: protocol contract, because websockets does not document its own ``transport``.
        self.wire: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        accepted = cast(asyncio.Transport, transport)
        if not self.owner._admit(self):
            accepted.abort()
            return
        context = self.owner.config.ssl_context
        if context is None:
            self._open(accepted)
            return
        accepted.pause_reading()  # not a byte reaches the WebSocket protocol before TLS
        self.owner._spawn(self._start_tls(accepted, context))

    def _open(self, transport: asyncio.Transport) -> None:
        self.wire = transport
        super().connection_made(transport)  # websockets starts its handshake here
        for data in self._early:
            super().data_received(data)
        self._early = []

    async def _start_tls(self, accepted: asyncio.Transport, context: ssl.SSLContext) -> None:
        timeout = self.owner.config.handshake_timeout
        try:
            secured = await asyncio.wait_for(self._tls_handshake(accepted, context), timeout)
        except Exception as error:  # a timeout, a bad or abandoned handshake: this one only
            log.debug("TLS handshake failed: %r", error)
            accepted.abort()
            self.owner._release(self)
            return
        except BaseException:
            accepted.abort()
            self.owner._release(self)
            raise
        if self._lost:
            return
        self._open(secured)

    async def _tls_handshake(
        self, accepted: asyncio.Transport, context: ssl.SSLContext
    ) -> asyncio.Transport:
        owner = self.owner
        async with owner._tls_turns:
            owner._tls_started()
            try:
                secured = await asyncio.get_running_loop().start_tls(
                    accepted,
                    self,
                    context,
                    server_side=True,
                    ssl_handshake_timeout=owner.config.handshake_timeout,
                )
            finally:
                owner._tls_ended()
        if secured is None:
            raise ConnectionResetError("closed during the TLS handshake")
        return secured

    def data_received(self, data: bytes) -> None:
        if self.wire is None:
            # TLS 1.3 may deliver the request with the end of the handshake, before
            # start_tls() has returned: keep it for the WebSocket protocol.
            self._early.append(data)
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self.wire is not None:
            super().eof_received()
        # else: returning None closes the transport; nothing was opened yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.owner._release(self)
        if self.wire is not None:
            super().connection_lost(exc)

    def unsent_bytes(self) -> int:
        """Bytes written to this connection that its peer has not taken yet."""
        return self.wire.get_write_buffer_size() if self.wire is not None else 0

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self.wire is not None:
            self.wire.abort()


def _counted(connection: ServerConnection) -> _CountedConnection:
    """Every connection this server's ``serve`` makes is a :class:`_CountedConnection`."""
    return cast(_CountedConnection, connection)


class BroadcastServer:
    """Fans committed events out to subscribers, in ``seq`` order, with nothing lost.

    Everything runs on one event loop; the :class:`Sequencer` decides, this class
    sends. Methods that feed the sequencer never await in the middle, so a
    subscriber is registered, replayed to and switched to the live feed in one
    step and no event can slip in between.
    """

    def __init__(self, store: ProjectStore, paths: RuntimePaths, config: ServerConfig) -> None:
        self.store = store
        self.paths = paths
        self.config = config
        self.token = secrets.token_urlsafe(32)
        self.subscribers: set[ServerConnection] = set()
        self.stats = _Stats()
        self.sequencer = Sequencer(window=config.journal_window)
        self._gap_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._last_activity = time.monotonic()
        self._stopping = asyncio.Event()
        self._ws_server: Server | None = None
        self._unix_server: asyncio.Server | None = None
        self._state: ServerState | None = None
        self._lock_fd: int | None = None
        #: The team protocol's answered writes, by request id (for retries), oldest first.
        self._rpc_answered: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._rpc_running: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._rpc_write_lock = asyncio.Lock()
        #: Every id answered or in progress, with its request's digest.
        self._rpc_ids: dict[str, str] = {}
        #: The bytes of the replies in ``_rpc_answered``.
        self._rpc_answered_bytes = 0
        #: Writes queued or running; reads wait while there are any (writes go first).
        self._rpc_writes = 0
        self._rpc_no_writes = asyncio.Event()
        self._rpc_no_writes.set()
        self._rpc_reads = asyncio.Semaphore(_RPC_READS_AT_ONCE)
        #: The newest shared read, kept while shared reads wait for their turn (so that they
        #: share it), and those waiting; an older read is let go as soon as a newer one comes.
        self._rpc_read_kept: StoreState | None = None
        self._rpc_shared_waiting = 0
        #: Requests begun and not yet answered, on every connection; none begin once stopping.
        self._rpc_begun = 0
        self._rpc_all_answered = asyncio.Event()
        self._rpc_all_answered.set()
        self._rpc_stopping = False
        #: Subscribers still receiving their snapshot or replay, and what waits for them.
        self._joining: dict[ServerConnection, _Backlog] = {}
        #: Subscribers closed for being slow whose close has not completed yet.
        self._closing: set[ServerConnection] = set()
        self._shared_state: weakref.ref[StoreState] | None = None
        self._reading: asyncio.Future[StoreState] | None = None
        #: The last journal read error logged, so that one bad file is logged once.
        self._read_error: str | None = None
        self.port = config.port
        #: Every accepted socket still open, counted from its accept (see _CountedConnection).
        self._accepted: set[_CountedConnection] = set()
        self._tls_turns = asyncio.Semaphore(max(1, config.max_handshakes))
        self._tls_running = 0
        self._tls_burst = 0

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest event broadcast."""
        return self.sequencer.last_seq

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Take the database's server lock, load the journal, listen on TCP and the Unix
        socket, then publish the state file.

        Raises :class:`~projctl.errors.ServerError` when a server already runs for the
        database (naming it) or the address cannot be had (naming who holds the port).
        """
        # The entry a server keeps needs the database's folder to exist: take it afresh.
        self.paths = runtime.runtime_paths(self.paths.db_path, for_a_server=True)
        self._lock_fd = runtime.claim_server(self.paths)
        try:
            self.sequencer.load(await asyncio.to_thread(self.store.read_state))
            await self._listen()
        except BaseException:
            self._release_lock()
            raise
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()  # a dead server's; we hold the lock, so nobody else's
        old_umask = os.umask(0o077)
        try:
            self._unix_server = await asyncio.start_unix_server(
                self._handle_local, path=str(self.paths.socket), limit=2 * rpc.MAX_MESSAGE
            )
        finally:
            os.umask(old_umask)
        self._state = ServerState(
            pid=os.getpid(),
            host=self.config.host,
            port=self.port,
            url=self.url,
            token=self.token,
            socket=self.paths.socket,
            db=str(self.paths.db_path),
            database_id=self.sequencer.database_id,
            version=__version__,
            auto=self.config.idle_timeout is not None,
            subscriber_token=self.config.subscriber_token,
            started_at=self.stats.started,
            write_token=min(self.config.write_tokens) if self.config.write_tokens else None,
        )
        self._state.write(self.paths.state_file)
        self._spawn(self._watch_database())
        if self.config.idle_timeout is not None:
            self._spawn(self._stop_when_idle(self.config.idle_timeout))
        log.info("serving %s for %s (pid %d)", self.url, self.paths.db_path, os.getpid())

    async def _listen(self) -> None:
        """Listen on the configured address; a taken port is an error unless it may fall back."""
        host, port = self.config.host, self.config.port
        try:
            self._ws_server = await self._serve_on(host, port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and port != 0 and self.config.port_fallback:
                log.info("port %d is taken; listening on a free port instead", port)
                self._ws_server = await self._serve_on(host, 0)
            else:
                raise ServerError(_listen_failure(host, port, error)) from None
        sockets = list(self._ws_server.sockets)  # an Iterable before websockets 15
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def _serve_on(self, host: str, port: int) -> Server:
        attempts = 5 if port == 0 else 1
        for attempt in range(attempts):
            # A name with several addresses (localhost: 127.0.0.1 and ::1) would get a
            # different free port on each: pick one port that all of them can share.
            chosen = await asyncio.to_thread(_free_port, host) if port == 0 else port
            try:
                server: Server = await serve(
                    self._handle_websocket,
                    host,
                    chosen,
                    process_request=self._process_request,
                    select_subprotocol=self._select_subprotocol,
                    # TLS is done by each connection, after it is counted (_CountedConnection).
                    create_connection=self._connection_class(),
                    open_timeout=self.config.handshake_timeout,
                    compression=None,  # small JSON gains nothing; deflate costs CPU
                    max_size=rpc.MAX_MESSAGE,
                    ping_interval=self.config.ping_interval,
                    ping_timeout=self.config.ping_interval,
                    close_timeout=self.config.close_timeout,
                    server_header=f"projctl/{__version__}",
                )
            except OSError as error:
                # Another process took the free port between the probe and the bind.
                if error.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    def _connection_class(self) -> type[ServerConnection]:
        """The class of the connections ``serve`` makes: counted by this server."""

        class Connection(_CountedConnection):
            pass

        Connection.owner = self
        return Connection

    # -- connection accounting ---------------------------------------------------

    def _admit(self, connection: _CountedConnection) -> bool:
        """Count a socket the moment it is accepted; ``False`` when the server is full (past
        ``max_connections`` and its spare slots): it is then closed before it costs more."""
        if len(self._accepted) >= self.config.max_connections + _SPARE_SLOTS:
            self.stats.refused_at_accept += 1
            return False
        self._accepted.add(connection)
        return True

    def _release(self, connection: _CountedConnection) -> None:
        self._accepted.discard(connection)

    def _tls_started(self) -> None:
        self._tls_running += 1
        self._tls_burst = max(self._tls_burst, self._tls_running)

    def _tls_ended(self) -> None:
        self._tls_running -= 1
        if self._tls_running == 0 and self._tls_burst >= _TRIM_AFTER_HANDSHAKES:
            # Each TLS handshake had its own buffers; after a burst of them (a flood of
            # abandoned handshakes, or every subscriber reconnecting) the C allocator keeps
            # the freed pages unless asked.
            self._tls_burst = 0
            asyncio.get_running_loop().call_soon(_return_memory)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.config.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self.port}/ws"

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
        """Close every connection, stop the background tasks, remove the state file."""
        log.info("stopping (pid %d)", os.getpid())
        await self._finish_rpc_requests()
        for task in list(self._background):
            task.cancel()
        if self._unix_server is not None:
            self._unix_server.close()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)
        if self._state is not None:
            self._state.remove(self.paths)
        self._release_lock()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the event stream --------------------------------------------------------

    def accept(
        self,
        event: Event,
        version: FileVersion | None = None,
        restore: tuple[int, int] | None = None,
    ) -> None:
        """Take one committed event (from a forward or the journal) into the stream.

        ``restore``: the commit found an older copy of the database put back (see
        ``store.Change.restore``); when events it lost were sent, everyone starts over
        from the journal instead.
        """
        self._last_activity = time.monotonic()
        if restore is not None and self.sequencer.needs_resync_for(restore):
            log.warning(
                "an older copy of the database was put back (it ends at seq %d; seqs up to %d "
                "were issued): every subscriber starts over",
                *restore,
            )
            self._spawn(self.reconcile())
            return
        self._send_to_all(self.sequencer.accept(event, version))
        if self.sequencer.waiting and self._gap_task is None:
            self._gap_task = asyncio.ensure_future(self._fill_gap_later())

    def _send_to_all(self, messages: Iterable[bytes]) -> None:
        """Send to every live subscriber, and into the backlog of those still joining."""
        sent = False
        for message in messages:
            sent = True
            # As str: a text frame in every websockets version (``text=`` came in 16.1).
            broadcast(self.subscribers, message.decode())
            for backlog in self._joining.values():
                backlog.messages.append(message)
                backlog.size += len(message)
        if sent:
            self._cut_off_slow_subscribers()

    def _cut_off_slow_subscribers(self) -> None:
        """Close subscribers that hold too many unsent bytes, with 1013 (they may resume).

        Every byte counts: what waits in a subscriber's socket buffer, and the backlog of
        one still receiving its snapshot or replay. One subscriber may hold at most
        ``slow_subscriber_limit``; all of them together at most ``send_budget``, and past
        that the ones furthest behind their fair share go first. A closed subscriber keeps
        its buffer until it has read up to the close frame, which one that never reads
        never does: past the budget, those are dropped at once, largest first. So many
        subscribers that stop reading together cannot take the server's memory with them.
        """
        limit, budget = self.config.slow_subscriber_limit, self.config.send_budget
        pending = [
            (_counted(connection).unsent_bytes(), connection) for connection in self.subscribers
        ] + [
            (backlog.size + _counted(connection).unsent_bytes(), connection)
            for connection, backlog in self._joining.items()
        ]
        total = sum(size for size, _ in pending) + sum(
            _counted(connection).unsent_bytes() for connection in self._closing
        )
        fair_share = budget // max(1, len(pending))
        for size, connection in sorted(pending, key=lambda item: item[0], reverse=True):
            if size > limit or (total > budget and size > fair_share):
                self.subscribers.discard(connection)
                self._joining.pop(connection, None)
                self._close_slow(connection)
            elif total <= budget:
                break  # sorted: nobody after this one is over its bound either
        if total > budget:
            closing = [(_counted(c).unsent_bytes(), c) for c in self._closing]
            for size, connection in sorted(closing, key=lambda item: item[0], reverse=True):
                _counted(connection).abort()
                self._closing.discard(connection)
                total -= size
                if total <= budget:
                    break

    def _close_slow(self, connection: ServerConnection) -> None:
        self.stats.slow_closed += 1
        self._closing.add(connection)
        log.warning("closing a subscriber that stopped reading (%s)", connection.id)
        # close() waits for the closing handshake, which such a peer may never answer;
        # its close_timeout, or the budget above, then aborts the connection.
        self._spawn(connection.close(1013, f"too slow; reconnect with ?since={self.last_seq}"))

    async def _fill_gap_later(self) -> None:
        try:
            await asyncio.sleep(self.config.gap_grace)
            if self.sequencer.waiting:
                await self.reconcile()
        finally:
            self._gap_task = None

    async def reconcile(self) -> None:
        """Read the journal and broadcast every committed event not broadcast yet.

        A file that cannot be read (garbage, a malformed entry another program wrote,
        an empty file being rewritten in place) is logged once, not at every attempt;
        delivery resumes when it is fixed. A database that holds fewer events than were
        sent is an older copy put back: everyone gets a ``resync``, and ``seq`` goes on
        from the last one sent.
        """
        try:
            state = await asyncio.to_thread(self.store.read_state)
            if self.sequencer.is_behind(state):
                # A read that began before the last forward came is merely stale: only a
                # read begun now tells a restore.
                state = await asyncio.to_thread(self.store.read_state)
        except StoreError as error:
            self.stats.journal_read_failures += 1
            if str(error) != self._read_error:
                self._read_error = str(error)
                log.error("cannot read the journal: %s; retrying until it is fixed", error)
            return
        if self._read_error is not None:
            self._read_error = None
            log.info("the journal is readable again")
        if not state.database_id and self.sequencer.database_id:
            if self._read_error != "gone":
                self._read_error = "gone"
                log.warning("the database file is gone; waiting for it to come back")
            return
        if self.sequencer.is_behind(state):
            log.warning(
                "the database went back from seq %d to %d (an older copy was put back): "
                "every subscriber starts over; seq goes on from %d",
                self.sequencer.last_seq,
                state.latest_seq,
                self.sequencer.last_seq,
            )
            self._send_to_all(self.sequencer.restored(state))
            return
        self._send_to_all(self.sequencer.catch_up(state))

    async def _watch_database(self) -> None:
        """Notice commits whose forward never came: the file changed and no forward explains it.

        Runs for the server's whole life: whatever one round raises is logged and the
        next round goes on, so no database content can stop the watcher.
        """
        unexplained_since: float | None = None
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                version = self.store.file_version()
                if self.sequencer.is_explained(version):
                    unexplained_since = None
                    continue
                now = time.monotonic()
                if unexplained_since is None:
                    unexplained_since = now
                elif now - unexplained_since >= self.config.gap_grace:
                    unexplained_since = None
                    await self.reconcile()
            except Exception:
                log.exception("the database watcher failed a round; it goes on")

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
            "database": {"path": str(self.paths.db_path), "id": self.sequencer.database_id},
            "latest_seq": self.last_seq,
            "subscribers": len(self.subscribers),
            "connections": len(self._accepted),
            "refused_at_accept": self.stats.refused_at_accept,
            "events_broadcast": self.sequencer.stats.events,
            "gap_fills": self.sequencer.stats.gap_fills,
            "slow_subscribers_closed": self.stats.slow_closed,
            "unsent_bytes": self._unsent_bytes(),
            "journal_read_failures": self.stats.journal_read_failures,
            "uptime_seconds": round(time.time() - self.stats.started, 3),
            "idle_timeout": self.config.idle_timeout,
        }

    def _unsent_bytes(self) -> int:
        """Bytes waiting in every open connection's buffer and every joining backlog."""
        return sum(c.unsent_bytes() for c in self._accepted) + sum(
            backlog.size for backlog in self._joining.values()
        )

    def public_health(self) -> dict[str, Any]:
        """What ``/healthz`` tells a client the access policy shows no detail to."""
        return {"status": "ok", "version": __version__, "latest_seq": self.last_seq}

    @functools.cached_property
    def access(self) -> AccessPolicy:
        """Who may do what on this server (see :class:`AccessPolicy`)."""
        return AccessPolicy.of(self.config)

    def _host_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Host`` is well formed and names this server."""
        return self.access.host_allowed(header)

    def _is_trusted(self, connection: ServerConnection, request: Request) -> bool:
        """Whether ``/healthz`` shows this client its detail: a token holder, or, when the
        server asks for no read token, a loopback client."""
        address = connection.remote_address
        peer = str(address[0]) if address else None
        return self.access.shows_health_detail(peer, self._presented_token(request))

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Route one request: answer HTTP ones here, let WebSocket handshakes go on (``None``)."""
        if not self._host_allowed(request.headers.get("Host")):
            return connection.respond(
                http.HTTPStatus.MISDIRECTED_REQUEST, "this server does not answer to that Host\n"
            )
        url = urlsplit(request.path)
        # Every other open connection counts, from its accept (its handshake too). /healthz
        # is answered past the cap, in a spare slot: monitoring must see a full server.
        if url.path != "/healthz" and len(self._accepted) - 1 >= self.config.max_connections:
            response = connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later\n"
            )
            response.headers["Retry-After"] = "5"
            return response
        if not self._origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
            if url.path.startswith("/api/"):
                return _api_error(http.HTTPStatus.FORBIDDEN, "forbidden", "origin not allowed")
            return connection.respond(http.HTTPStatus.FORBIDDEN, "this origin is not allowed\n")
        if self.access.token_in_url_refused(url.path, url.query):
            message = "a token never travels in a URL: send it as Authorization: Bearer"
            if url.path.startswith("/api/"):
                return _api_error(http.HTTPStatus.BAD_REQUEST, "invalid_input", message)
            return connection.respond(http.HTTPStatus.BAD_REQUEST, message + "\n")
        if url.path == "/healthz":
            trusted = self._is_trusted(connection, request)
            return _json_response(
                http.HTTPStatus.OK, self.health() if trusted else self.public_health()
            )
        if url.path in _PAGES:
            return _page_response(url.path, canonical_host(request.headers.get("Host")))
        if url.path.startswith("/api/"):
            return await self._answer_api(request, url.path, parse_qs(url.query))
        if url.path == remote.RPC_PATH:
            if self._presented_token(request) is None:
                response = connection.respond(
                    http.HTTPStatus.UNAUTHORIZED, "the team protocol needs a read or write token\n"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="projctl"'
                return response
            return None
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
        if not self._token_presented(request):
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                "subscribing needs the token: ?token= or the projctl-token subprotocol\n",
            )
        try:
            _parse_since(query)
        except ValueError as error:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{error}\n")
        return None

    def _token_presented(self, request: Request) -> bool:
        """Whether a reader holds a token, if one is needed: as ``Authorization: Bearer``,
        (from a browser, which can set no header) as the WebSocket subprotocol
        ``projctl-token.<token>``, or as ``?token=`` on a plain server's ``/ws``."""
        return self.access.may_read(self._presented_token(request))

    def _presented_token(self, request: Request) -> str | None:
        """The server token a request carries, found in constant time (see
        :meth:`AccessPolicy.presented_token`); ``None`` when it carries none."""
        return self.access.presented_token(request.headers, request.path)

    def _origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser page at ``origin`` may use this server (every route alike)."""
        return self.access.origin_allowed(origin, host)

    async def _answer_api(
        self, request: Request, path: str, query: dict[str, list[str]]
    ) -> Response:
        """The read-only HTTP API: the same data, Host, Origin and token rules as ``/ws``
        (Host and Origin are checked for every route before this)."""
        origin = request.headers.get("Origin")
        if not self._token_presented(request):
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

    async def _current_projects(self) -> list[dict[str, Any]]:
        """The projects as of the last event broadcast, from the shared read of the file."""
        state = await self._read_state_shared()
        if state.latest_seq > self.sequencer.last_seq:
            self._send_to_all(self.sequencer.catch_up(state))
        return self.sequencer.projects_at_last_seq(state)

    def _select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """Echo a browser's ``projctl`` or ``projctl-token.*`` subprotocol, which it must see
        in the answer; clients that offer none (the seed's snippet) get none."""
        for protocol in subprotocols:
            if protocol == "projctl" or protocol.startswith(_TOKEN_PROTOCOL):
                return protocol
        return None

    async def _handle_websocket(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        url = urlsplit(connection.request.path)
        if url.path == "/publish":
            await self._serve_publisher(connection)
            return
        if url.path == remote.RPC_PATH:
            may_write = self.access.may_write(self._presented_token(connection.request))
            await self._serve_rpc(connection, may_write=may_write)
            return
        query = parse_qs(url.query, keep_blank_values=True)
        since = _parse_since(query)
        snapshot = query.get("snapshot", ["0"])[-1] in ("1", "true", "yes")
        await self._serve_subscriber(connection, since=since, snapshot=snapshot)

    async def _serve_subscriber(
        self, connection: ServerConnection, *, since: int | None, snapshot: bool
    ) -> None:
        sequencer = self.sequencer
        state = None
        state_was_read = sequencer.needs_projects(since=since, snapshot=snapshot)
        if state_was_read:
            state = await self._read_state_shared()
        # From here to the registration nothing awaits: replay and live feed join seamlessly.
        if state is not None and state.latest_seq > sequencer.last_seq:
            self._send_to_all(sequencer.catch_up(state))
        parts = sequencer.opening_parts(since=since, snapshot=snapshot, state=state)
        self._last_activity = time.monotonic()
        try:
            if parts:
                await self._send_opening(connection, parts)
            else:
                self.subscribers.add(connection)
            state, parts = None, []  # a large read is kept only while someone still streams it
            async for message in connection:
                # Subscribers cannot publish: what they send is ignored, up to a bound.
                if _too_big(message, SUBSCRIBER_MAX_MESSAGE):
                    await connection.close(1009, f"at most {SUBSCRIBER_MAX_MESSAGE} bytes")
                    break
        except ConnectionClosed:
            pass
        finally:
            self._joining.pop(connection, None)
            self.subscribers.discard(connection)
            self._closing.discard(connection)
            self._last_activity = time.monotonic()
            if state_was_read:
                state, parts = None, []
                self._return_memory_when_idle()

    async def _send_opening(
        self, connection: ServerConnection, parts: list[bytes | Iterator[bytes]]
    ) -> None:
        """Stream a new subscriber's opening with backpressure, then switch it to the live feed.

        Each send waits while the subscriber's socket holds more than websockets'
        write limit, so a subscriber that does not read costs that much and no more:
        a snapshot of a large database is never queued whole. Live events that come
        meanwhile wait in its backlog, counted against the same per-subscriber bound.
        """
        backlog = self._joining[connection] = _Backlog()
        for part in parts:
            await connection.send(part, text=True)
        while backlog.messages:
            message = backlog.messages.popleft()
            backlog.size -= len(message)
            await connection.send(message, text=True)
        # The backlog is empty and nothing awaits from here: the live feed goes on seamlessly.
        del self._joining[connection]
        self.subscribers.add(connection)

    def _return_memory_when_idle(self) -> None:
        """Give the memory of a large read back to the system once nobody streams it.

        A snapshot of a large database parses the whole file; when the last subscriber
        that needed it is gone, the parsed projects are garbage, but the C allocator
        keeps the freed pages unless asked. Linux/glibc only; elsewhere a no-op.
        """
        if self._joining or (self._shared_state is not None and self._shared_state()):
            return
        gc.collect()
        _malloc_trim()

    async def _read_state_shared(self) -> StoreState:
        """One read of the database for every subscriber that needs the projects now.

        Many subscribers asking for a snapshot at once share one read (and its memory)
        instead of each parsing the whole file: a read is reused while its file version
        is current and some subscriber still holds it.
        """
        cached = self._shared_state() if self._shared_state is not None else None
        if cached is not None and cached.version == self.store.file_version():
            return cached
        if self._reading is None:
            self._reading = asyncio.ensure_future(asyncio.to_thread(self._read_state_patiently))
        reading = self._reading
        try:
            state = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        self._shared_state = weakref.ref(state)
        return state

    def _read_state_patiently(self) -> StoreState:
        """A read of the database for a subscriber or the API, waiting out another program
        rewriting the file in place (empty or half written) for up to
        ``transient_read_wait`` seconds: nobody is shown an empty registry meanwhile."""
        deadline = time.monotonic() + self.config.transient_read_wait
        while True:
            try:
                return self.store.read_state()
            except CorruptDatabaseError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    async def _serve_rpc(self, connection: ServerConnection, *, may_write: bool) -> None:
        """The team protocol: one reply per request, each write applied once per id.

        This task only reads: requests go to a queue that a worker answers one at a time,
        in order, so the connection keeps reading (pongs too: keepalive needs its reader
        to run) however many requests a client pipelines. A request beyond
        :data:`remote.RPC_WINDOW` unanswered ones (or their bytes) is not carried out: it is
        answered ``busy`` at once.
        """
        self._last_activity = time.monotonic()
        queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        window = _RpcWindow()
        worker = asyncio.ensure_future(self._answer_rpc_queue(connection, queue, window, may_write))
        try:
            async for message in connection:
                if _too_big(message, remote.MAX_REQUEST):
                    await connection.close(1009, f"a request is at most {remote.MAX_REQUEST} bytes")
                    break
                if not window.fits(message):
                    await connection.send(remote.busy_reply(message), text=True)
                else:
                    window.taken += 1
                    window.size += len(message)
                    queue.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            # Requests not begun are dropped (their client is gone and may retry them); the
            # one running finishes, so its answer is kept for a retry.
            window.closed = True
            queue.put_nowait(None)
            await asyncio.shield(worker)

    async def _answer_rpc_queue(
        self,
        connection: ServerConnection,
        queue: asyncio.Queue[str | bytes | None],
        window: _RpcWindow,
        may_write: bool,
    ) -> None:
        """Answer one connection's requests in order until it ends (a ``None`` entry)."""
        while (message := await queue.get()) is not None:
            if window.closed or self._rpc_stopping:
                continue
            self._rpc_begun += 1
            self._rpc_all_answered.clear()
            try:
                await self._answer_rpc_request(connection, message, window, may_write)
            finally:
                self._rpc_begun -= 1
                if not self._rpc_begun:
                    self._rpc_all_answered.set()

    async def _answer_rpc_request(
        self,
        connection: ServerConnection,
        message: str | bytes,
        window: _RpcWindow,
        may_write: bool,
    ) -> None:
        """Answer one request and send its reply (unless the connection is gone)."""
        try:
            reply = await self._rpc_reply(message, may_write=may_write)
        except Exception:  # a bug of ours: answered, and the connection goes on
            log.exception("a /rpc request failed")
            reply = remote.error_reply(
                remote.request_id_in(message), "server_error", "internal error"
            )
        finally:
            window.taken -= 1
            window.size -= len(message)
        try:
            await connection.send(reply, text=True)
        except ConnectionClosed:
            window.closed = True
        self._last_activity = time.monotonic()

    async def _finish_rpc_requests(self) -> None:
        """Before a stopping server closes its connections: begin no more team-protocol
        requests, and let those begun be answered, so that no write is applied unanswered."""
        self._rpc_stopping = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._rpc_all_answered.wait(), _RPC_FINISH_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _rpc_turn(self, op: str | None, *, may_write: bool) -> AsyncIterator[None]:
        """Take the database's turn for one request: writes one at a time, and before any
        read waiting; a read once no write waits (or after a while)."""
        if op in remote.WRITE_OPS and may_write:
            self._rpc_writes += 1
            self._rpc_no_writes.clear()
            try:
                # Writes go one at a time: they would only take turns at the database lock
                # otherwise, polling for it, which stretches the slowest reply.
                async with self._rpc_write_lock:
                    yield
            finally:
                self._rpc_writes -= 1
                if not self._rpc_writes:
                    self._rpc_no_writes.set()
        else:
            if op in remote.READ_OPS:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._rpc_no_writes.wait(), _RPC_READ_YIELD)
            yield

    async def _rpc_state(self) -> StoreState:
        """A read of the database no older than this call, shared with every reader."""
        version = self.store.file_version()
        state = await self._read_state_shared()
        if state.version != version:  # a read begun before a commit: take a newer one
            state = await self._read_state_shared()
        self._rpc_read_kept = state
        return state

    async def _rpc_answer(
        self, message: str | bytes, op: str | None, *, may_write: bool
    ) -> remote.Answer:
        """Answer in a thread: a read once one of the few read slots is free; ``list`` and
        ``info`` from the shared read of the file (taken in the slot, so that a read waiting
        holds no old copy of the database)."""
        if op not in remote.READ_OPS:
            return await asyncio.to_thread(remote.answer, self.store, message, may_write=may_write)
        shared = op in _RPC_SHARED_READS
        self._rpc_shared_waiting += shared
        try:
            async with self._rpc_reads:
                state = None
                if shared:
                    # A file that cannot be read is answered from the store, with its error.
                    with contextlib.suppress(StoreError):
                        state = await self._rpc_state()
                return await asyncio.to_thread(
                    remote.answer, self.store, message, may_write=may_write, state=state
                )
        finally:
            self._rpc_shared_waiting -= shared
            if not self._rpc_shared_waiting:
                self._rpc_read_kept = None

    async def _rpc_reply(self, message: str | bytes, *, may_write: bool) -> bytes:
        """The reply to one request; a write whose id was answered before gets that answer
        again (a client retrying after a lost reply), and one in progress is waited for."""
        try:
            request = orjson.loads(message)
            request_id: str | None = remote.request_id_of(request)
        except (orjson.JSONDecodeError, ProjctlError):
            request, request_id = None, None
        op = request.get("op") if isinstance(request, dict) else None
        op = op if isinstance(op, str) else None  # an op of another type is answered unknown_op
        # A retry is the same request: an id reused for another one is refused, not replayed.
        digest = hashlib.sha256(message if isinstance(message, bytes) else message.encode())
        key = (request_id, digest.hexdigest()) if request_id is not None else None
        if key is not None and may_write:
            if self._rpc_ids.get(key[0], key[1]) != key[1]:
                return remote.error_reply(
                    request_id, "bad_request", "this id was already used for another request"
                )
            if key in self._rpc_answered:
                self._rpc_answered.move_to_end(key)
                return self._rpc_answered[key]
            running = self._rpc_running.get(key)
            if running is not None:
                return await asyncio.shield(running)
            self._rpc_ids[key[0]] = key[1]
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if key is not None and may_write:
            self._rpc_running[key] = future
        try:
            async with self._rpc_turn(op, may_write=may_write):
                answer = await self._rpc_answer(message, op, may_write=may_write)
            for change in answer.changes:
                if change.event is not None:
                    self.accept(change.event, change.version, change.restore)
            if answer.idempotent and key is not None:
                self._remember_rpc_answer(key, answer.reply)
            future.set_result(answer.reply)
            return answer.reply
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a retry waiting on it raises it too
            raise
        finally:
            if key is not None:
                self._rpc_running.pop(key, None)
                if key not in self._rpc_answered:
                    self._rpc_ids.pop(key[0], None)  # not applied: the id is free again

    def _remember_rpc_answer(self, key: tuple[str, str], reply: bytes) -> None:
        """Keep a write's reply for its retries: the newest, within a count and a byte total."""
        self._rpc_answered[key] = reply
        self._rpc_answered_bytes += len(reply)
        while len(self._rpc_answered) > 1 and (
            len(self._rpc_answered) > _RPC_ANSWERS_KEPT
            or self._rpc_answered_bytes > _RPC_ANSWER_BYTES_KEPT
        ):
            (forgotten, _digest), old = self._rpc_answered.popitem(last=False)
            self._rpc_answered_bytes -= len(old)
            self._rpc_ids.pop(forgotten, None)

    async def _serve_publisher(self, connection: ServerConnection) -> None:
        async for message in connection:
            try:
                request = orjson.loads(message)
            except orjson.JSONDecodeError as error:
                reply = {"ok": False, "error": f"not JSON: {error}"}
            else:
                reply = self._handle_forward(request)
            await connection.send(orjson.dumps(reply).decode())

    def _handle_forward(self, args: Any) -> dict[str, Any]:
        """Accept one forward, ``{"event": {...}, "version": [...]}``, already parsed."""
        try:
            event = check_event(args.get("event"))
            raw_version = args.get("version")
            version = (
                (int(raw_version[0]), int(raw_version[1]), int(raw_version[2]))
                if isinstance(raw_version, list) and len(raw_version) == 3
                else None
            )
        except (EventDecodeError, AttributeError, TypeError, ValueError) as error:
            return {"ok": False, "error": f"not a forward: {error}"}
        database_id = args.get("database_id")
        if (
            isinstance(database_id, str)
            and database_id
            and not self.sequencer.adopt_database(database_id)
        ):
            served = self.sequencer.database_id
            return {
                "ok": False,
                "error": f"this server serves database {served}, not {database_id}",
            }
        raw_restore = args.get("restore")
        restore = None
        if (
            isinstance(raw_restore, list)
            and len(raw_restore) == 2
            and all(type(seq) is int and seq >= 0 for seq in raw_restore)
        ):
            restore = (raw_restore[0], raw_restore[1])
        self.accept(event, version, restore)
        return {"ok": True, "seq": event["seq"]}

    async def _handle_local(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Requests on the private Unix socket (the ``rpc`` protocol).

        Every request gets a reply, a failure of our own included (logged with its
        traceback): a client that gets none cannot tell a bug from a server going away.
        """
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # a line over the reader's limit: not our protocol
                    return
                if not line:
                    return
                try:
                    reply = self._answer(line)
                except Exception as error:
                    log.exception("a local request failed")
                    reply = rpc.encode_error(f"the server failed: {type(error).__name__}: {error}")
                writer.write(reply)
                await writer.drain()
                if self._stopping.is_set():
                    return  # answered a stop: nothing more is served here
        except (ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> bytes:
        try:
            request = rpc.decode_request(line)
        except rpc.RequestDecodeError as error:
            return rpc.encode_error(str(error))
        if request.op == rpc.OP_FORWARD:
            reply = self._handle_forward(request.args)
            if not reply.pop("ok"):
                return rpc.encode_error(reply["error"])
            return rpc.encode_reply(reply)
        if request.op == rpc.OP_STATUS:
            return rpc.encode_reply(self.health())
        self.stop()  # rpc.OP_STOP
        return rpc.encode_reply()


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


def read_token_file(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The read and write tokens of a token file: one ``read: TOKEN`` or ``write: TOKEN`` a
    line (``#`` comments and blank lines allowed).

    Refused (:class:`~projctl.errors.ConfigError`) unless it is a regular file that nobody
    but its owner may read (mode 0600 or stricter), and holds at least one write token.
    """
    from projctl.errors import ConfigError

    try:
        status = os.stat(path)
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the token file {path}: {error.strerror}") from None
    _refuse_unless_private(path, status, "token file")
    read: set[str] = set()
    write: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, token = line.partition(":")
        token = token.strip()
        # Visible ASCII only, as PROJCTL_TOKEN: what a client can send in a header.
        visible = all("!" <= char <= "~" for char in token)
        if kind.strip() not in ("read", "write") or len(token) < 16 or not visible:
            raise ConfigError(
                f"{path}, line {number}: expected 'read: TOKEN' or 'write: TOKEN' "
                "(a token of 16 or more visible ASCII characters)"
            )
        (read if kind.strip() == "read" else write).add(token)
    if not write:
        raise ConfigError(f"the token file {path} has no write token")
    return frozenset(read), frozenset(write)


def check_key_file(path: Path) -> None:
    """Refuse (:class:`~projctl.errors.ConfigError`) a TLS private key file that is not a
    regular file only its owner may read (mode 0600 or stricter), as a token file is."""
    from projctl.errors import ConfigError

    try:
        status = os.stat(path)
    except OSError as error:
        raise ConfigError(f"cannot read the key file {path}: {error.strerror}") from None
    _refuse_unless_private(path, status, "key file")


def _refuse_unless_private(path: Path, status: os.stat_result, what: str) -> None:
    from projctl.errors import ConfigError

    mode = stat.S_IMODE(status.st_mode)
    if not stat.S_ISREG(status.st_mode) or mode & 0o077:
        raise ConfigError(
            f"the {what} {path} may be read by others (mode {mode:04o}); chmod 600 it"
        )


def _return_memory() -> None:
    """Collect what only the cycle collector frees, then hand free heap pages back."""
    gc.collect()
    _malloc_trim()


def _malloc_trim() -> None:
    """Ask glibc to return free heap pages to the system (``malloc_trim(0)``), where it can."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def _free_port(host: str) -> int:
    """A port free on every address of ``host`` right now (it may be taken before we bind)."""
    import socket

    infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for _attempt in range(20):
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
            port: int = probe.getsockname()[1]
        if all(_port_free(info, port) for info in infos[1:]):
            return port
    return port


def _port_free(info: tuple[Any, ...], port: int) -> bool:
    import socket

    family, kind, proto, _name, address = info
    with socket.socket(family, kind, proto) as probe:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((address[0], port, *address[2:]))
        except OSError:
            return False
    return True


def _listen_failure(host: str, port: int, error: OSError) -> str:
    """One line saying why ``host:port`` cannot be had, and who holds it when it is ours."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    message = f"cannot listen on {host}:{port}: {reason}"
    if error.errno == errno.EADDRINUSE:
        holder = runtime.server_on_port(port)
        if holder is not None:
            message += f" (the projctl server of {holder.db}, pid {holder.pid}, holds it)"
        else:
            message += " (by another program)"
    return message


#: One label of a host name (RFC 1123): letters, digits and inner hyphens.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: A ``Host`` header: a host name or IPv4 address, or a bracketed IPv6 address; then an
#: optional ``:port`` of digits. Nothing else (no ``@``, no text after the ``]``).
_HOST_HEADER = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>\d{{1,5}}))?"
)
#: Where a token may travel as ``?token=``: only a plain server's ``/ws`` (the subscriber
#: URL of the README); everywhere else, and on every TLS server, it goes in a header.
_QUERY_TOKEN_PATHS = frozenset({"/ws"})


def canonical_host(header: str | None) -> str | None:
    """A ``Host`` header as ``name[:port]`` (lower case), or ``None`` when it is not one:
    a host name, an IPv4 address or a bracketed IPv6 address, and an optional port."""
    if header is None:
        return None
    match = _HOST_HEADER.fullmatch(header.strip().lower())
    if match is None or len(match["host"]) > 255:
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    port = match["port"]
    if port is not None and int(port) > 65535:
        return None
    return match[0]


@dataclass(frozen=True)
class AccessPolicy:
    """Who may do what: the one place that decides on ``Host``, ``Origin`` and tokens.

    - Every request must name this server in a well-formed ``Host`` (421 otherwise).
    - Every route has the same ``Origin`` rule: no ``Origin`` (not a browser), a page on
      loopback, one of ``allow_origins``, or the server's own pages.
    - Tokens travel in headers (``Authorization: Bearer``, or a browser's subprotocol
      ``projctl-token.<token>``); ``?token=`` only on a plain server's ``/ws``.
    - When read tokens exist, reading needs one, and so does the detail of ``/healthz``
      (behind a reverse proxy every client arrives from loopback); otherwise loopback
      clients see the detail.
    """

    host: str
    allow_origins: tuple[str, ...] = ()
    read_tokens: frozenset[str] = frozenset()
    write_tokens: frozenset[str] = frozenset()
    tls: bool = False

    @classmethod
    def of(cls, config: ServerConfig) -> AccessPolicy:
        """The policy of a server run with ``config``."""
        return cls(
            host=config.host,
            allow_origins=config.allow_origins,
            read_tokens=config.read_tokens,
            write_tokens=config.write_tokens,
            tls=config.ssl_context is not None,
        )

    @property
    def tokens_required(self) -> bool:
        """Whether reading (subscribing, the HTTP API, ``/healthz`` detail) needs a token."""
        return bool(self.read_tokens)

    def host_allowed(self, header: str | None) -> bool:
        """Whether ``Host`` is well formed and names this server: a page that reached us
        through a rebound DNS name (``evil.example`` resolving to 127.0.0.1) is turned away."""
        host = canonical_host(header)
        if host is None:
            return False
        name = host[1 : host.index("]")] if host.startswith("[") else host.partition(":")[0]
        listening = self.host.lower()
        if listening in _WILDCARD_HOSTS:
            return True  # any name reaches it; beyond loopback a token guards it
        return name == listening or runtime.is_loopback(name)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser page at ``origin`` may use any route: no Origin (not a
        browser), a page on loopback, one of ``allow_origins``, or the server's own pages
        (the dashboard is served from the very ``Host`` the request names)."""
        allowed = self.allow_origins
        own = canonical_host(host)
        return (
            origin is None
            or "*" in allowed
            or origin in allowed
            or _LOCAL_ORIGIN.fullmatch(origin) is not None
            or (own is not None and origin in (f"http://{own}", f"https://{own}"))
        )

    def token_in_url_refused(self, path: str, query: str) -> bool:
        """Whether a request carries ``?token=`` where a token may not travel in a URL."""
        if "token" not in parse_qs(query, keep_blank_values=True):
            return False
        return self.tls or path not in _QUERY_TOKEN_PATHS

    def presented_token(self, headers: Any, path: str) -> str | None:
        """The known token a request carries, found in constant time; ``None`` when it
        carries none. ``headers`` is the request's; ``path`` its target with the query."""
        offered = headers.get("Sec-WebSocket-Protocol", "")
        candidates = [
            item.strip().removeprefix(_TOKEN_PROTOCOL)
            for item in offered.split(",")
            if item.strip().startswith(_TOKEN_PROTOCOL)
        ]
        scheme, _, bearer = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(bearer.strip())
        url = urlsplit(path)
        if not self.token_in_url_refused(url.path, url.query):
            candidates += parse_qs(url.query).get("token", [])
        for candidate in candidates:
            given = candidate.encode("utf-8", "surrogateescape")
            for token in self.read_tokens | self.write_tokens:
                if hmac.compare_digest(given, token.encode()):
                    return token
        return None

    def may_read(self, token: str | None) -> bool:
        """Whether a client holding ``token`` (``None``: none) may subscribe and read."""
        return not self.tokens_required or token is not None

    def may_write(self, token: str | None) -> bool:
        """Whether a client holding ``token`` may write through the team protocol."""
        return token is not None and token in self.write_tokens

    def shows_health_detail(self, peer: str | None, token: str | None) -> bool:
        """Whether ``/healthz`` tells this client pid, paths, URL and uptime: a token
        holder; or, on a server that asks for no read token, a client on loopback."""
        if token is not None:
            return True
        return not self.tokens_required and peer is not None and runtime.is_loopback(peer)


def _bearer_matches(headers: Headers, token: str) -> bool:
    given = headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def _too_big(message: str | bytes, limit: int) -> bool:
    """Whether a message is more than ``limit`` bytes (a text one, encoded as UTF-8).

    Checked in the handlers: ``serve`` takes one ``max_size`` for every connection (the
    largest, a forward's), and websockets has no public way to lower it for one.
    """
    if isinstance(message, bytes) or len(message) > limit:
        return len(message) > limit
    # UTF-8 takes one to four bytes a character: encode only when it could go either way.
    return len(message) * 4 > limit and len(message.encode()) > limit


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


def configure_logging() -> None:
    """Timestamped log lines on stderr: what ``serve`` shows and a background server's log keeps."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # One line per connection would drown the log of a server with many subscribers.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def run_server(
    store: ProjectStore,
    config: ServerConfig,
    *,
    on_ready: Callable[[BroadcastServer], None] | None = None,
) -> None:
    """Serve ``store``'s database in the foreground until SIGINT/SIGTERM or a ``stop`` request.

    Raises :class:`~projctl.errors.ServerError` when a server already runs for the
    database or this one cannot listen.
    """
    paths = runtime.runtime_paths(store.path, for_a_server=True)
    _raise_open_file_limit()

    async def main() -> None:
        server = BroadcastServer(store, paths, config)
        await server.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
        if on_ready is not None:
            on_ready(server)
        await server.serve_until_stopped()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    """``python -m projctl.server ARGS``: a background server, as ``runtime`` launches it.

    Its output goes to the server log, where the launching command reads the last
    line when the server could not start.
    """
    configure_logging()
    try:
        launch = ServerLaunch.parse(sys.argv[1:] if argv is None else argv)
        options = launch.options
        run_server(
            ProjectStore(launch.db_path),
            ServerConfig.for_host(
                options.host,
                require_token=options.require_token,
                port=options.port,
                port_fallback=options.port_fallback,
                idle_timeout=options.idle_timeout or None,
                max_connections=options.max_connections,
            ),
        )
    except ProjctlError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
