"""File primitives with the safety rules every projctl file follows. Stdlib only.

- :func:`locked`: an exclusive ``flock`` with a deadline. The kernel drops it
  when the holder dies, so a crash never leaves a stale lock.
- :func:`read_regular`: read a whole file that must be a regular file; a FIFO or
  a device is refused before a byte is read (``O_NONBLOCK`` keeps a FIFO from
  hanging the open itself).
- :func:`atomic_write`: replace a file whole: a temporary file with a random
  name opened ``O_CREAT|O_EXCL|O_NOFOLLOW`` beside it, ``fsync``, rename,
  ``fsync`` of the folder. Readers see the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "LockFileError",
    "LockTimeout",
    "NotRegularFile",
    "atomic_write",
    "fsync_folder",
    "lock_holder",
    "locked",
    "read_regular",
    "remove_temp_files",
    "temp_prefix",
    "try_lock",
]

#: ``O_NOFOLLOW`` and ``O_CLOEXEC`` where the platform has them (every POSIX we run on).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path exists but is a directory, device, FIFO or socket."""


class LockFileError(OSError):
    """The lock file cannot be opened, or is not a regular file."""


class LockTimeout(TimeoutError):
    """The lock was still held by another process when the deadline passed."""


def _open_lock_file(path: Path, mode: int) -> int:
    """Open (or create with ``mode``) a lock file, never through a symlink; it must be a
    regular file. Raises :class:`LockFileError`.

    A lock file of ours that grants more than ``mode`` (one made by an older projctl, or
    narrowed by nobody) is narrowed to it: whoever can open a lock file can block every
    holder, even through a read-only descriptor.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _CLOEXEC | _NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as error:
        raise LockFileError(error.errno, error.strerror, str(path)) from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise LockFileError(errno.EINVAL, "not a regular file", str(path))
    if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) & ~mode:
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(status.st_mode) & mode)
    return fd


@contextlib.contextmanager
def locked(
    path: Path,
    timeout: float,
    *,
    mode: int = 0o600,
    on_slow: Callable[[], None] | None = None,
    slow_after: float = 1.0,
) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created with ``mode`` if missing); yield its
    open descriptor (read and write), which the holder may use to keep a small record.

    Polls until ``timeout`` seconds have passed, then raises :class:`LockTimeout`.
    ``on_slow`` is called once if the wait passes ``slow_after`` seconds, so a
    person at a terminal learns what the command is waiting for. The lock file is
    never followed through a symlink: a planted link cannot make us create or
    lock a file elsewhere. Raises :class:`LockFileError` when the lock file cannot
    be opened or is not a regular file.
    """
    fd = _open_lock_file(path, mode)
    try:
        started = time.monotonic()
        deadline = started + timeout
        pause = 0.001
        warned = on_slow is None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise LockTimeout(f"{path} is still locked after {timeout:g}s") from None
                if not warned and now - started >= slow_after:
                    warned = True
                    assert on_slow is not None
                    on_slow()
                time.sleep(min(pause, max(0.0, deadline - now)))
                pause = min(pause * 2, 0.025)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def try_lock(path: Path, *, mode: int = 0o600) -> int | None:
    """Take an exclusive ``flock`` on ``path`` at once, or return ``None`` if another holds it.

    Returns the open descriptor: the lock lasts until it is closed (or the process
    dies). Raises :class:`LockFileError` when the lock file cannot be opened.
    """
    fd = _open_lock_file(path, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_holder(path: Path) -> int | None:
    """The pid holding an ``flock`` on ``path``, as ``/proc/locks`` tells (Linux); ``None``
    when nobody does, or the platform cannot tell."""
    try:
        status = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f":{status.st_ino}"
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}{wanted}"
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:123456 0 EOF" (a "->" marks a waiter)
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == device or (fields[5].endswith(wanted) and fields[5].count(":") == 2):
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def read_regular(path: Path, *, limit: int | None = None) -> tuple[bytes, os.stat_result] | None:
    """The bytes of the regular file at ``path`` and its status; ``None`` if there is none.

    Raises :class:`NotRegularFile` for anything but a regular file (symlinks to
    one are followed), and ``OSError`` when it cannot be read. With ``limit``, at most
    ``limit + 1`` bytes are read: more than ``limit`` back means the file is larger.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        # A Unix socket cannot be opened at all (ENXIO): say what it is, not the errno.
        if error.errno == errno.ENXIO and _is_socket(path):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path)) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        return file.read() if limit is None else file.read(limit + 1), status


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def temp_prefix(path: Path) -> str:
    """The name prefix of :func:`atomic_write`'s temporary files for ``path``."""
    return f".{path.name}.tmp-"


def atomic_write(
    path: Path, payload: bytes, *, mode: int, keep_mode: bool = True
) -> os.stat_result:
    """Replace ``path`` with ``payload`` atomically; return the new file's status.

    ``mode`` is used for a new file; an existing file keeps its own mode unless
    ``keep_mode`` is false. On any failure the temporary file is removed and
    ``path`` is untouched.
    """
    folder = path.parent
    if keep_mode:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
    temp_path = folder / f"{temp_prefix(path)}{os.urandom(8).hex()}"
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            # The umask may have narrowed ``mode`` at creation; an existing file's mode wins.
            os.fchmod(file.fileno(), mode)
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
            status = os.fstat(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    fsync_folder(folder)
    return status


def remove_temp_files(path: Path) -> None:
    """Remove :func:`atomic_write` leftovers of ``path`` (call only while holding its lock).

    Temporary files are only made under the lock, so any found by its holder belong
    to a writer that died mid-write. ``unlink`` removes a planted symlink itself,
    never what it points to.
    """
    prefix = temp_prefix(path)
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Some file systems refuse fsync on folders: fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)
