"""A database's server on this machine: where its state lives, how to start, find and stop it.

Each database has a private runtime folder, ``.<db name>.projctl/`` beside it
(mode 0700), holding:

``server.json``
    the running server's :class:`ServerState`, mode 0600. This module is the
    only one that knows its format: the server writes it with
    :meth:`ServerState.write`, commands read it with :func:`read_server_state`;
``server.sock``
    the server's Unix socket for the local protocol (``rpc``). When that path
    is too long for a Unix socket it lives in a private folder under the system
    temp folder instead; the state file says where;
``server.log``
    what a background server prints;
``start.lock``
    held while a server is being started, so that racing commands start one.

Starting a server is always an explicit call (:func:`ensure_server`); nothing
here starts one as a side effect. The background server is the module
``projctl.server`` run with the arguments of :class:`ServerLaunch`, whose two
halves (building and parsing that command line) both live here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from projctl import _files, rpc
from projctl.config import parse_db_path, parse_host, parse_port, parse_seconds
from projctl.errors import ConfigError, ServerError, ServerUnavailableError

__all__ = [
    "LOOPBACK_HOSTS",
    "Endpoint",
    "RuntimePaths",
    "ServerLaunch",
    "ServerState",
    "StartOptions",
    "ensure_private_folder",
    "ensure_server",
    "is_loopback",
    "locate",
    "pid_alive",
    "read_server_state",
    "runtime_paths",
    "server_status",
    "stop_server",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})

#: Unix socket paths longer than this do not fit ``sockaddr_un`` everywhere (104 on macOS).
SOCKET_PATH_MAX = 100
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: A background server's log past this size is moved to ``server.log.1`` at the next start.
LOG_ROTATE_BYTES = 1 << 20
#: The largest state file we read: a real one is a few hundred bytes.
STATE_FILE_MAX = 64 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class RuntimePaths:
    """Where one database's server keeps its state, socket and log."""

    db_path: Path
    folder: Path
    state_file: Path
    log_file: Path
    socket: Path
    start_lock: Path


def runtime_paths(db_path: Path) -> RuntimePaths:
    """The runtime paths for the database at ``db_path`` (nothing is created)."""
    db = Path(os.path.abspath(db_path))
    folder = db.parent / f".{db.name}.projctl"
    socket_path = folder / "server.sock"
    if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fsencode(db)).hexdigest()[:24]
        socket_path = Path(tempfile.gettempdir()) / f"projctl-{os.getuid()}" / f"{digest}.sock"
    return RuntimePaths(
        db_path=db,
        folder=folder,
        state_file=folder / "server.json",
        log_file=folder / "server.log",
        socket=socket_path,
        start_lock=folder / "start.lock",
    )


