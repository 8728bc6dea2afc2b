"""A database's server on this machine: where its state lives, how to start, find and stop it.

Server state lives in the user's **private runtime folder**, never beside the
database (a shared folder may belong to someone else): ``$XDG_RUNTIME_DIR/projctl``
when that is set, else ``projctl-<uid>`` in the system temp folder. The folder is
created 0700 and checked on every use, the way tmux and ssh-agent check theirs: it
must be a real folder (not a symlink), owned by this user, with no access for
anyone else. Anything else is refused with one line; it is never followed,
chmod-ed or written into.

One database is one **identity**, whatever path reaches it: the key of its entry
comes from the device and inode of the folder holding the database file (after
symlinks are resolved) and the file's name, so a symlink, a relative path or a bind
mount of the folder find the same server. The entry for a database is a few files
named by that key:

``<key>.json``
    the running server's :class:`ServerState`, mode 0600. This module is the only
    one that knows its format;
``<key>.sock``
    the server's Unix socket for the local protocol (``rpc``);
``<key>.lock``
    held by the running server for its whole life: two servers never run for one
    database;
``<key>.start``
    held while a server is being started, so that racing commands start one;
``<key>.log``
    what a background server prints;
``<key>.hung``
    a server that took a request and did not answer (hung, stopped), remembered for
    :data:`HUNG_MEMORY` seconds by its pid and start time, so that the next commands
    ask it only briefly instead of waiting the whole :data:`ANSWER_TIMEOUT` again.

Nothing found there is trusted without a check: a request verifies the peer's uid
and pid with the kernel (``rpc``), and the caller compares the database id the
server reports with its own. Starting a server is always an explicit call
(:func:`ensure_server`); the background server is ``python -m projctl.server``
with the arguments of :class:`ServerLaunch`, whose two halves live here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import orjson

from projctl import _files, rpc
from projctl.config import (
    DEFAULT_MAX_CONNECTIONS,
    parse_count,
    parse_db_path,
    parse_flag,
    parse_host,
    parse_port,
    parse_seconds,
)
from projctl.errors import (
    ConfigError,
    ServerError,
    ServerNotAnsweringError,
    ServerUnavailableError,
)

__all__ = [
    "ANSWER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "LOOPBACK_HOSTS",
    "Endpoint",
    "RuntimeFolderError",
    "RuntimePaths",
    "ServerLaunch",
    "ServerState",
    "StartOptions",
    "ask",
    "check_private_folder",
    "claim_server",
    "ensure_server",
    "is_loopback",
    "locate",
    "pid_alive",
    "private_folder",
    "process_start_time",
    "read_server_state",
    "runtime_paths",
    "server_on_port",
    "server_status",
    "stop_server",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})

#: Unix socket paths longer than this do not fit ``sockaddr_un`` everywhere (104 on macOS).
SOCKET_PATH_MAX = 100
_KEY_LENGTH = 20
#: ``/<key>.sock``
_ENTRY_NAME_MAX = _KEY_LENGTH + 6
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: A background server's log past this size is moved to ``server.log.1`` at the next start.
LOG_ROTATE_BYTES = 1 << 20
#: The largest state file we read: a real one is a few hundred bytes.
STATE_FILE_MAX = 64 * 1024
#: How long a command waits for a server that took its request to answer: past this it
#: is not answering (hung, stopped), and a change goes on without it (it is journaled).
ANSWER_TIMEOUT = 1.0
#: How long a server remembered as not answering is asked again before giving up.
HUNG_PROBE_TIMEOUT = 0.3
#: How long a server that did not answer is remembered as not answering.
HUNG_MEMORY = 30.0
#: How long a server that hung up without answering is given to exit, if it is exiting.
_EXIT_GRACE = 0.5


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: a loopback name or IP address literal.

    ``127.0.0.1.example.com`` is a DNS name that may resolve anywhere: not loopback.
    """
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RuntimeFolderError(ServerError):
    """The private runtime folder is not private: it is refused, never repaired."""


