"""The TinyDB backend as this machine runs it: the file (:class:`projctl.store.ProjectStore`)
and the database's background server, which each commit is forwarded to and subscribers
follow.

:class:`TinyDBBackend` implements :class:`projctl.backend.Backend`; it is the one place
that joins the store to the runtime (state file, start, stop) and the local socket.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from projctl.backend import Change, Write
from projctl.config import Settings
from projctl.errors import ServerError, StoreError
from projctl.events import Event
from projctl.model import Project

if TYPE_CHECKING:
    from projctl.runtime import Endpoint, RuntimePaths, ServerState, StartOptions
    from projctl.store import ProjectStore

__all__ = ["BroadcastErrorHandler", "TinyDBBackend"]

#: Called when a committed event could not be forwarded to the server.
BroadcastErrorHandler = Callable[[Event, ServerError], None]


class TinyDBBackend:
    """A TinyDB database file and its server on this machine.

    With ``broadcast``, every committed event is forwarded to the database's server
    (started in the background when none runs); a forward that fails never raises: it
    goes to ``on_broadcast_error``, and subscribers still get the event from the journal.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        broadcast: bool,
        on_broadcast_error: BroadcastErrorHandler,
        on_lock_wait: Callable[[Path], None] | None = None,
    ) -> None:
        self.settings = settings
        self.path = settings.db_path
        self.broadcast = broadcast
        self.on_broadcast_error = on_broadcast_error
        self._on_lock_wait = on_lock_wait

    @property
    def location(self) -> str:
        return str(self.path)

    @cached_property
    def store(self) -> ProjectStore:
        """The file itself (no broadcasting): for reads and tools that need the file."""
        from projctl.store import ProjectStore

        return ProjectStore(
            self.path,
            journal_limit=self.settings.journal_limit,
            lock_timeout=self.settings.lock_timeout,
            on_lock_wait=self._on_lock_wait,
        )

    # -- the Backend protocol -------------------------------------------------------

    def identity(self) -> str:
        return self.store.database_id()

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        changes = self.store.commit(write, idempotency_key=idempotency_key)
        for change in changes:
            if not change.replayed:  # a replay's events were forwarded the first time
                self._forward(change)
        return changes

    def get(self, project_id: str) -> Project:
        return self.store.get(project_id)

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        return self.store.list_projects(status=status, type=type, owner_id=owner_id)

    def resolve(self, reference: str) -> str:
        return self.store.resolve(reference)

    def journal(self, after: int = 0) -> list[Event]:
        return self.store.journal(after)

    def latest_seq(self) -> int:
        return self.store.latest_seq()

    def info(self) -> dict[str, Any]:
        from projctl import runtime
        from projctl.errors import ServerNotAnsweringError

        settings = self.settings
        exists = self.path.exists()
        state = self.store.read_state() if exists else None  # one read for every figure
        server: dict[str, Any]
        try:
            status = runtime.server_status(self.runtime_paths, state.database_id if state else "")
        except ServerNotAnsweringError as error:
            server = {
                "running": True,
                "answering": False,
                "url": error.url,
                "pid": error.pid,
                "subscribers": None,
            }
        else:
            server = {
                "running": status is not None,
                "answering": status is not None,
                "url": status.get("url") if status else None,
                "pid": status.get("pid") if status else None,
                "subscribers": status.get("subscribers") if status else None,
            }
        return {
            "database": {
                "path": str(self.path),
                "source": settings.db_source,
                "exists": exists,
                "id": state.database_id if state else "",
            },
            "projects": len(state.project_records) if state else 0,
            "latest_seq": state.latest_seq if state else 0,
            "journal": {
                "events": len(state.journal) if state else 0,
                "limit": state.journal_limit if state else settings.journal_limit,
            },
            "server": server,
        }

    def feed(self, *, start: bool = True, deadline: float | None = None) -> Endpoint:
        from projctl import runtime

        if start:
            self.check_file()
        # "From now on" is now, not when the server answers: a server started for us (or
        # by a command that did not wait for it) may load events committed in between.
        try:
            journaled = self.store.latest_seq() if self.path.exists() else 0
        except StoreError:
            journaled = None
        endpoint = runtime.locate(
            self.server_paths() if start else self.runtime_paths,
            self.start_options() if start else None,
            self.known_database_id(),
            deadline=deadline,
        )
        latest = endpoint.latest_seq
        if latest is not None and journaled is not None and journaled < latest:
            latest = journaled
        return dataclasses.replace(endpoint, ca_file=self.settings.ca_file, latest_seq=latest)

    # -- the server on this machine ---------------------------------------------------

    @property
    def runtime_paths(self) -> RuntimePaths:
        """Where this database's server keeps its state on this machine (nothing is created)."""
        from projctl import runtime

        return runtime.runtime_paths(self.path)

    def server_paths(self) -> RuntimePaths:
        """:attr:`runtime_paths` for starting or finding a server: the database's folder is
        created first, so the entry is the one it keeps."""
        from projctl import runtime

        return runtime.runtime_paths(self.path, for_a_server=True)

    def start_options(self) -> StartOptions | None:
        """How a background server is started; ``None`` when it must not be.

        A server reachable from other machines is only ever started on purpose
        (``serve --host``), never as a side effect of a command. Without a port asked
        for, the default database prefers 8000 and any other takes a free port.
        """
        from projctl import runtime

        settings = self.settings
        if not runtime.is_loopback(settings.host):
            return None
        return runtime.StartOptions(
            host=settings.host,
            port=settings.preferred_port if settings.port is None else settings.port,
            idle_timeout=settings.idle_timeout,
            port_fallback=settings.port is None,
            require_token=settings.require_token,
            max_connections=settings.max_connections,
        )

    def check_file(self) -> None:
        """Raise :class:`StoreError` when the database path names something that is not a
        regular file (a FIFO, a device, a folder, a Unix socket); a missing file is fine.

        Checked before a server is started or any file is created beside it: opening a
        FIFO could block, and a server for it would only fail after writing its log.
        """
        import stat

        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return  # missing (a new database), or unreadable: the store reports that
        if not stat.S_ISREG(mode):
            raise StoreError(f"database {self.path} is not a regular file; it was left untouched")

    def ensure_server(self) -> ServerState:
        """The running server for this database, started in the background if none runs."""
        from projctl import runtime

        self.check_file()
        start = self.start_options()
        if start is None:
            raise ServerError(
                f"no background server is started for host {self.settings.host}; "
                "run projctl serve --host"
            )
        return runtime.ensure_server(self.server_paths(), start)

    def known_database_id(self) -> str | None:
        """This database's id, to check a server against (``""`` before its first change);
        ``None`` when it cannot be read, which no server is taken to match."""
        try:
            return self.store.database_id()
        except StoreError:
            return None

    def log_file(self) -> Path:
        """Where this database's background server writes its log (in the private runtime
        folder, checked first: :class:`ServerError` when it is not private)."""
        from projctl import runtime

        paths = self.runtime_paths
        runtime.check_private_folder(paths.folder, create=False)
        return paths.log_file

    def server_status(self) -> dict[str, Any] | None:
        """The running server's health report, or ``None`` when none runs."""
        from projctl import runtime

        return runtime.server_status(self.runtime_paths, self.known_database_id())

    def stop_server(
        self, *, on_stale: Callable[[ServerState], None] | None = None
    ) -> ServerState | None:
        """Stop the database's server and wait until it has exited; ``None`` if none ran."""
        from projctl import runtime

        return runtime.stop_server(self.runtime_paths, self.known_database_id(), on_stale=on_stale)

    def _forward(self, change: Change) -> None:
        """Hand a committed event to the database's server; when none runs, start one in the
        background and return without waiting for it (it serves the event from the journal).
        """
        event = change.event
        if event is None or not self.broadcast:
            return
        from projctl import rpc, runtime
        from projctl.errors import ServerUnavailableError

        paths = self.server_paths()
        forward: dict[str, Any] = {
            "event": event,
            "version": change.version,
            "database_id": change.database_id,
            "restore": change.restore,
        }
        try:
            state = runtime.read_server_state(paths)
            if state is not None:
                try:
                    runtime.ask(paths, state, rpc.OP_FORWARD, **forward)
                    return
                except ServerUnavailableError:
                    pass  # it is gone since it wrote its state: start another below
            start = self.start_options()
            if start is None:
                raise ServerError("no server is running for this database")
            # No waiting for a new server: the event is journaled, and a server reads the
            # journal when it starts, so it reaches subscribers all the same.
            state = runtime.start_in_background(paths, start)
            if state is not None:
                runtime.ask(paths, state, rpc.OP_FORWARD, **forward)
        except ServerError as error:
            self.on_broadcast_error(event, error)
