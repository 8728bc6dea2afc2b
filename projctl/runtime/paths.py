"""The runtime folder and a database's identity: where a database's server keeps its entry.

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
mount of the folder find the same server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import stat
from pathlib import Path
from typing import NamedTuple

from projctl.errors import (
    ServerError,
)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})

#: Unix socket paths longer than this do not fit ``sockaddr_un`` everywhere (104 on macOS).
SOCKET_PATH_MAX = 100
_KEY_LENGTH = 20
#: ``/<key>.sock``
_ENTRY_NAME_MAX = _KEY_LENGTH + 6
#: The start lock's suffix beside the state file's ``.json``: a server that publishes its
#: state finds the start lock of its entry from the state file's path.
START_SUFFIX = ".start"


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
    return Path(_temp_folder()) / f"projctl-{os.getuid()}"


def _temp_folder() -> str:
    """The system temp folder as :func:`tempfile.gettempdir` picks it ($TMPDIR, $TEMP,
    $TMP, then the usual folders), by checking access instead of writing a probe file:
    importing ``tempfile`` costs every command a few milliseconds (it loads ``random``)."""
    candidates = [os.environ.get(name, "") for name in ("TMPDIR", "TEMP", "TMP")]
    for candidate in [*candidates, "/tmp", "/var/tmp", "/usr/tmp"]:
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return os.path.abspath(candidate)
    return "/tmp"  # none is usable: the runtime folder check then says why


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


class RuntimePaths(NamedTuple):
    """Where one database's server keeps its state, socket, locks and log.

    A named tuple: every command that finds its server builds one."""

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

    @property
    def port_file(self) -> Path:
        """Where the port the database's last server listened on is remembered."""
        return self.folder / f"{self.key}.port"


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
    return _sha256_hex(os.fsencode(material))[:_KEY_LENGTH]


def _sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, from CPython's own implementation when it has one:
    ``hashlib`` loads OpenSSL first, about 3 ms of every command that finds its server. The
    digest is the same either way, so every version finds the servers of every other."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12 and later
        except ImportError:
            from hashlib import sha256  # built without them
    digest: str = sha256(data).hexdigest()
    return digest


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
        start_lock=folder / f"{key}{START_SUFFIX}",
        log_file=folder / f"{key}.log",
    )