def private_folder() -> Path:
    """The user's runtime folder for projctl (not created, not checked: see
    :func:`check_private_folder`)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and os.path.isdir(base):
        folder = Path(base) / "projctl"
        # A socket path must fit sockaddr_un; an unusually deep XDG_RUNTIME_DIR cannot.
        if len(os.fsencode(folder)) + _ENTRY_NAME_MAX <= SOCKET_PATH_MAX:
            return folder
    return Path(tempfile.gettempdir()) / f"projctl-{os.getuid()}"


def check_private_folder(folder: Path, *, create: bool) -> bool:
    """Check that ``folder`` is private to this user, creating it (0700) when ``create``.

    Returns ``False`` when it does not exist (and ``create`` is false). Raises
    :class:`RuntimeFolderError` when it is a symlink, not a folder, another user's,
    or open to others: someone may have planted it to read or feed our traffic.
    """
    if create:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise ServerError(
                f"cannot create the runtime folder {folder}: {error.strerror or error}"
            ) from None
    try:
        status = os.lstat(folder)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise RuntimeFolderError(
            f"cannot check the runtime folder {folder}: {error.strerror or error}"
        ) from None
    problem = None
    if stat.S_ISLNK(status.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(status.st_mode):
        problem = "is not a folder"
    elif status.st_uid != os.geteuid():
        problem = f"belongs to uid {status.st_uid}, not {os.geteuid()}"
    elif stat.S_IMODE(status.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(status.st_mode):04o}, not 0700"
    if problem is not None:
        raise RuntimeFolderError(
            f"the runtime folder {folder} {problem}; refusing to use it "
            "(remove it, or set XDG_RUNTIME_DIR to a folder of your own)"
        )
    return True


@dataclass(frozen=True)
class RuntimePaths:
    """Where one database's server keeps its state, socket, locks and log."""

    #: The database file, symlinks resolved: the path every process of this database uses.
    db_path: Path
    #: The database's identity: the name of its entry in the runtime folder.
    key: str
    folder: Path
    state_file: Path
    socket: Path
    server_lock: Path
    start_lock: Path
    log_file: Path

    @property
    def hung_file(self) -> Path:
        """Where a server that did not answer is remembered."""
        return self.folder / f"{self.key}.hung"


def database_key(db_path: Path) -> str:
    """The identity of the database at ``db_path`` (which must have symlinks resolved).

    A database whose folder does not exist yet has no server (starting one creates the
    folder first, see :func:`runtime_paths`): its key comes from its path alone.
    """
    try:
        folder = os.stat(db_path.parent)
        material = f"{folder.st_dev}:{folder.st_ino}:{db_path.name}"
    except OSError:  # a folder we cannot create or see: nobody reaches it by another path
        material = f"path:{db_path}"
    return hashlib.sha256(os.fsencode(material)).hexdigest()[:_KEY_LENGTH]


def runtime_paths(db_path: Path, *, for_a_server: bool = False) -> RuntimePaths:
    """The runtime entry of the database at ``db_path``: whatever path reaches it, the same.

    ``for_a_server``: the entry a server is started or found under, which needs the
    database's folder to exist (its first change would create it anyway): an identity
    taken before the folder existed would change when it appears. Without it nothing is
    created, for commands that only look. The runtime folder is not created or checked
    here; every function that uses the entry checks it first.
    """
    if for_a_server:
        with contextlib.suppress(OSError):
            Path(os.path.realpath(db_path)).parent.mkdir(parents=True, exist_ok=True)
    real = Path(os.path.realpath(db_path))
    key = database_key(real)
    folder = private_folder()
    return RuntimePaths(
        db_path=real,
        key=key,
        folder=folder,
        state_file=folder / f"{key}.json",
        socket=folder / f"{key}.sock",
        server_lock=folder / f"{key}.lock",
        start_lock=folder / f"{key}.start",
        log_file=folder / f"{key}.log",
    )


@dataclass(frozen=True)
class ServerState:
    """A running server, as its state file records it. The one definition of that file."""

    pid: int
    host: str
    port: int
    url: str
    #: Publishers at ``/publish`` send this as ``Authorization: Bearer``.
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

    def encode(self) -> bytes:
        """The state file's content."""
        fields = asdict(self)
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
            state = replace(state, process_start=process_start_time(state.pid))
        _files.atomic_write(path, state.encode(), mode=0o600, keep_mode=False)

    def remove(self, paths: RuntimePaths) -> None:
        """Remove the state file and socket, if they are still this server's own.

        A server started after this one may already have replaced them.
        """
        current = _read_state_file(paths.state_file)
        if current is not None and current.pid == self.pid:
            with contextlib.suppress(OSError):
                paths.state_file.unlink()
            with contextlib.suppress(OSError):
                self.socket.unlink()


