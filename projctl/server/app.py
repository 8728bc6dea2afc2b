"""The broadcast server: its lifecycle, and which job (feed, routes, writes) serves what.

One server serves one database: a file, or (as a *gateway*) a stream that is its own feed
(a :class:`~projctl.backend.Follower`). It listens on

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
  ``GET /healthz``
      a small JSON status.

- a Unix socket in the database's private runtime folder, for local commands
  (the ``rpc`` protocol: forward, status, stop). A gateway has none: it takes no lock and
  writes no state file, so any number may serve one stream, on one host or many; it
  follows the stream from its last seq and hands each event to :meth:`BroadcastServer.accept`.

Every decision (order, gaps, replay, snapshots) is the :class:`~projctl.sequencer.Sequencer`'s;
this module only moves bytes between it, the sockets and the database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Response
from websockets.typing import Subprotocol

from projctl import config, rpc, runtime
from projctl._version import __version__
from projctl.backend import FileVersion, Follower, ServedStorage
from projctl.errors import ServerError
from projctl.events import Event
from projctl.runtime import RuntimePaths, ServerState
from projctl.sequencer import Sequencer
from projctl.server.access import _TOKEN_PROTOCOL, AccessPolicy
from projctl.server.config import ServerConfig
from projctl.server.connection import (
    _SPARE_SLOTS,
    _TRIM_AFTER_HANDSHAKES,
    LISTEN_BACKLOG,
    HttpRequest,
    _CountedConnection,
    _return_memory,
)
from projctl.server.feed import SUBSCRIBER_MAX_MESSAGE, Feed
from projctl.server.http import Routes, _parse_since
from projctl.server.local import LocalAnswers
from projctl.server.watcher import JournalWatcher
from projctl.server.writes import RestWrites

log = logging.getLogger("projctl.server")

#: How long a gateway waits before following the stream again after a failure, at first
#: and at most (doubling in between).
_FOLLOW_PAUSE = 0.2
_FOLLOW_PAUSE_MAX = 5.0


@dataclass
class _Stats:
    started: float = field(default_factory=time.time)
    #: Sockets closed as soon as they were accepted, the server being full.
    refused_at_accept: int = 0


class BroadcastServer:
    """Fans committed events out to subscribers, in ``seq`` order, with nothing lost.

    Everything runs on one event loop; the :class:`Sequencer` decides, the
    :class:`~projctl.server.feed.Feed` sends. This class owns the lifecycle: listening,
    counting connections, and handing each request to its job.
    """

    def __init__(
        self, store: ServedStorage, paths: RuntimePaths | None, config: ServerConfig
    ) -> None:
        """``paths`` is ``None`` for a gateway (``store`` a :class:`Follower`): nothing on
        this machine is kept for it."""
        self.store = store
        self.paths = paths
        self.config = config
        self.stats = _Stats()
        self.sequencer = Sequencer(window=config.journal_window)
        self.feed = Feed(self.sequencer, store, config, spawn=self._spawn, touch=self._touch)
        self._gap_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._last_activity = time.monotonic()
        self._stopping = asyncio.Event()
        self._ws_server: Server | None = None
        self._unix_server: asyncio.Server | None = None
        self._state: ServerState | None = None
        self._lock_fd: int | None = None
        self.watcher = JournalWatcher(
            store, self.sequencer, config, send_to_all=self.feed.send_to_all
        )
        self.local = LocalAnswers(
            self.sequencer,
            accept=self.accept,
            health=lambda: self.health(),  # looked up per request
            stop=self.stop,
            stopping=self._stopping,
        )
        self.writes = RestWrites(
            store, self.access, accept=self.accept, default_owner=config.default_owner
        )
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

    def _touch(self) -> None:
        """Mark the server active now (for the idle timeout)."""
        self._last_activity = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Take the database's server lock, load the journal, listen on TCP and the Unix
        socket, then publish the state file.

        Raises :class:`~projctl.errors.ServerError` when a server already runs for the
        database (naming it) or the address cannot be had (naming who holds the port).
        """
        if isinstance(self.store, Follower) or self.paths is None:
            await self._start_gateway()
            return
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
                self.local.handle, path=str(self.paths.socket), limit=2 * rpc.MAX_MESSAGE
            )
        finally:
            os.umask(old_umask)
        self._state = ServerState(
            pid=os.getpid(),
            host=self.config.host,
            port=self.port,
            url=self.url,
            # The state file's format still has a token; no route takes it any more.
            token=secrets.token_urlsafe(32),
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
        self._spawn(self.watcher.watch())
        if self.config.idle_timeout is not None:
            self._spawn(self._stop_when_idle(self.config.idle_timeout))
        log.info("serving %s for %s (pid %d)", self.url, self.paths.db_path, os.getpid())

    async def _start_gateway(self) -> None:
        """Start as a gateway: load the stream, listen, follow it. No lock, no socket, no
        state file: nothing a restart would lose, nothing another gateway would clash with."""
        self.sequencer.load(await asyncio.to_thread(self.store.read_state))
        await self._listen()
        assert isinstance(self.store, Follower)
        self._spawn(self._follow(self.store))
        if self.config.idle_timeout is not None:
            self._spawn(self._stop_when_idle(self.config.idle_timeout))
        log.info("serving %s for %s (pid %d)", self.url, self.store.path, os.getpid())

    async def _follow(self, stream: Follower) -> None:
        """Hand every event of the stream to :meth:`accept`, from the last seq sent, for the
        server's whole life; after a failure (the cluster unreachable), follow again.

        A write made through this server was accepted already: the sequencer drops its seq
        when the stream brings it back. A ``resync`` (events left the stream unread) makes
        the server read the stream again (:meth:`reconcile`).
        """
        pause = _FOLLOW_PAUSE
        failing: str | None = None
        while True:
            try:
                async for message in stream.follow(since=self.sequencer.last_seq):
                    if failing is not None:
                        failing = None
                        log.info("following the stream again from seq %d", self.last_seq)
                    pause = _FOLLOW_PAUSE
                    if message.get("event_type") in ("resync", "snapshot"):
                        await self.reconcile()
                    else:
                        self.accept(cast(Event, message))
            except Exception as error:
                failure = f"{type(error).__name__}: {error}"
                if failure != failing:
                    failing = failure
                    log.warning("cannot follow the stream (%s); trying again", failure)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _FOLLOW_PAUSE_MAX)

    async def _listen(self) -> None:
        """Listen on the configured address; a taken port is an error unless it may fall back.

        A server that may fall back (no port was asked for) first tries the port the
        database's last server had, when free: a dashboard left open on it, or anything
        else following that address, finds the restarted server where it was.
        """
        host, port = self.config.host, self.config.port
        if self.config.port_fallback and self.paths is not None:
            last = runtime.remembered_port(self.paths)
            if last is not None and last != port:
                with contextlib.suppress(OSError):
                    self._ws_server = await self._serve_on(host, last)
        try:
            if self._ws_server is None:
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
        if self.config.port_fallback and self.paths is not None:
            await asyncio.to_thread(runtime.remember_port, self.paths, self.port)

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
                    process_request=self.routes.check_handshake,
                    select_subprotocol=self._select_subprotocol,
                    # TLS is done by each connection, after it is counted (_CountedConnection).
                    create_connection=self._connection_class(),
                    open_timeout=self.config.handshake_timeout,
                    compression=None,  # small JSON gains nothing; deflate costs CPU
                    max_size=SUBSCRIBER_MAX_MESSAGE,
                    ping_interval=self.config.ping_interval,
                    ping_timeout=self.config.ping_interval,
                    close_timeout=self.config.close_timeout,
                    server_header=f"projctl/{__version__}",
                    # Room for a burst of connections arriving while the loop is busy: past a
                    # full queue the kernel drops SYNs, and a client retries only after 1 s.
                    backlog=LISTEN_BACKLOG,
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

    @property
    def http_url(self) -> str:
        """Where the dashboard and the HTTP API are: ``http(s)://host:port``."""
        return config.http_address(self.url)

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
        await self.writes.finish()
        background = list(self._background)
        for task in background:
            task.cancel()
        if background:
            # Let them finish their own cleanup (a gateway's follower closes its connection).
            await asyncio.wait(background, timeout=5)
        if self._unix_server is not None:
            self._unix_server.close()
            self.local.close_connections()
        for connection in list(self._accepted):
            connection.close_if_http()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)
        if self._state is not None and self.paths is not None:
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
        ``backend.Change.restore``); when events it lost were sent, everyone starts over
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
        self.feed.send_to_all(self.sequencer.accept(event, version))
        if self.sequencer.waiting and self._gap_task is None:
            self._gap_task = asyncio.ensure_future(self._fill_gap_later())

    async def _fill_gap_later(self) -> None:
        try:
            await asyncio.sleep(self.config.gap_grace)
            if self.sequencer.waiting:
                await self.reconcile()
        finally:
            self._gap_task = None

    async def reconcile(self) -> None:
        """Broadcast every committed event the journal holds and nobody forwarded (see
        :meth:`JournalWatcher.reconcile`)."""
        await self.watcher.reconcile()

    async def _stop_when_idle(self, idle_timeout: float) -> None:
        while True:
            await asyncio.sleep(min(1.0, idle_timeout / 4))
            idle = time.monotonic() - self._last_activity
            if not self.feed.subscribers and idle >= idle_timeout:
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
            "http_url": self.http_url,
            "database": {
                "path": str(self.store.path if self.paths is None else self.paths.db_path),
                "id": self.sequencer.database_id,
                "gateway": self.paths is None,
            },
            "latest_seq": self.last_seq,
            "subscribers": len(self.feed.subscribers),
            "connections": len(self._accepted),
            "refused_at_accept": self.stats.refused_at_accept,
            "events_broadcast": self.sequencer.stats.events,
            "gap_fills": self.sequencer.stats.gap_fills,
            "slow_subscribers_closed": self.feed.slow_closed,
            "unsent_bytes": self._unsent_bytes(),
            "journal_read_failures": self.watcher.read_failures,
            "uptime_seconds": round(time.time() - self.stats.started, 3),
            "idle_timeout": self.config.idle_timeout,
        }

    def _unsent_bytes(self) -> int:
        """Bytes waiting in every open connection's buffer and every joining backlog."""
        return sum(c.unsent_bytes() for c in self._accepted) + self.feed.backlog_bytes()

    def public_health(self) -> dict[str, Any]:
        """What ``/healthz`` tells a client the access policy shows no detail to."""
        return {"status": "ok", "version": __version__, "latest_seq": self.last_seq}

    @functools.cached_property
    def access(self) -> AccessPolicy:
        """Who may do what on this server (see :class:`AccessPolicy`)."""
        return self.config.access_policy()

    @functools.cached_property
    def routes(self) -> Routes:
        """The HTTP routes and the WebSocket handshake checks (see :class:`Routes`)."""
        return Routes(
            self.access,
            self.sequencer,
            current_projects=self.feed.current_projects,
            max_connections=self.config.max_connections,
            open_connections=lambda: len(self._accepted),
            health=lambda: self.health(),  # looked up per request
            public_health=lambda: self.public_health(),
            database_info=self._database_info,
            write_routes=self.writes.routes(),
        )

    async def _database_info(self) -> dict[str, Any]:
        """What ``GET /api/info`` (and a remote ``projctl info``) reports of the database."""
        state = await self.feed.read_state_shared()
        return {
            # The file's name only (the folder is /healthz detail's); a gateway's stream name.
            "database": {
                "id": state.database_id,
                "name": (self.store.path if self.paths is None else self.paths.db_path).name,
            },
            "projects": len(state.project_records),
            "latest_seq": state.latest_seq,
            "journal": {"events": len(state.journal), "limit": state.journal_limit},
        }

    async def answer_http(self, request: HttpRequest) -> Response:
        """Answer one plain HTTP request (see :class:`Routes`)."""
        self._touch()
        return await self.routes.answer(request)

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
        query = parse_qs(url.query, keep_blank_values=True)
        since = _parse_since(query)
        snapshot = query.get("snapshot", ["0"])[-1] in ("1", "true", "yes")
        await self.feed.serve(connection, since=since, snapshot=snapshot)


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
    store: ServedStorage,
    config: ServerConfig,
    *,
    on_ready: Callable[[BroadcastServer], None] | None = None,
) -> None:
    """Serve ``store``'s database in the foreground until SIGINT/SIGTERM or a ``stop`` request.

    Raises :class:`~projctl.errors.ServerError` when a server already runs for the
    database or this one cannot listen.
    """
    paths = (
        None
        if isinstance(store, Follower)
        else runtime.runtime_paths(store.path, for_a_server=True)
    )
    _raise_open_file_limit()

    async def main() -> None:
        server = BroadcastServer(store, paths, config)
        await server.start()
        # What start-up made (modules, classes, the server itself) lives as long as the
        # process: out of the collector's sight, each full collection (the automatic ones
        # while a flood of connections comes and goes, the feed's after a large read)
        # walks only what came since, and holds the event loop that much less.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
        if on_ready is not None:
            on_ready(server)
        await server.serve_until_stopped()

    asyncio.run(main())
