"""Find or start a database's broadcast server, forward events to it, ask it for status.

Each database has a private runtime folder beside it, ``.<db name>.projctl/``
(mode 0700), holding:

``server.json``
    the running server's state (pid, host, port, url, token, socket, db), mode 0600;
``server.sock``
    the server's Unix socket, where local commands forward events. Only the
    folder's owner can reach it, which is what authenticates them. (When that
    path is too long for a Unix socket, the socket lives in a private folder
    under the system temp folder instead; ``server.json`` says where.)
``server.log``
    what a background server prints;
``start.lock``
    held while a server is being started, so that racing commands start one.

Forwarding uses the Unix socket and one JSON line each way, not WebSocket: a
WebSocket client library costs more to import than the whole exchange takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from projctl.errors import ServerError
from projctl.events import Event

__all__ = [
    "Connection",
    "Message",
    "RuntimePaths",
    "ServerInfo",
    "StartOptions",
    "ensure_private_folder",
    "ensure_server",
    "follow",
    "forward",
    "is_loopback",
    "read_server_info",
    "request",
    "runtime_paths",
    "stop_server",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})

#: Unix socket paths longer than this do not fit ``sockaddr_un`` everywhere (104 on macOS).
SOCKET_PATH_MAX = 100
START_TIMEOUT = 15.0
#: A background server's log past this size is moved to ``server.log.1`` at the next start.
LOG_ROTATE_BYTES = 1 << 20
REQUEST_TIMEOUT = 10.0


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
class ServerInfo:
    """A running server, as its state file describes it."""

    pid: int
    host: str
    port: int
    url: str
    token: str
    socket: Path
    db: str
    auto: bool
    subscriber_token: str | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ServerInfo:
        return cls(
            pid=int(state["pid"]),
            host=str(state["host"]),
            port=int(state["port"]),
            url=str(state["url"]),
            token=str(state["token"]),
            socket=Path(state["socket"]),
            db=str(state["db"]),
            auto=bool(state.get("auto", False)),
            subscriber_token=state.get("subscriber_token"),
        )


@dataclass(frozen=True)
class StartOptions:
    """How to start a background server when none is running."""

    host: str
    port: int
    idle_timeout: float


class _Unreachable(ServerError):
    """The state file names a server that does not answer: it is gone."""


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


def read_server_info(paths: RuntimePaths) -> ServerInfo | None:
    """The server recorded for this database, or ``None`` (a stale record is removed)."""
    try:
        state = orjson.loads(paths.state_file.read_bytes())
        info = ServerInfo.from_state(state)
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # Half-written or garbage: no server we can trust is behind it.
        _remove_state_file(paths)
        return None
    if info.db != str(paths.db_path) or not pid_alive(info.pid):
        _remove_state_file(paths)
        return None
    return info


def _remove_state_file(paths: RuntimePaths) -> None:
    with contextlib.suppress(OSError):
        paths.state_file.unlink()


def request(info: ServerInfo, payload: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
    """Send one request over the server's Unix socket and return its decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        try:
            connection.connect(str(info.socket))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise _Unreachable(
                f"server pid {info.pid} does not answer on {info.socket}: {error.strerror}"
            ) from None
        except OSError as error:
            raise ServerError(f"cannot reach the server on {info.socket}: {error}") from None
        try:
            connection.sendall(orjson.dumps(payload) + b"\n")
            reply = bytearray()
            while not reply.endswith(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise ServerError(f"server pid {info.pid} did not answer within {timeout:g}s") from None
        except OSError as error:
            raise ServerError(f"lost the connection to server pid {info.pid}: {error}") from None
    try:
        return orjson.loads(reply)
    except orjson.JSONDecodeError:
        raise ServerError(f"server pid {info.pid} sent a malformed reply") from None


def forward(
    db_path: Path,
    event: Event,
    version: tuple[int, int, int] | None,
    *,
    start: StartOptions | None,
) -> ServerInfo:
    """Hand a committed event to the database's server, starting one if ``start`` is given.

    Returns once the server has accepted the event. Raises :class:`ServerError`
    when no server can take it; the event stays in the journal either way.
    """
    paths = runtime_paths(db_path)
    payload = {"op": "forward", "event": event, "version": version}
    info = read_server_info(paths)
    if info is not None:
        try:
            _expect_ok(request(info, payload))
            return info
        except _Unreachable:
            info = None
    if start is None:
        raise ServerError("no server is running for this database")
    info = ensure_server(paths, start)
    _expect_ok(request(info, payload))
    return info


def _expect_ok(reply: Any) -> None:
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise ServerError(f"the server refused the event: {error}")


def ensure_server(paths: RuntimePaths, options: StartOptions) -> ServerInfo:
    """The running server for this database, starting one in the background if needed.

    Commands racing here serialise on ``start.lock``: the first starts the
    server, the others find it running.
    """
    ensure_private_folder(paths.folder)
    with _locked(paths.start_lock, START_TIMEOUT):
        info = read_server_info(paths)
        if info is not None:
            try:
                request(info, {"op": "status"})
                return info
            except _Unreachable:
                _remove_state_file(paths)
        return _spawn_server(paths, options)


def _spawn_server(paths: RuntimePaths, options: StartOptions) -> ServerInfo:
    """Start ``projctl serve`` fully detached and wait until its state file names it."""
    command = [
        sys.executable,
        "-m",
        "projctl",
        "serve",
        "--db",
        str(paths.db_path),
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--idle-timeout",
        f"{options.idle_timeout:g}",
    ]
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
        info = read_server_info(paths)
        if info is not None and info.pid == pid:
            return info
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


def stop_server(db_path: Path, timeout: float = 10.0) -> ServerInfo | None:
    """Stop the database's server and wait for it to exit; ``None`` if none was running."""
    paths = runtime_paths(db_path)
    info = read_server_info(paths)
    if info is None:
        return None
    try:
        request(info, {"op": "stop"}, timeout=timeout)
    except ServerError:
        with contextlib.suppress(OSError):
            os.kill(info.pid, 15)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid):
        if time.monotonic() >= deadline:
            raise ServerError(f"server pid {info.pid} did not stop within {timeout:g}s")
        time.sleep(0.02)
    _remove_state_file(paths)
    return info