def _read_state_file(path: Path) -> ServerState | None:
    try:
        found = _files.read_regular(path)
        if found is None or len(found[0]) > STATE_FILE_MAX:
            return None
        return ServerState.decode(found[0])
    except (OSError, ValueError):
        return None


#: The servers this process spawned and has not reaped: the only pids it ever waits on
#: (waiting on any other pid could reap a child of the program using this module).
_spawned: set[int] = set()


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
    if pid in _spawned:
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (SIGCHLD ignored): ask the kernel below
            _spawned.discard(pid)
        else:
            if reaped == pid:
                _spawned.discard(pid)
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
    state = _read_state_file(paths.state_file)
    if state is None or state.db != str(paths.db_path) or not _still_running(state):
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None
    return state


def _still_running(state: ServerState) -> bool:
    """Whether the process that wrote ``state`` runs: its pid, and its start time when known
    (a pid given to another program since is not it)."""
    if not pid_alive(state.pid):
        return False
    if state.process_start is None:
        return True
    started = process_start_time(state.pid)
    return started is None or started == state.process_start


def request(state: ServerState, op: str, **args: Any) -> dict[str, Any]:
    """One ``rpc`` request to the server ``state`` describes, verified to be that process."""
    return rpc.request(state.socket, op, expect_pid=state.pid, **args)


def ask(
    paths: RuntimePaths,
    state: ServerState,
    op: str,
    *,
    deadline: float | None = None,
    **args: Any,
) -> dict[str, Any]:
    """One request to the database's server ``state`` describes, as a command asks it.

    It waits for the answer at most :data:`ANSWER_TIMEOUT` (:data:`HUNG_PROBE_TIMEOUT` for
    a server remembered as not answering) and never past ``deadline`` (a
    ``time.monotonic()`` instant). Raises
    :class:`~projctl.errors.ServerNotAnsweringError` (and remembers it) when the server
    took the request but did not answer, :class:`~projctl.errors.ServerUnavailableError`
    when it is gone, and :class:`~projctl.errors.ServerError` when it hung up without a
    reply and still runs (a bug, which its log shows): only a server that is gone may be
    replaced.
    """
    remembered = _remembered_hung(paths, state)
    timeout = HUNG_PROBE_TIMEOUT if remembered else ANSWER_TIMEOUT
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise ServerNotAnsweringError(
                "no time left to ask the server", pid=state.pid, url=state.url
            )
    try:
        reply = request(state, op, timeout=timeout, **args)
    except ServerNotAnsweringError as error:
        if timeout >= HUNG_PROBE_TIMEOUT:  # not merely cut short by the deadline
            _remember_hung(paths, state)
        still = "still " if remembered else ""
        raise ServerNotAnsweringError(
            f"the server (pid {state.pid}) is {still}not answering ({error})",
            pid=state.pid,
            url=state.url,
        ) from None
    except rpc.NoReplyError:
        # A server on its way out hangs up too: give it a moment to be gone.
        grace = time.monotonic() + _EXIT_GRACE
        if deadline is not None:
            grace = min(grace, deadline)
        while _still_running(state) and time.monotonic() < grace:
            time.sleep(0.02)
        if not _still_running(state):
            raise ServerUnavailableError("the server exited without answering") from None
        raise ServerError(
            f"the server (pid {state.pid}) closed the connection without answering; "
            f"its log may say why: {paths.log_file}"
        ) from None
    if remembered:
        with contextlib.suppress(OSError):
            paths.hung_file.unlink()
    return reply


def _hung_key(state: ServerState) -> bytes:
    """What names one server process in the hung marker: its pid and start time."""
    started = state.process_start if state.process_start is not None else state.started_at
    return orjson.dumps({"pid": state.pid, "started": started})


def _remember_hung(paths: RuntimePaths, state: ServerState) -> None:
    with contextlib.suppress(OSError):
        _files.atomic_write(paths.hung_file, _hung_key(state), mode=0o600, keep_mode=False)


