"""projctl: manage projects from the terminal and CI, with a live feed of every change.

The Python API is the same set of operations the command line runs, and the
command line is a thin layer over it::

    import projctl

    db = projctl.open_database("projects.json")
    change = db.create("Billing API", type="api", owner_id="alice")
    print(change.project.project_id, change.event["seq"])
    db.update(change.project.project_id, status="in_progress")
    db.emit(change.project.project_id, "tests_run", {"passed": 41, "failed": 0})
    for project in db.list(status="in_progress"):
        print(project.name)

Every change commits the project and its lifecycle event in one locked
transaction, then forwards the event to the database's broadcast server
(starting one in the background when none runs), exactly as ``projctl create``
does. :meth:`Database.subscribe` follows the feed as an async iterator that
resumes after any disconnect; :meth:`Database.serve` and :meth:`Database.serving`
run the server in this process.

Heavy modules (tinydb, asyncio, websockets) are imported by the methods that
need them, so ``import projctl`` stays cheap for the command line.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from projctl._version import __version__
from projctl.errors import (
    ConfigError,
    CorruptDatabaseError,
    InvalidInputError,
    LockTimeoutError,
    ProjctlError,
    ProjectNotFoundError,
    ServerError,
    StoreError,
)
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, Project

if TYPE_CHECKING:
    from projctl.backend import Backend, Change, ServedStorage
    from projctl.config import Settings
    from projctl.events import Event
    from projctl.local import TinyDBBackend
    from projctl.runtime import Endpoint, RuntimePaths, ServerState, StartOptions
    from projctl.server import BroadcastServer, ServerConfig
    from projctl.store import ProjectStore

__all__ = [
    "Change",
    "ConfigError",
    "CorruptDatabaseError",
    "Database",
    "Event",
    "InvalidInputError",
    "LockTimeoutError",
    "ProjctlError",
    "Project",
    "ProjectNotFoundError",
    "ServerError",
    "StoreError",
    "Subscription",
    "__version__",
    "open_database",
]

#: Called when a committed event could not be forwarded to the server.
BroadcastErrorHandler = Callable[["Event", ServerError], None]


def __getattr__(name: str) -> Any:
    # ``Change`` and ``Event`` live with tinydb and orjson users; import them on demand.
    if name == "Change":
        from projctl.backend import Change

        return Change
    if name == "Event":
        from projctl.events import Event

        return Event
    raise AttributeError(f"module 'projctl' has no attribute {name!r}")


def _log_broadcast_error(event: Event, error: ServerError) -> None:
    # logging only here: the command line passes its own handler and never loads it.
    import logging

    logging.getLogger("projctl").warning(
        "event %d is committed but was not broadcast: %s", event["seq"], error
    )


def open_database(
    path: str | os.PathLike[str] | None = None,
    *,
    broadcast: bool | None = None,
    on_broadcast_error: BroadcastErrorHandler | None = None,
) -> Database:
    """Open the database at ``path`` (default: ``PROJCTL_DB``, else the user's data folder).

    Every other setting comes from the ``PROJCTL_*`` variables, as for the command
    line. ``broadcast=False`` commits and journals only and contacts no server
    (default: on unless ``PROJCTL_NO_BROADCAST`` is set). Nothing is read or
    created until the first operation. Raises :class:`ConfigError` for a bad setting.
    """
    from projctl.config import load_settings

    settings = load_settings(db=None if path is None else os.fspath(path))
    return Database(settings, broadcast=broadcast, on_broadcast_error=on_broadcast_error)


class Database:
    """One projctl database: the facade over its storage (a :class:`~projctl.backend.Backend`).
    Build it with :func:`open_database`.

    The storage is the local TinyDB file (with its broadcast server), or a team server
    when ``PROJCTL_URL`` is set; the methods are the same for both.
    Changes (:meth:`create`, :meth:`update`, :meth:`delete`) return a :class:`Change`
    (:meth:`emit`, which records an event and changes no project, returns the event)
    and raise :class:`InvalidInputError` for values that break the rules,
    :class:`ProjectNotFoundError` for an unknown id and :class:`StoreError` when the
    file cannot be read, locked or written; nothing is written when they raise.
    A change is committed before it is broadcast, so a broadcast that fails never
    raises: it is reported to ``on_broadcast_error`` (default: a logged warning),
    and subscribers still get the event from the journal.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        broadcast: bool | None = None,
        on_broadcast_error: BroadcastErrorHandler | None = None,
        on_lock_wait: Callable[[Path], None] | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings
        self.broadcast = not settings.no_broadcast if broadcast is None else broadcast
        self.on_broadcast_error = on_broadcast_error or _log_broadcast_error
        self._on_lock_wait = on_lock_wait
        if backend is not None:
            self.__dict__["backend"] = backend

    def __repr__(self) -> str:
        return f"<projctl.Database {self.backend.location!r}>"

    @cached_property
    def backend(self) -> Backend:
        """The storage behind this database: the one place that chooses it."""
        if self.settings.nats is not None:
            return _jetstream_backend(self.settings)
        if self.settings.url is not None:
            from projctl.remote import RemoteBackend

            return RemoteBackend(self.settings)
        from projctl.local import TinyDBBackend

        return TinyDBBackend(
            self.settings,
            broadcast=self.broadcast,
            on_broadcast_error=lambda event, error: self.on_broadcast_error(event, error),
            on_lock_wait=self._on_lock_wait,
        )

    @property
    def path(self) -> Path:
        """The database file (for a team server's database: the local setting, unused, and
        ``os.devnull`` when none is given)."""
        return self.settings.db_path

    @property
    def location(self) -> str:
        """Where the database is, for messages: its file, or its team server's URL."""
        return self.backend.location

    def _local(self) -> TinyDBBackend:
        from projctl.local import TinyDBBackend

        backend = self.backend
        if not isinstance(backend, TinyDBBackend):
            raise InvalidInputError(
                f"this works on a local database; {self.settings.url_source} points at a "
                "team server (unset it, or run it on the server's machine)"
            )
        return backend

    @property
    def store(self) -> ProjectStore:
        """The underlying store (no broadcasting): for reads and tools that need the file."""
        return self._local().store

    # -- changes -----------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        type: str = DEFAULT_TYPE,
        status: str = DEFAULT_STATUS,
        owner_id: str | None = None,
        description: str = "",
        unique: bool = False,
        idempotency_key: str | None = None,
    ) -> Change:
        """Create a project, journal its ``project_created`` event and broadcast it.

        ``owner_id`` defaults to ``PROJCTL_OWNER``, else the name of the user running.
        ``Change.same_name`` lists the other projects with that name; with ``unique`` there
        must be none (:class:`~projctl.errors.NameTakenError`). A database file checks it in
        the write's own transaction; a JetStream database looks names up only for
        ``unique``, and lists none. ``idempotency_key``: a create already made under this key
        is not made again; its first result comes back (``Change.replayed``). Every change
        takes one.
        """
        from projctl.backend import Create

        owner = self.default_owner if owner_id is None else owner_id
        write = Create(
            name, owner, type=type, status=status, description=description, unique=unique
        )
        (change,) = self.backend.commit(write, idempotency_key=_key(idempotency_key))
        return change

    def update(
        self,
        project_id: str,
        *,
        idempotency_key: str | None = None,
        if_match: str | None = None,
        unique: bool = False,
        **changes: str,
    ) -> Change:
        """Change the given fields (``name``, ``type``, ``status``, ``owner_id``, ``description``).

        Only fields whose value really changes are recorded (``Change.updated_fields``);
        when none does, nothing is written and ``Change.event`` is ``None``. With
        ``if_match`` (a ``Project.version_tag``), only if the project is still that
        version, else :class:`~projctl.errors.PreconditionFailedError`. A rename: as for
        :meth:`create`'s ``unique`` and ``Change.same_name``.
        """
        from projctl.backend import Update

        write = Update(project_id, changes, if_match=if_match, unique=unique)
        (change,) = self.backend.commit(write, idempotency_key=_key(idempotency_key))
        return change

    def delete(
        self,
        project_id: str,
        *,
        idempotency_key: str | None = None,
        if_match: str | None = None,
    ) -> Change:
        """Delete a project, journal its ``project_deleted`` event and broadcast it."""
        (change,) = self.delete_many(
            [project_id], idempotency_key=idempotency_key, if_match=if_match
        )
        return change

    def delete_many(
        self,
        project_ids: Sequence[str],
        *,
        missing_ok: bool = False,
        idempotency_key: str | None = None,
        if_match: str | None = None,
    ) -> builtins.list[Change]:
        """Delete several projects at once: all of them or, when one is missing, none.

        With ``missing_ok`` the missing ones are skipped. One event per project, all
        committed in one write, then broadcast.
        """
        from projctl.backend import Delete

        write = Delete(tuple(project_ids), missing_ok=missing_ok, if_match=if_match)
        return self.backend.commit(write, idempotency_key=_key(idempotency_key))

    def emit(
        self,
        project: str,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Event:
        """Record an ``event_type`` event about ``project`` (an id or an exact unique name),
        journal it with the next ``seq`` and broadcast it, as a lifecycle event is; return it.

        Its ``data`` is the project's ``project_id`` and ``name``, then ``data`` (a JSON
        object of at most 64 KiB that sets neither). ``event_type`` is a name of 3-64 of
        ``a-z``, ``0-9`` or ``_`` starting with a letter, none of the lifecycle events';
        ``docs/events.md`` has the conventional ones (``tests_run``, ...). The project is
        not changed. Raises :class:`InvalidInputError` for a rule broken,
        :class:`ProjectNotFoundError` for an unknown project. ``idempotency_key``: as for
        :meth:`create` (the event is recorded once).
        """
        from projctl import events
        from projctl.backend import Emit

        # The rules first: a broken one is the same error whether or not the project exists.
        kind = events.validate_event_type(event_type)
        extra = events.validate_emit_data({} if data is None else data)
        write = Emit(project, kind, extra)
        (change,) = self.backend.commit(write, idempotency_key=_key(idempotency_key))
        assert change.event is not None  # an emitted event is always committed
        return change.event

    def resolve(self, reference: str) -> str:
        """The id of the project ``reference`` names: an exact id, else an exact unique name,
        else the beginning of one project's id (see :func:`projctl.model.resolve_reference`).

        Raises :class:`ProjectNotFoundError`, or :class:`InvalidInputError` listing the
        ids when several projects share that name or several ids begin with it.
        """
        from projctl.model import resolve_reference

        try:
            return self.backend.resolve(reference)
        except ProjectNotFoundError:
            # The storage resolves ids and names; a prefix is only tried when neither matched.
            return resolve_reference(reference, self.list())

    @cached_property
    def default_owner(self) -> str:
        """The owner of projects created without one: ``PROJCTL_OWNER`` or the user's name."""
        from projctl import config, model

        if self.settings.owner is not None:
            try:
                return model.validate_owner_id(self.settings.owner)
            except InvalidInputError as error:
                raise ConfigError(f"PROJCTL_OWNER: {error}") from None
        name = config.login_name()
        try:
            return model.validate_owner_id(name)
        except InvalidInputError:
            return f"uid-{os.getuid()}"

    # -- reads -------------------------------------------------------------------

    def get(self, project: str) -> Project:
        """The project ``project`` names, as the command line takes it: its id, its exact
        name or the beginning of its id (:meth:`resolve`). Raises
        :class:`ProjectNotFoundError` if there is none, :class:`InvalidInputError` when the
        name or prefix fits several."""
        return self.backend.get(self.resolve(project))

    def list(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        """Every project in creation order, keeping those that match every filter given."""
        return self.backend.list_projects(status=status, type=type, owner_id=owner_id)

    def journal(self, after: int = 0) -> builtins.list[Event]:
        """The retained events with a ``seq`` above ``after``, oldest first."""
        return self.backend.journal(after)

    def latest_seq(self) -> int:
        """The ``seq`` of the newest event; 0 for a database with none."""
        return self.backend.latest_seq()

    def database_id(self) -> str:
        """The id that tells this database from any other (``""`` before its first change)."""
        return self.backend.identity()

    # -- the server (a local database's) --------------------------------------------

    @property
    def runtime_paths(self) -> RuntimePaths:
        """Where this database's server keeps its state on this machine (nothing is created)."""
        return self._local().runtime_paths

    def _server_paths(self) -> RuntimePaths:
        return self._local().server_paths()

    def start_options(self) -> StartOptions | None:
        """How a background server is started; ``None`` when it must not be (see
        :meth:`projctl.local.TinyDBBackend.start_options`)."""
        return self._local().start_options()

    def check_file(self) -> None:
        """Raise :class:`StoreError` when the database path names something that is not a
        regular file (a FIFO, a device, a folder, a Unix socket); a missing file is fine.
        A database on a team server has no file here: nothing to check."""
        from projctl.local import TinyDBBackend

        if isinstance(self.backend, TinyDBBackend):
            self.backend.check_file()

    def ensure_server(self) -> ServerState:
        """The running server for this database, started in the background if none runs."""
        return self._local().ensure_server()

    def log_file(self) -> Path:
        """Where this database's background server writes its log (in the private runtime
        folder, checked first: :class:`ServerError` when it is not private). A team
        server's log is on its machine (:class:`NotThisMachinesError`)."""
        self._only_here("log")
        return self._local().log_file()

    def server_status(self) -> dict[str, Any] | None:
        """The running server's health report, or ``None`` when none runs. For a team
        server: its ``/healthz`` (``team_server`` set), or :class:`ServerError`.

        Raises :class:`ServerError` when the server found cannot be shown to serve this
        database, or does not answer (``ServerNotAnsweringError``, naming its pid and URL).
        """
        from projctl.remote import RemoteBackend

        backend = self.backend
        if isinstance(backend, RemoteBackend):
            return backend.server_status()
        return self._local().server_status()

    def _only_here(self, what: str) -> None:
        """Refuse ``what`` (stop, logs) for a team server: it is managed where it runs."""
        if self.settings.url is not None:
            from projctl.errors import NotThisMachinesError

            raise NotThisMachinesError(
                f"{self.settings.url_source} points at a team server ({self.settings.url}): "
                f"its {what} is for the machine it runs on, not this one"
            )

    def stop_server(
        self, *, on_stale: Callable[[ServerState], None] | None = None
    ) -> ServerState | None:
        """Stop the database's server and wait until it has exited; ``None`` if none ran.

        A state entry that names a process which is not this database's server (its pid
        was reused) is removed without signalling anything, and handed to ``on_stale``.
        A team server is not stopped from here (:class:`NotThisMachinesError`).
        """
        self._only_here("stop")
        return self._local().stop_server(on_stale=on_stale)

    def serve(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        allow_origins: Sequence[str] = (),
        idle_timeout: float | None = None,
        require_token: bool | None = None,
        tls: tuple[Path, Path] | None = None,
        token_file: Path | None = None,
        on_ready: Callable[[BroadcastServer], None] | None = None,
    ) -> None:
        """Run this database's broadcast server in the foreground until SIGINT or SIGTERM.

        For a JetStream database the server is a stateless gateway to the stream: any
        number may run, each showing the same events with the same seqs.

        ``tls`` is ``(certfile, keyfile)``: the server then speaks ``wss://`` and ``https://``.
        ``token_file`` holds the read and write tokens (see ``server.read_token_file``);
        without it, fresh ones are made and kept in the private runtime folder.

        ``host``, ``port`` and ``require_token`` default to the settings. Beyond loopback
        (or with ``require_token``) subscribers need a token, ``server.config.subscriber_token``,
        which ``on_ready`` can report. Raises :class:`ServerError` when a server already
        runs for the database (naming it) or this one cannot listen.
        """
        from projctl.server import run_server

        config = self._server_config(
            host,
            port,
            allow_origins,
            idle_timeout,
            require_token,
            tls=tls,
            token_file=token_file,
        )
        run_server(self._served(), config, on_ready=on_ready)

    def _served(self) -> ServedStorage:
        """What a server of this database serves: the TinyDB store, or for a JetStream
        database the stream itself (the server is then a stateless gateway)."""
        if self.settings.nats is None:
            return self.store
        from projctl.jetstream import JetStreamBackend, StreamGateway

        backend = self.backend
        assert isinstance(backend, JetStreamBackend)
        return StreamGateway(backend)

    @contextlib.asynccontextmanager
    async def serving(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        allow_origins: Sequence[str] = (),
        require_token: bool | None = None,
    ) -> AsyncIterator[BroadcastServer]:
        """Run the broadcast server inside the running event loop for the ``async with`` block.

        Yields the started server (``server.url`` is where subscribers connect);
        stops it, closing every connection, when the block ends.
        """
        from projctl.backend import Follower
        from projctl.server import BroadcastServer

        config = self._server_config(host, port, allow_origins, None, require_token)
        served = self._served()
        paths = None if isinstance(served, Follower) else self._server_paths()
        server = BroadcastServer(served, paths, config)
        await server.start()
        try:
            yield server
        finally:
            await server.close()

    def _server_config(
        self,
        host: str | None,
        port: int | None,
        allow_origins: Sequence[str],
        idle_timeout: float | None,
        require_token: bool | None,
        *,
        tls: tuple[Path, Path] | None = None,
        token_file: Path | None = None,
    ) -> ServerConfig:
        from projctl.server import server_config

        return server_config(
            self.settings,
            host=host,
            port=port,
            allow_origins=allow_origins,
            idle_timeout=idle_timeout,
            require_token=require_token,
            tls=tls,
            token_file=token_file,
        )

    # -- the feed ----------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Which database this is and where that came from, what it holds, and its server."""
        return self.backend.info()

    def locate_server(self, *, start: bool = True, deadline: float | None = None) -> Endpoint:
        """Where a subscriber follows this database's events (starting a server if ``start``),
        waiting for nothing past ``deadline`` (a ``time.monotonic()`` instant)."""
        return self.backend.feed(start=start, deadline=deadline)

    def subscribe(
        self, *, since: int | None = None, snapshot: bool = False, start_server: bool = True
    ) -> Subscription:
        """Every message of the database's feed, decoded, in ``seq`` order, forever.

        ``since=N`` replays the retained events after ``N`` first (``0``: all), and
        ``snapshot=True`` starts with a ``snapshot`` message holding every project;
        neither: only what happens from now on. After a disconnect it reconnects
        and resumes after the last ``seq`` it yielded: nothing lost, nothing twice.
        When the events after ``N`` are gone from the journal, a ``resync`` message
        with every project comes instead (rebuild with :func:`projctl.events.apply`).
        ``start_server`` starts a background server when none runs.
        Raises :class:`ServerError` when the server cannot be started or misbehaves.
        A JetStream database is its own feed: it is followed directly, with no server.

        Use it in ``async for``: leaving the loop (``break``, ``return``, an exception)
        needs nothing more. ``async with db.subscribe() as feed:`` closes the connection
        at the block's end rather than when the loop is done with it.
        """
        from projctl.backend import Follower

        backend = self.backend
        if isinstance(backend, Follower):
            return Subscription(backend.follow(since=since, snapshot=snapshot))
        from projctl.subscribe import follow

        return Subscription(
            follow(lambda: self.locate_server(start=start_server), since=since, snapshot=snapshot)
        )


class Subscription:
    """The feed of one :meth:`Database.subscribe` call: an async iterator of messages.

    A plain iterator over one async generator (the reconnecting subscriber's), never an
    async generator wrapping another: when a loop is left early, the event loop finalizes
    one generator, so no ``aclose(): asynchronous generator is already running`` race.
    """

    def __init__(self, feed: AsyncGenerator[Any, None]) -> None:
        #: The reconnecting subscriber's messages (with its connection changes), or a
        #: storage's own feed of decoded messages.
        self._feed = feed

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        from projctl.subscribe import Message

        while True:
            item = await self._feed.__anext__()
            if isinstance(item, dict):
                return item
            if isinstance(item, Message):
                return item.data

    async def aclose(self) -> None:
        """Close the connection now."""
        await self._feed.aclose()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _jetstream_backend(settings: Settings) -> Backend:
    """The JetStream backend for ``settings.nats``; :class:`ConfigError` naming what to
    install when nats-py is missing."""
    from projctl.jetstream import INSTALL_HINT, JetStreamBackend, nats_available

    location = settings.nats
    assert location is not None
    if not nats_available():
        raise ConfigError(
            f"{settings.db_source}={location.display!r}: a NATS JetStream database needs "
            f"nats-py: {INSTALL_HINT}"
        )
    return JetStreamBackend(
        servers=location.servers,
        name=location.name,
        display=location.display,
        source=settings.db_source,
        user=location.user,
        password=location.password,
        token=location.token,
        creds_file=settings.nats_creds,
        ca_file=settings.ca_file,
        tls=location.scheme == "tls",
        replicas=location.replicas,
        timeout=location.timeout,
        journal_limit=settings.journal_limit,
    )


def _key(idempotency_key: str | None) -> str | None:
    """An idempotency key as given, once checked (``None``: none)."""
    from projctl.backend import check_idempotency_key

    return None if idempotency_key is None else check_idempotency_key(idempotency_key)