def ensure_private_folder(folder: Path) -> None:
    """Create ``folder`` (mode 0700) or check that an existing one is ours and private."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = folder.stat()
    except OSError as error:
        raise ServerError(f"cannot create {folder}: {error.strerror or error}") from None
    if status.st_uid != os.getuid():
        raise ServerError(f"{folder} belongs to another user; refusing to use it")
    if status.st_mode & 0o077:
        os.chmod(folder, 0o700)


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
        )

    def write(self, path: Path) -> None:
        """Publish this state at ``path`` atomically, readable by its owner only."""
        _files.atomic_write(path, self.encode(), mode=0o600)

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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie child of ours counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        reaped, _status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
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
    """The server recorded for this database, or ``None``; a stale or garbled record is removed."""
    if not paths.state_file.exists():
        return None
    state = _read_state_file(paths.state_file)
    if state is None or state.db != str(paths.db_path) or not pid_alive(state.pid):
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None
    return state


@dataclass(frozen=True)
class StartOptions:
    """How to start a background server when none is running."""

    host: str
    port: int
    idle_timeout: float


@dataclass(frozen=True)
class ServerLaunch:
    """The command line of a background server: built by :func:`ensure_server`,
    parsed by ``python -m projctl.server``. One owner for both halves."""

    db_path: Path
    options: StartOptions

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "projctl.server",
            "--db",
            str(self.db_path),
            "--host",
            self.options.host,
            "--port",
            str(self.options.port),
            "--idle-timeout",
            repr(self.options.idle_timeout),
        ]

    @classmethod
    def parse(cls, args: Sequence[str]) -> ServerLaunch:
        """The launch that :meth:`argv` (less its first three items) describes.

        Raises :class:`~projctl.errors.ConfigError` for anything else.
        """
        parser = argparse.ArgumentParser(prog="projctl.server", exit_on_error=False)
        for name in ("--db", "--host", "--port", "--idle-timeout"):
            parser.add_argument(name, required=True)
        try:
            parsed = parser.parse_args(list(args))
        except (argparse.ArgumentError, SystemExit) as error:
            raise ConfigError(f"not a server launch: {error}") from None
        return cls(
            parse_db_path(parsed.db, "--db"),
            StartOptions(
                host=parse_host(parsed.host, "--host"),
                port=parse_port(parsed.port, "--port"),
                idle_timeout=parse_seconds(parsed.idle_timeout, "--idle-timeout"),
            ),
        )


def ensure_server(paths: RuntimePaths, options: StartOptions) -> ServerState:
    """The running server for this database, starting one in the background if needed.

    Commands racing here serialise on ``start.lock``: the first starts the
    server, the others find it running.
    """
    ensure_private_folder(paths.folder)
    try:
        with _files.locked(paths.start_lock, START_TIMEOUT):
            state = read_server_state(paths)
            if state is not None:
                try:
                    rpc.request(state.socket, rpc.OP_STATUS)
                    return state
                except ServerUnavailableError:
                    with contextlib.suppress(OSError):
                        paths.state_file.unlink()
            return _spawn_server(paths, options)
    except _files.LockTimeout:
        raise ServerError(f"another command is starting the server ({paths.start_lock})") from None
    except _files.LockFileError as error:
        raise ServerError(f"cannot open {paths.start_lock}: {error.strerror}") from None


def _spawn_server(paths: RuntimePaths, options: StartOptions) -> ServerState:
    """Start a detached background server and wait until its state file names it."""
    command = ServerLaunch(paths.db_path, options).argv()
    with contextlib.suppress(OSError):  # every start appends; keep one previous log, bounded
        if paths.log_file.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(paths.log_file, paths.log_file.with_name("server.log.1"))
    log_fd = os.open(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
    deadline = time.monotonic() + START_TIMEOUT
    pause = 0.005
    while time.monotonic() < deadline:
        state = read_server_state(paths)
        if state is not None and state.pid == pid:
            return state
        if not pid_alive(pid):
            raise ServerError(
                f"the server could not start: {_last_line(paths.log_file)} (log: {paths.log_file})"
            )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, 9)
    raise ServerError(f"the server did not start within {START_TIMEOUT:g}s (log: {paths.log_file})")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def stop_server(paths: RuntimePaths, timeout: float = STOP_TIMEOUT) -> ServerState | None:
    """Stop the database's server and wait for it to exit; ``None`` if none was running."""
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        rpc.request(state.socket, rpc.OP_STOP, timeout=timeout)
    except ServerError:
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


def server_status(paths: RuntimePaths) -> dict[str, Any] | None:
    """The running server's health report, or ``None`` when none runs."""
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        return rpc.request(state.socket, rpc.OP_STATUS)
    except ServerUnavailableError:
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None


@dataclass(frozen=True)
class Endpoint:
    """Where a subscriber connects: the ``/ws`` URL, the token it needs, and the latest seq."""

    url: str
    token: str | None = None
    #: The server's newest ``seq`` when it was located, so "from now on" can be resumed.
    latest_seq: int | None = None


def locate(paths: RuntimePaths, start: StartOptions | None) -> Endpoint:
    """The database's server as a subscriber sees it, starting one when ``start`` is given.

    Raises :class:`~projctl.errors.ServerUnavailableError` when none runs and none may
    be started (worth retrying later), :class:`~projctl.errors.ServerError` when one
    cannot be started.
    """
    state = read_server_state(paths)
    if state is None:
        if start is None:
            raise ServerUnavailableError("no server is running for this database")
        state = ensure_server(paths, start)
    status = rpc.request(state.socket, rpc.OP_STATUS)
    latest = status.get("latest_seq")
    return Endpoint(
        url=state.url,
        token=state.subscriber_token,
        latest_seq=latest if isinstance(latest, int) and not isinstance(latest, bool) else None,
    )