def _remembered_hung(paths: RuntimePaths, state: ServerState) -> bool:
    """Whether this very server (pid and start time) did not answer a command lately."""
    try:
        found = _files.read_regular(paths.hung_file)
    except OSError:
        return False
    if found is None:
        return False
    raw, status = found
    return raw == _hung_key(state) and 0 <= time.time() - status.st_mtime < HUNG_MEMORY


def verify_database(status: dict[str, Any], database_id: str | None) -> None:
    """Check that a server's status is for the database with ``database_id``.

    ``""`` on either side (a database before its first change, a server that has not
    read it since) matches. ``None`` (the database's id cannot be read) matches no
    server: nothing then says it is this database's. Raises
    :class:`~projctl.errors.ServerError` otherwise.
    """
    database = status.get("database")
    served = database.get("id") if isinstance(database, dict) else None
    if not isinstance(served, str):
        raise ServerError("the server's status does not say which database it serves")
    if database_id is None:
        raise ServerError(
            f"cannot tell whether the server found (pid {status.get('pid')}) serves this "
            "database: the database's id cannot be read (projctl info says why)"
        )
    if database_id and served and served != database_id:
        raise ServerError(
            f"the server found for this database serves another one (id {served!r}, "
            f"expected {database_id!r}); stop it with projctl server stop"
        )


def server_on_port(port: int) -> ServerState | None:
    """This user's running projctl server listening on ``port``, if any (to say who holds it)."""
    folder = private_folder()
    if not check_private_folder(folder, create=False):
        return None
    for state_file in sorted(folder.glob("*.json")):
        state = _read_state_file(state_file)
        if state is not None and state.port == port and pid_alive(state.pid):
            return state
    return None


@dataclass(frozen=True)
class StartOptions:
    """How to start a background server when none is running."""

    host: str
    port: int
    idle_timeout: float
    #: When ``port`` is taken, take any free port instead of failing.
    port_fallback: bool = False
    #: Subscribers need the token even on loopback.
    require_token: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting (which ``exit_on_error``
    does not cover for missing or unknown arguments before Python 3.12)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"not a server launch: {message}")


def claim_server(paths: RuntimePaths) -> int:
    """Take the database's server lock, held for the server's life; return its descriptor.

    The kernel drops it when the server exits, however it exits: two servers never
    run for one database. Raises :class:`~projctl.errors.ServerError` naming the
    running server when another holds it.
    """
    check_private_folder(paths.folder, create=True)
    try:
        fd = _files.try_lock(paths.server_lock)
    except _files.LockFileError as error:
        raise ServerError(f"cannot open {paths.server_lock}: {error.strerror}") from None
    if fd is None:
        # The holder may be starting: give it the time a start takes to publish its state.
        deadline = time.monotonic() + START_TIMEOUT
        running = read_server_state(paths)
        while running is None and time.monotonic() < deadline:
            time.sleep(0.02)
            running = read_server_state(paths)
        where = f": pid {running.pid}, {running.url}" if running else ""
        raise ServerError(f"a server for this database is already running{where}")
    return fd


@dataclass(frozen=True)
class ServerLaunch:
    """The command line of a background server: built by :func:`ensure_server`,
    parsed by ``python -m projctl.server``. One owner for both halves."""

    db_path: Path
    options: StartOptions

    def argv(self) -> list[str]:
        options = self.options
        return [
            sys.executable,
            "-m",
            "projctl.server",
            "--db",
            str(self.db_path),
            "--host",
            options.host,
            "--port",
            str(options.port),
            "--idle-timeout",
            repr(options.idle_timeout),
            "--port-fallback",
            "1" if options.port_fallback else "0",
            "--require-token",
            "1" if options.require_token else "0",
            "--max-connections",
            str(options.max_connections),
        ]

    @classmethod
    def parse(cls, args: Sequence[str]) -> ServerLaunch:
        """The launch that :meth:`argv` (less its first three items) describes.

        Raises :class:`~projctl.errors.ConfigError` for anything else.
        """
        parser = _RaisingParser(prog="projctl.server", add_help=False)
        for name in (
            "--db",
            "--host",
            "--port",
            "--idle-timeout",
            "--port-fallback",
            "--require-token",
            "--max-connections",
        ):
            parser.add_argument(name, required=True)
        parsed = parser.parse_args(list(args))
        return cls(
            parse_db_path(parsed.db, "--db"),
            StartOptions(
                host=parse_host(parsed.host, "--host"),
                port=parse_port(parsed.port, "--port"),
                idle_timeout=parse_seconds(parsed.idle_timeout, "--idle-timeout"),
                port_fallback=parse_flag(parsed.port_fallback, "--port-fallback"),
                require_token=parse_flag(parsed.require_token, "--require-token"),
                max_connections=parse_count(parsed.max_connections, "--max-connections", minimum=1),
            ),
        )