def server_status(db_path: Path) -> dict[str, Any] | None:
    """The running server's health report, or ``None`` when none runs."""
    paths = runtime_paths(db_path)
    info = read_server_info(paths)
    if info is None:
        return None
    try:
        reply = request(info, {"op": "status"})
    except _Unreachable:
        _remove_state_file(paths)
        return None
    if not isinstance(reply, dict):
        raise ServerError("the server sent a malformed status")
    reply.pop("ok", None)
    return reply


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServerError(f"another command is starting the server ({path})") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


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
        return seq if isinstance(seq, int) else None


@dataclass(frozen=True)
class Connection:
    """A change in :func:`follow`'s connection to the server."""

    state: Literal["starting", "connected", "reconnecting"]
    url: str | None = None
    #: Seconds until the next attempt (``reconnecting`` only).
    retry_in: float | None = None
    error: str | None = None


#: Reconnection waits grow from the first to the last figure, doubling each time.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


async def follow(
    db_path: Path,
    *,
    since: int | None,
    snapshot: bool,
    start: StartOptions | None,
) -> AsyncIterator[Message | Connection]:
    """Yield every message of the database's server in ``seq`` order, forever.

    Starts with a replay from ``since`` (``None``: only what happens from now
    on), or with a ``snapshot`` message when ``snapshot`` is true. On any
    disconnect it yields a ``reconnecting`` :class:`Connection`, waits with
    backoff, finds the server again (starting one when ``start`` is given and
    none runs) and resumes with ``since=<last seq seen>``: no event is lost and
    none is yielded twice. Lifecycle events, ``snapshot`` and ``resync``
    messages are yielded as :class:`Message`.
    """
    # Imported here, not at the top: forwarding an event (the hot path of every
    # command) needs neither, and asyncio alone costs ~40 ms to import.
    import asyncio
    from urllib.parse import urlencode

    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    paths = runtime_paths(db_path)
    last_seq = since
    want_snapshot = snapshot
    backoff = BACKOFF_FIRST
    while True:
        server_url = None
        try:
            info = await asyncio.to_thread(read_server_info, paths)
            if info is None:
                if start is None:
                    raise ServerError("no server is running for this database")
                yield Connection("starting")
                info = await asyncio.to_thread(ensure_server, paths, start)
            if last_seq is None and not want_snapshot:
                # "From now on" is the server's latest seq: resuming from it after a
                # disconnect then loses nothing that happened in between.
                status = await asyncio.to_thread(request, info, {"op": "status"})
                last_seq = int(status["latest_seq"])
            query: dict[str, Any] = {}
            if last_seq is not None and not want_snapshot:
                query["since"] = last_seq
            elif want_snapshot:
                query["snapshot"] = 1
            if info.subscriber_token:
                query["token"] = info.subscriber_token
            server_url = info.url
            url = f"{info.url}?{urlencode(query)}" if query else info.url
            async with connect(url, open_timeout=10, compression=None, max_size=None) as ws:
                yield Connection("connected", info.url)
                backoff = BACKOFF_FIRST
                async for text in ws:
                    if isinstance(text, bytes):
                        text = text.decode()
                    message = Message(text, orjson.loads(text))
                    seq = message.seq
                    if message.event_type in ("snapshot", "resync"):
                        want_snapshot = False
                    elif seq is not None and last_seq is not None and seq <= last_seq:
                        continue  # already seen before a reconnect
                    if seq is not None:
                        last_seq = seq
                    yield message
            error = "the server closed the connection"
        except (
            OSError,
            ServerError,
            WebSocketException,
            asyncio.TimeoutError,
            orjson.JSONDecodeError,
            KeyError,
            ValueError,
        ) as failure:
            error = str(failure) or type(failure).__name__
        yield Connection("reconnecting", server_url, retry_in=backoff, error=error)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
