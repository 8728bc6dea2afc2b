"""Contexts: named databases and team servers (``projctl context``), kept in a private
file of their own; and reading such a file, which is refused unless only its owner may read
it. :mod:`projctl.config` chooses the context in force; this module only reads and checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from projctl.errors import ConfigError

__all__ = [
    "CONTEXT_NAME",
    "Context",
    "Contexts",
    "contexts_path",
    "read_contexts",
    "read_private_text",
]

#: A context's name: what ``context use NAME`` and ``--context NAME`` take.
CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The contexts file, at most (it holds a few paths and URLs).
_CONTEXTS_MAX = 256 * 1024


@dataclass(frozen=True)
class Context:
    """A named place to run commands against: a database file (``db``), or a team server
    (``url``, with the file holding its token and a CA file to trust)."""

    name: str
    db: str | None = None
    url: str | None = None
    token_file: str | None = None
    ca_file: str | None = None

    def to_dict(self) -> dict[str, str]:
        """As stored (and as ``context list -o json`` prints it), without unset keys."""
        fields = {"db": self.db, "url": self.url, "token_file": self.token_file}
        fields["ca_file"] = self.ca_file
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class Contexts:
    """The contexts file: every context by name, and the current one."""

    current: str | None = None
    contexts: Mapping[str, Context] = field(default_factory=dict)


def contexts_path() -> Path:
    """``<user config dir>/projctl/contexts.json``."""
    import platformdirs

    return Path(platformdirs.user_config_dir("projctl", appauthor=False)) / "contexts.json"


def read_contexts(path: Path | None = None) -> Contexts:
    """The contexts file (none yet: no contexts). It is refused
    (:class:`~projctl.errors.ConfigError`) unless it is a regular file only its owner may
    read, holding the shape ``context add`` writes: another program may have written it."""
    import json

    path = contexts_path() if path is None else path
    text = read_private_text(path, "contexts file", limit=_CONTEXTS_MAX, missing_ok=True)
    if text is None:
        return Contexts()
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"the contexts file {path} is not valid JSON") from None
    contexts: dict[str, Context] = {}
    entries = data.get("contexts", {}) if isinstance(data, dict) else None
    current = data.get("current") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not (current is None or isinstance(current, str)):
        raise ConfigError(f"the contexts file {path} is not one projctl wrote")
    for name, entry in entries.items():
        keys = {"db", "url", "token_file", "ca_file"}
        if (
            not isinstance(name, str)
            or not CONTEXT_NAME.fullmatch(name)
            or not isinstance(entry, dict)
            or not set(entry) <= keys
            or not all(isinstance(value, str) for value in entry.values())
            or ("db" in entry) == ("url" in entry)
        ):
            raise ConfigError(f"the contexts file {path} holds a malformed context {name!r}")
        contexts[name] = Context(name, **entry)
    if current is not None and current not in contexts:
        current = None  # a removed context is simply no longer current
    return Contexts(current, contexts)


def read_private_text(path: Path, what: str, *, limit: int, missing_ok: bool = False) -> str | None:
    """The text of a file that holds secrets or says where they are: a regular file, owned
    by this user, that nobody else may read or write (mode 0600 or stricter); else
    :class:`~projctl.errors.ConfigError` saying what to do. ``None`` when it does not
    exist and ``missing_ok``."""
    import stat

    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(f"there is no {what} {path}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the {what} {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        mode = stat.S_IMODE(status.st_mode)
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(f"the {what} {path} is not a regular file")
        if status.st_uid != os.getuid():
            raise ConfigError(f"the {what} {path} belongs to another user; it is not used")
        if mode & 0o077:
            raise ConfigError(
                f"the {what} {path} may be read by others (mode {mode:04o}); chmod 600 it"
            )
        raw = file.read(limit + 1)
    if len(raw) > limit:
        raise ConfigError(f"the {what} {path} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} {path} is not UTF-8 text") from None