def ensure_server(
    paths: RuntimePaths, options: StartOptions, *, deadline: float | None = None
) -> ServerState:
    """The running server for this database, starting one in the background if needed.

    Commands racing here serialise on the entry's start lock: the first starts the
    server, the others find it running. Only a server that is gone is replaced: one
    that is not answering raises :class:`~projctl.errors.ServerNotAnsweringError`.
    Nothing waits past ``deadline`` (a ``time.monotonic()`` instant).
    """
    paths = runtime_paths(paths.db_path, for_a_server=True)  # the entry the server keeps
    check_private_folder(paths.folder, create=True)
    lock_timeout = START_TIMEOUT
    if deadline is not None:
        lock_timeout = max(0.0, min(lock_timeout, deadline - time.monotonic()))
    try:
        with _files.locked(paths.start_lock, lock_timeout):
            state = read_server_state(paths)
            if state is not None:
                try:
                    ask(paths, state, rpc.OP_STATUS, deadline=deadline)
                    return state
                except ServerUnavailableError:
                    with contextlib.suppress(OSError):
                        paths.state_file.unlink()
            return _spawn_server(paths, options, deadline)
    except _files.LockTimeout:
        raise ServerError(f"another command is starting the server ({paths.start_lock})") from None
    except _files.LockFileError as error:
        raise ServerError(f"cannot open {paths.start_lock}: {error.strerror}") from None


