"""The state file: the one record of a running server, and whether its process still runs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from projctl import _files

from .paths import START_SUFFIX, RuntimePaths, check_private_folder

#: The largest state file we read: a real one is a few hundred bytes.
STATE_FILE_MAX = 64 * 1024
#: What a :class:`ServerState`'s ``repr()`` leaves out: a state printed or logged must
#: not hand out its tokens.
_SECRET_FIELDS = frozenset({"token", "subscriber_token", "write_token"})


class ServerState(NamedTuple):
    """A running server, as its state file records it. The one definition of that file.

    A named tuple, as every command that finds its server reads one (a dataclass would
    cost each of them its code generation); its :func:`repr` leaves out the tokens."""

    pid: int
    host: str
    port: int
    url: str
    #: Publishers at ``/publish`` send this as ``Authorization: Bearer``. Tokens are kept
    #: out of ``repr()``: a state printed or logged must not hand them out.
    token: str
    socket: Path
    db: str
    database_id: str
    version: str
    #: Started in the background by a command (it stops when idle).
    auto: bool
    #: Subscribers must send this as ``?token=`` (a server listening beyond loopback).
    subscriber_token: str | None
    started_at: float
    #: The team protocol's write token, for the server's own user (``None``: none made).
    write_token: str | None = None
    #: The kernel's start time of ``pid`` (:func:`process_start_time`): with the pid, it
    #: names this one process, never a later one that was given the same pid.
    #: ``None`` where the platform cannot tell.
    process_start: int | None = None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(self._fields, self, strict=True)
            if name not in _SECRET_FIELDS
        )
        return f"ServerState({shown})"

    def encode(self) -> bytes:
        """The state file's content."""
        fields = self._asdict()
        fields["socket"] = str(self.socket)
        return orjson.dumps(fields)

    @classmethod
    def decode(cls, raw: bytes) -> ServerState:
        """Parse a state file; ``ValueError`` when it is not one."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error}") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")

        def field(name: str, kind: type[Any], *, optional: bool = False) -> Any:
            item = value.get(name)
            if item is None and optional:
                return None
            if not isinstance(item, kind) or isinstance(item, bool) is not (kind is bool):
                raise ValueError(f"{name} must be a {kind.__name__}")
            return item

        pid = field("pid", int)
        port = field("port", int)
        if pid < 1 or not 0 < port < 65536:
            raise ValueError("pid or port out of range")
        started_at = value.get("started_at")
        if not isinstance(started_at, (int, float)) or isinstance(started_at, bool):
            raise ValueError("started_at must be a number")
        return cls(
            pid=pid,
            host=field("host", str),
            port=port,
            url=field("url", str),
            token=field("token", str),
            socket=Path(field("socket", str)),
            db=field("db", str),
            database_id=field("database_id", str),
            version=field("version", str),
            auto=field("auto", bool),
            subscriber_token=field("subscriber_token", str, optional=True),
            started_at=float(started_at),
            write_token=field("write_token", str, optional=True),
            process_start=field("process_start", int, optional=True),
        )

    def write(self, path: Path) -> None:
        """Publish this state at ``path`` atomically, readable by its owner only.

        A server publishing its own state records its start time with it.
        """
        state = self
        if state.process_start is None and state.pid == os.getpid():
            state = state._replace(process_start=process_start_time(state.pid))
        _files.atomic_write(path, state.encode(), mode=0o600, keep_mode=False)
        clear_start_record(path, state.pid)

    def remove(self, paths: RuntimePaths) -> None:
        """Remove the state file and socket, if they are still this server's own.

        A server started after this one may already have replaced them.
        """
        current = read_state_file(paths.state_file)
        if current is not None and current.pid == self.pid:
            with contextlib.suppress(OSError):
                paths.state_file.unlink()
            with contextlib.suppress(OSError):
                self.socket.unlink()


def clear_start_record(state_file: Path, pid: int) -> None:
    """Forget the start record (in the start lock file, see :mod:`.launch`) naming ``pid``:
    its server has published its state file. A record naming another server is left alone.
    """
    lock_file = state_file.with_suffix(START_SUFFIX)
    with contextlib.suppress(OSError):
        fd = os.open(lock_file, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        try:
            words = os.pread(fd, 128, 0).split()
            if words[:1] == [str(pid).encode()]:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def remembered_port(paths: RuntimePaths) -> int | None:
    """The port the database's last server listened on, ``None`` when none is remembered
    (or the file is anything but a port number: it is only ever a hint)."""
    try:
        found = _files.read_regular(paths.port_file, limit=16)
    except (OSError, _files.NotRegularFile):
        return None
    if found is None:
        return None
    text = found[0].decode("ascii", "replace").strip()
    if not text.isdigit() or len(text) > 5 or not 0 < int(text) <= 65535:
        return None
    return int(text)


def remember_port(paths: RuntimePaths, port: int) -> None:
    """Remember the port a server listens on, so that its next start takes it again: a
    page or a ``watch`` following the old address finds the restarted server there."""
    with contextlib.suppress(OSError):
        _files.atomic_write(paths.port_file, f"{port}\n".encode(), mode=0o600)


def read_state_file(path: Path) -> ServerState | None:
    try:
        found = _files.read_regular(path)
        if found is None or len(found[0]) > STATE_FILE_MAX:
            return None
        return ServerState.decode(found[0])
    except (OSError, ValueError):
        return None


#: The servers this process spawned and has not reaped: the only pids it ever waits on
#: (waiting on any other pid could reap a child of the program using this module).
spawned: set[int] = set()


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field
    22, Linux); ``None`` when it is gone or the platform does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: count from its closing one.
    fields = stat.rpartition(b")")[2].split()
    try:
        return int(fields[19])  # fields[0] is field 3
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as gone).

    Only a server this process spawned is ever reaped here.
    """
    if pid in spawned:
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (SIGCHLD ignored): ask the kernel below
            spawned.discard(pid)
        else:
            if reaped == pid:
                spawned.discard(pid)
                return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie (dead, not yet reaped by its parent) still answers kill(0).
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rpartition(b")")[2].split()[:1] != [b"Z"]


def read_server_state(paths: RuntimePaths) -> ServerState | None:
    """The server recorded for this database, or ``None``; a stale or garbled record is removed.

    Raises :class:`RuntimeFolderError` when the runtime folder is not private.
    """
    if not check_private_folder(paths.folder, create=False):
        return None
    if not os.path.lexists(paths.state_file):
        return None
    state = read_state_file(paths.state_file)
    if state is None or state.db != str(paths.db_path) or not still_running(state):
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None
    return state


def still_running(state: ServerState) -> bool:
    """Whether the process that wrote ``state`` runs: its pid, and its start time when known
    (a pid given to another program since is not it)."""
    if not pid_alive(state.pid):
        return False
    if state.process_start is None:
        return True
    started = process_start_time(state.pid)
    return started is None or started == state.process_start
