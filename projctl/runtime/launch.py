"""Claim, launch, spawn and stop a database's background server.

The background server is ``python -m projctl.server`` with the arguments of
:class:`ServerLaunch`, whose two halves live here. Starting a server is always an
explicit call: :func:`ensure_server` waits until it answers, :func:`start_in_background`
does not. While a server starts, the start lock file records it (pid, process start,
spawn time) so that no other command starts a second one; the server's state file,
once published, makes that record moot (:meth:`~.state.ServerState.write` clears it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

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

from .ask import ask, request, verify_database
from .paths import RuntimePaths, check_private_folder, runtime_paths
from .state import ServerState, pid_alive, process_start_time, read_server_state, spawned
from .wait import poll_until

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: A background server's log past this size is moved to ``server.log.1`` at the next start.
LOG_ROTATE_BYTES = 1 << 20


class StartOptions(NamedTuple):
    """How to start a background server when none is running.

    A named tuple, like :class:`ServerLaunch`: a command that starts its server builds both."""

    host: str
    port: int
    idle_timeout: float
    #: When ``port`` is taken, take any free port instead of failing.
    port_fallback: bool = False
    #: Subscribers need the token even on loopback.
    require_token: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS


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
        running = poll_until(lambda: read_server_state(paths), time.monotonic() + START_TIMEOUT)
        where = f": pid {running.pid}, {running.url}" if running else ""
        raise ServerError(f"a server for this database is already running{where}")
    return fd


class ServerLaunch(NamedTuple):
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
        import argparse  # only a server parses its launch: not on a command's path

        class RaisingParser(argparse.ArgumentParser):
            """argparse that raises instead of printing usage and exiting (which
            ``exit_on_error`` does not cover for missing or unknown arguments before 3.12)."""

            def error(self, message: str) -> NoReturn:
                raise ConfigError(f"not a server launch: {message}")

        parser = RaisingParser(prog="projctl.server", add_help=False)
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
    server, the others find it running, and a server another command started in the
    background (:func:`start_in_background`) is waited for, not started twice. Only a
    server that is gone is replaced: one that is not answering raises
    :class:`~projctl.errors.ServerNotAnsweringError`. Nothing waits past ``deadline``
    (a ``time.monotonic()`` instant).
    """
    paths = runtime_paths(paths.db_path, for_a_server=True)  # the entry the server keeps
    check_private_folder(paths.folder, create=True)
    lock_timeout = START_TIMEOUT
    if deadline is not None:
        lock_timeout = max(0.0, min(lock_timeout, deadline - time.monotonic()))
    try:
        with _files.locked(paths.start_lock, lock_timeout) as lock:
            state = _answering(paths, deadline)
            if state is not None:
                return state
            starting = _background_start(lock)
            if starting is not None:
                return _wait_started(paths, starting, deadline)
            return _wait_started(paths, _spawn_server(paths, options, lock), deadline)
    except _files.LockTimeout:
        raise ServerError(f"another command is starting the server ({paths.start_lock})") from None
    except _files.LockFileError as error:
        raise ServerError(f"cannot open {paths.start_lock}: {error.strerror}") from None


def start_in_background(paths: RuntimePaths, options: StartOptions) -> ServerState | None:
    """The running server for this database, or ``None`` once one is on its way: never waits
    for a server to come up, nor for another command that is starting one.

    For a command that has committed and journaled its event: a server that starts later
    reads the journal when it starts (and watches it after), so the event reaches every
    subscriber without this command waiting. A start that failed is found by the next call
    (the starting server is gone and never published its state): that call starts one and
    waits for it, so a server that cannot start is still reported, by the next command.
    Raises :class:`~projctl.errors.ServerError` for that, as :func:`ensure_server` does.
    """
    paths = runtime_paths(paths.db_path, for_a_server=True)
    check_private_folder(paths.folder, create=True)
    try:
        lock = _files.try_lock(paths.start_lock)
    except _files.LockFileError as error:
        raise ServerError(f"cannot open {paths.start_lock}: {error.strerror}") from None
    if lock is None:
        return None  # another command is starting or checking the server right now
    try:
        state = _answering(paths, None)
        if state is not None:
            return state
        if _background_start(lock) is not None:
            return None
        failed = _start_record(lock) is not None  # it never published its state
        pid = _spawn_server(paths, options, lock)
        if failed:
            return _wait_started(paths, pid, None)
        return None
    finally:
        os.close(lock)


def _answering(paths: RuntimePaths, deadline: float | None) -> ServerState | None:
    """The server the state file names if it answers; a state file of one that is gone is
    removed."""
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        ask(paths, state, rpc.OP_STATUS, deadline=deadline)
        return state
    except ServerUnavailableError:
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None


# -- the start record: which server is starting, in the start lock file --------------------


def _start_record(lock: int) -> tuple[int, int | None, float] | None:
    """``(pid, process start, wall time of the spawn)`` of the last start not published yet,
    as the start lock file (open as ``lock``) records it; ``None`` when there is none."""
    try:
        words = os.pread(lock, 128, 0).split()
        pid, started, spawned_at = int(words[0]), int(words[1]), float(words[2])
    except (OSError, ValueError, IndexError):
        return None
    return pid, started if started >= 0 else None, spawned_at


def _background_start(lock: int) -> int | None:
    """The pid of a server another command started that is still starting (alive, the
    same process, younger than :data:`START_TIMEOUT`); ``None`` when there is none. One
    that has been starting for longer is killed: it hangs."""
    record = _start_record(lock)
    if record is None:
        return None
    pid, started, spawned_at = record
    if not pid_alive(pid) or (started is not None and process_start_time(pid) != started):
        return None
    if time.time() - spawned_at < START_TIMEOUT:
        return pid
    with contextlib.suppress(OSError):
        os.kill(pid, 9)
    return None


def _spawn_server(paths: RuntimePaths, options: StartOptions, lock: int) -> int:
    """Start a detached background server and record it in the start lock file (open as
    ``lock``); return its pid without waiting for it."""
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
    spawned.add(pid)
    started = process_start_time(pid)
    record = f"{pid} {-1 if started is None else started} {time.time():.3f}\n".encode()
    with contextlib.suppress(OSError):
        os.ftruncate(lock, 0)
        os.pwrite(lock, record, 0)
    return pid


def _wait_started(paths: RuntimePaths, pid: int, deadline: float | None = None) -> ServerState:
    """Wait until the state file names the server ``pid`` (never past ``deadline``: the
    server then goes on starting without us)."""
    start_deadline = time.monotonic() + START_TIMEOUT
    cut_short = deadline is not None and deadline < start_deadline
    if deadline is not None:
        start_deadline = min(start_deadline, deadline)

    def started() -> ServerState | None:
        state = read_server_state(paths)
        if state is not None and state.pid == pid:
            return state
        if not pid_alive(pid):
            raise ServerError(
                f"the server could not start: {_last_line(paths.log_file)} (log: {paths.log_file})"
            )
        return None

    # A start is usually quick: look often at first, then less.
    state = poll_until(started, start_deadline, 0.005, max_interval=0.05)
    if state is not None:
        return state
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
    if not poll_until(lambda: not pid_alive(state.pid), time.monotonic() + timeout):
        raise ServerError(f"server pid {state.pid} did not stop within {timeout:g}s")
    with contextlib.suppress(OSError):
        paths.state_file.unlink()
    return state