def _spawn_server(
    paths: RuntimePaths, options: StartOptions, deadline: float | None = None
) -> ServerState:
    """Start a detached background server and wait until its state file names it (never
    past ``deadline``: the server then goes on starting without us)."""
    command = ServerLaunch(paths.db_path, options).argv()
    with contextlib.suppress(OSError):  # every start appends; keep one previous log, bounded
        if os.lstat(paths.log_file).st_size > LOG_ROTATE_BYTES:
            os.replace(paths.log_file, paths.log_file.with_name(paths.log_file.name + ".1"))
    try:
        log_fd = os.open(
            paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
    except OSError as error:
        raise ServerError(f"cannot open the server log {paths.log_file}: {error}") from None
    try:
        # posix_spawn rather than subprocess: the server outlives us, and a
        # Popen object for it would only warn that it is still running.
        pid = os.posix_spawn(
            sys.executable,
            command,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as error:
        raise ServerError(f"cannot start a server: {error}") from None
    finally:
        os.close(log_fd)
    _spawned.add(pid)
    start_deadline = time.monotonic() + START_TIMEOUT
    cut_short = deadline is not None and deadline < start_deadline
    if deadline is not None:
        start_deadline = min(start_deadline, deadline)
    pause = 0.005
    while time.monotonic() < start_deadline:
        state = read_server_state(paths)
        if state is not None and state.pid == pid:
            return state
        if not pid_alive(pid):
            raise ServerError(
                f"the server could not start: {_last_line(paths.log_file)} (log: {paths.log_file})"
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
    if cut_short:
        raise ServerUnavailableError("the server is still starting")
    with contextlib.suppress(OSError):
        os.kill(pid, 9)
    raise ServerError(f"the server did not start within {START_TIMEOUT:g}s (log: {paths.log_file})")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].partition(": ")[2] or lines[-1] if lines else "no output"


def _is_our_server(state: ServerState, paths: RuntimePaths) -> bool:
    """Whether ``state.pid`` is still the server that wrote ``state``, as ``/proc`` tells it.

    A process of this user that started when the state file says it did; for a state
    file that does not say, one running exactly the background server's launch
    (:class:`ServerLaunch`) for this database. Where there is no ``/proc`` nothing is
    verified, so nothing is signalled.
    """
    pid = state.pid
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    if owner != os.geteuid():
        return False
    if state.process_start is not None:
        return process_start_time(pid) == state.process_start
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _is_launch_for(argv[:-1] if argv[-1:] == [b""] else argv, paths.db_path)


def _is_launch_for(argv: Sequence[bytes], db_path: Path) -> bool:
    """Whether ``argv`` is exactly a background server's launch for the database ``db_path``
    (the interpreter, ``argv[0]``, may be any)."""
    words = [os.fsdecode(word) for word in argv]
    if words[1:3] != ["-m", "projctl.server"]:
        return False
    try:
        launch = ServerLaunch.parse(words[3:])
    except ConfigError:
        return False
    return launch.argv()[1:] == words[1:] and launch.db_path == db_path


def stop_server(
    paths: RuntimePaths,
    database_id: str | None = "",
    timeout: float = STOP_TIMEOUT,
    *,
    on_stale: Callable[[ServerState], None] | None = None,
) -> ServerState | None:
    """Stop the database's server and wait for it to exit; ``None`` if none was running.

    Only a verified server is stopped: asked over its socket (the kernel vouches for
    its pid and uid), or, when it no longer answers, signalled only if ``/proc`` shows
    that very process (:func:`_is_our_server`). A pid in a state file is never signalled
    on trust: a state entry naming another process is removed and handed to ``on_stale``.
    """
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        verify_database(ask(paths, state, rpc.OP_STATUS), database_id)
        request(state, rpc.OP_STOP, timeout=timeout)
    except (ServerUnavailableError, ServerNotAnsweringError):
        if not _is_our_server(state, paths):
            with contextlib.suppress(OSError):
                paths.state_file.unlink()
            if on_stale is not None:
                on_stale(state)
            return None
        with contextlib.suppress(OSError):
            os.kill(state.pid, 15)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid):
        if time.monotonic() >= deadline:
            raise ServerError(f"server pid {state.pid} did not stop within {timeout:g}s")
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        paths.state_file.unlink()
    return state


def server_status(paths: RuntimePaths, database_id: str | None = "") -> dict[str, Any] | None:
    """The running server's health report, or ``None`` when none runs.

    Raises :class:`~projctl.errors.ServerNotAnsweringError` (naming its pid and URL) for
    a server that is there but does not answer.
    """
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        status = ask(paths, state, rpc.OP_STATUS)
    except ServerUnavailableError:
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None
    verify_database(status, database_id)
    return status


@dataclass(frozen=True)
class Endpoint:
    """Where a subscriber connects: the ``/ws`` URL, the token it needs, and the latest seq."""

    url: str
    token: str | None = None
    #: The server's newest ``seq`` when it was located, so "from now on" can be resumed.
    latest_seq: int | None = None
    #: A CA certificate file to trust for a ``wss://`` URL (``None``: the system's CAs).
    ca_file: str | None = None


def locate(
    paths: RuntimePaths,
    start: StartOptions | None,
    database_id: str | None = "",
    *,
    deadline: float | None = None,
) -> Endpoint:
    """The database's server as a subscriber sees it, starting one when ``start`` is given.

    The server is verified first (its pid and uid by the kernel, its database by id).
    Raises :class:`~projctl.errors.ServerUnavailableError` when none runs and none may
    be started, :class:`~projctl.errors.ServerNotAnsweringError` when it does not answer
    (both worth retrying later), :class:`~projctl.errors.ServerError` when one cannot be
    started or is not this database's. Nothing waits past ``deadline`` (a
    ``time.monotonic()`` instant).
    """
    state = read_server_state(paths)
    if state is None:
        if start is None:
            raise ServerUnavailableError("no server is running for this database")
        state = ensure_server(paths, start, deadline=deadline)
    status = ask(paths, state, rpc.OP_STATUS, deadline=deadline)
    verify_database(status, database_id)
    latest = status.get("latest_seq")
    return Endpoint(
        url=state.url,
        token=state.subscriber_token,
        latest_seq=latest if isinstance(latest, int) and not isinstance(latest, bool) else None,
    )
