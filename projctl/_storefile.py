"""The database file on disk: its lock, its bytes, its format, and the lock file's record.

Private to :mod:`projctl.store`: the file itself, locked, read and replaced atomically
(:class:`DatabaseFile`); what a projctl database file must look like before the store reads it
without checking again (:func:`check_format`); and what the lock file remembers of the last
commit (:class:`HighWater`). None of it touches TinyDB: it works on bytes and decoded JSON.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard, TypeVar, cast

import orjson

from projctl import _files
from projctl.backend import FileVersion
from projctl.errors import (
    CorruptDatabaseError,
    DatabaseChangedError,
    EmptyDatabaseError,
    LockTimeoutError,
    StoreError,
)

__all__ = [
    "FORMAT",
    "META_ID",
    "NEW_FILE_MODE",
    "SCHEMA",
    "TABLES",
    "DatabaseFile",
    "HighWater",
    "check_format",
    "finish",
    "is_count",
    "parse",
    "parse_in_steps",
    "version_of",
]

FORMAT = "projctl"
SCHEMA = 1
META_ID = 1
#: Every table a database file may hold (the last: idempotency keys, see store.KEYS_TABLE).
TABLES = ("projects", "journal", "meta", "idempotency")


def is_count(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a whole number >= 0 (JSON's ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class HighWater(NamedTuple):
    """What the lock file remembers of the database's last commit: its id, last ``seq`` and
    last issued project id.

    The lock file stays when another program puts an older copy of the database in place
    (``mv backup.json db.json``), so this record is how a writer knows that seqs and ids
    up to these were already issued and must never be issued again, and that an empty
    file where a database was is not a new database. Written by the lock holder after each
    commit, in place (the lock file itself is never replaced: that would split the lock).
    """

    database_id: str
    last_seq: int
    last_issued: str | None

    @classmethod
    def read(cls, fd: int) -> HighWater | None:
        """The record in the open lock file, ``None`` when it holds none (or garbage: a
        record torn by a crash is as good as none, the database's own meta then rules)."""
        try:
            raw = os.pread(fd, 4096, 0)
            record = orjson.loads(raw) if raw else None
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(record, dict):
            return None
        database_id, last_seq = record.get("database_id"), record.get("last_seq")
        last_issued = record.get("last_issued")
        if not isinstance(database_id, str) or not database_id or not is_count(last_seq):
            return None
        return cls(database_id, last_seq, last_issued if isinstance(last_issued, str) else None)

    def write(self, fd: int) -> None:
        payload = orjson.dumps(
            {
                "database_id": self.database_id,
                "last_seq": self.last_seq,
                "last_issued": self.last_issued,
            }
        )
        # Best effort: the database itself is committed already, and a record that lags
        # behind it is merely raised by the next commit.
        with contextlib.suppress(OSError):
            os.pwrite(fd, payload, 0)
            os.ftruncate(fd, len(payload))


def parse(raw: bytes, path: Path) -> dict[str, dict[str, Any]]:
    """The database file's bytes as its tables, their format checked (:func:`check_format`);
    :class:`CorruptDatabaseError` for bytes that are not JSON."""
    # Parsing builds one dict per project, none of which can be part of a cycle;
    # without this the cyclic GC walks the growing heap again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptDatabaseError(
            f"database {path} is not valid JSON; it was left untouched"
        ) from None
    finally:
        if gc_was_enabled:
            gc.enable()
    check_format(data, path)
    return data  # type: ignore[no-any-return]


_T = TypeVar("_T")


def finish(steps: Generator[None, None, _T]) -> _T:
    """Run work done in steps (:func:`parse_in_steps`, the store's stepped read) to the end,
    at once; what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


#: How much of the file :func:`parse_in_steps` decodes to text at a time.
PIECE_BYTES = 256 * 1024
#: Records parsed in one step of :func:`parse_in_steps`.
RECORDS_PER_STEP = 32


def parse_in_steps(raw: bytes, path: Path) -> Generator[None, None, dict[str, dict[str, Any]]]:
    """:func:`parse`, a few records at a time: each ``next()`` does a bounded piece of the
    work, and the tables are the generator's return value.

    For a caller that must not be held long: ``orjson.loads`` of a large file is one C
    call of tens of milliseconds, holding the GIL throughout. Here the tables are walked in
    Python and each of their records is parsed whole by one call of the standard library's
    JSON scanner; the file is decoded to text a piece at a time, so no copy of it all is
    ever made. The result is what :func:`parse` returns for the same bytes, and bytes
    :func:`parse` refuses are refused here too (the rare ones the scanner reads
    differently, a lone surrogate or a document that is not an object, go to :func:`parse`
    itself, in one step).
    """
    try:
        data = yield from _RecordReader(raw).document()
    except _ReadDifferently:
        return parse(raw, path)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise CorruptDatabaseError(
            f"database {path} is not valid JSON; it was left untouched"
        ) from None
    check_format(data, path)
    return data


class _ReadDifferently(Exception):
    """The scanner would not read this document as orjson does: :func:`parse` it instead."""


class _RecordReader:
    """A JSON document read as orjson reads it, its top object and the objects in it walked
    member by member and every other value parsed by one scanner call.

    ``text[pos:]`` is what is left to read of the decoded text, which grows a piece at a
    time (at least doubling what is left, so a long value is not scanned again and again).
    """

    def __init__(self, raw: bytes) -> None:
        import codecs
        import json
        import json.scanner
        import re

        self._raw = memoryview(raw)
        self._decoded = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._whitespace = re.compile(r"[ \t\n\r]*")
        # What json.loads itself scans with (the C scanner), numbers read as orjson reads them.
        decoder = json.JSONDecoder(
            parse_int=_orjson_int, parse_float=_finite_float, parse_constant=_not_json
        )
        self._scan = json.scanner.make_scanner(cast(Any, decoder))
        # One string per distinct key, as orjson's key cache shares them: 20,000 records
        # with their own "project_id" would cost megabytes.
        self._keys: dict[str, str] = {}
        self.text = ""
        self.pos = 0

    def document(self) -> Generator[None, None, dict[str, Any]]:
        """The whole document, read a few records a step."""
        if self._peek() != "{":
            raise _ReadDifferently("not an object: a document the store refuses anyway")
        data = yield from self._object(depth=1)
        if self._peek():
            raise ValueError("data after the document")
        return data

    def _more(self) -> bool:
        """Decode more of the file onto what is left; ``False`` when all of it was."""
        if self._decoded >= len(self._raw):
            return False
        size = max(PIECE_BYTES, len(self.text) - self.pos)
        piece = self._raw[self._decoded : self._decoded + size]
        self._decoded += len(piece)
        final = self._decoded >= len(self._raw)
        self.text = self.text[self.pos :] + self._decoder.decode(piece, final)
        self.pos = 0
        if "\\ud" in self.text or "\\uD" in self.text:
            # Maybe a lone surrogate, which the scanner keeps and orjson refuses.
            raise _ReadDifferently("a surrogate escape")
        return True

    def _peek(self) -> str:
        """The next character after whitespace (``pos`` moved onto it), ``""`` at the end."""
        while True:
            matched = self._whitespace.match(self.text, self.pos)
            assert matched is not None  # the pattern matches the empty string
            self.pos = matched.end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more():
                return ""

    def _value(self) -> Any:
        """The whole value at ``pos``, with more of the text decoded while it runs past it."""
        while True:
            try:
                value, end = self._scan(self.text, self.pos)
            except StopIteration:
                if self._more():
                    continue
                raise ValueError("expected a value") from None
            except ValueError:
                if self._more():
                    continue
                raise
            # A value that ends where the text does may go on (a number cut short).
            if end < len(self.text) or not self._more():
                self.pos = end
                return value

    def _object(self, depth: int) -> Generator[None, None, dict[str, Any]]:
        """The object at ``pos``; objects in it are walked the same way ``depth`` levels down."""
        self.pos += 1
        members: dict[str, Any] = {}
        if self._peek() == "}":
            self.pos += 1
            return members
        while True:
            if len(members) % RECORDS_PER_STEP == RECORDS_PER_STEP - 1:
                yield
            if self._peek() != '"':
                raise ValueError("expected a key")
            key = self._value()
            if self._peek() != ":":
                raise ValueError("expected ':'")
            self.pos += 1
            if depth > 0 and self._peek() == "{":
                value = yield from self._object(depth - 1)
            else:
                self._peek()
                value = self._value()
                if type(value) is dict and len(self._keys) < _KEYS_SHARED:
                    value = self._with_shared_keys(value)
            members[key] = value
            following = self._peek()
            self.pos += 1
            if following == "}":
                return members
            if following != ",":
                raise ValueError("expected ',' or '}'")

    def _with_shared_keys(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = self._keys
        return {keys.setdefault(name, name): item for name, item in record.items()}


#: Distinct record keys shared at most (records of many different keys keep their own).
_KEYS_SHARED = 4096


def _orjson_int(text: str) -> int | float:
    """An integer as orjson reads it: a float beyond 64 bits."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else _finite_float(text)


def _finite_float(text: str) -> float:
    """A number with a fraction or exponent; orjson refuses one too large for a double."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number is infinity when parsed as double")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_format(data: Any, path: Path) -> None:
    """Check the shape of everything the store reads without checking it again: the three
    tables are objects of objects, journal keys are seqs, and the meta's values have
    their types. Project records and journal entries are checked field by field
    where they are read.

    Raises :class:`CorruptDatabaseError` (``path`` names the file) for anything that is
    not a projctl database, :class:`StoreError` for one of a newer schema.
    """
    not_ours = CorruptDatabaseError(f"{path} is not a projctl database; it was left untouched")
    if not isinstance(data, dict):
        raise not_ours
    meta = data.get("meta", {}).get(str(META_ID)) if isinstance(data.get("meta"), dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_ours
    if not all(isinstance(data.get(name, {}), dict) for name in TABLES):
        raise not_ours
    schema = meta.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA:
        raise StoreError(
            f"database {path} has schema {schema!r}, newer than this projctl "
            f"understands ({SCHEMA}); upgrade projctl"
        )
    if "last_seq" not in meta:
        raise not_ours
    problem = _meta_problem(meta) or _tables_problem(data)
    if problem is not None:
        raise CorruptDatabaseError(
            f"database {path} is malformed: {problem}; it was left untouched"
        )


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the meta record, ``None`` when nothing is."""
    if not is_count(meta.get("last_seq")):
        return f"last_seq is {meta.get('last_seq')!r}, not a seq"
    if not isinstance(meta.get("database_id", ""), str):
        return "database_id is not a string"
    last_issued = meta.get("last_issued")
    if last_issued is not None and not isinstance(last_issued, str):
        return f"last_issued is {last_issued!r}, not a project id"
    limit = meta.get("journal_limit", 1)
    if not is_count(limit) or limit < 1:
        return f"journal_limit is {limit!r}, not a count"
    restores = meta.get("restores", [])
    if not isinstance(restores, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(is_count(seq) for seq in pair)
        for pair in restores
    ):
        return "restores is not a list of seq ranges"
    return None


def _tables_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the projects and journal tables' shape, ``None`` when nothing is."""
    for key, record in data.get("projects", {}).items():
        if not isinstance(record, dict):
            return f"project {key!r} is not a record"
    for key, entry in data.get("journal", {}).items():
        if not (key.isdigit() and key.isascii()) or not isinstance(entry, dict):
            return f"journal entry {key!r} is not an event"
    return None


#: A new database file is private: readable and writable by its owner only. Its lock file
#: gets the database's own mode: whoever can open it can block every write.
NEW_FILE_MODE = 0o600


def version_of(status: os.stat_result) -> FileVersion:
    """``(inode, mtime_ns, size)``: every commit replaces the file, so its version changes
    with every commit."""
    return (status.st_ino, status.st_mtime_ns, status.st_size)


class DatabaseFile:
    """The database file on disk: its lock, its bytes and their version.

    What a transaction of :class:`~projctl.store.ProjectStore` holds, reads and replaces;
    what the bytes mean (tables, projects, events) is the store's. ``path`` is the file as
    given (for messages); :attr:`file` is the one every path to it resolves to.
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float,
        on_lock_wait: Callable[[Path], None] | None = None,
    ) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        #: Called once when a change has waited about a second for the lock.
        self.on_lock_wait = on_lock_wait

    @property
    def file(self) -> Path:
        """The database file with symlinks resolved: a symlinked database is written through
        to its target (the link stays a link), and every path to it shares one lock."""
        return Path(os.path.realpath(self.path))

    @property
    def lock_path(self) -> Path:
        """``<db>.lock`` beside the database file itself (a symlink's target)."""
        file = self.file
        return file.with_name(file.name + ".lock")

    def version(self) -> FileVersion | None:
        """The file's current :data:`~projctl.backend.FileVersion`, ``None`` when there is none."""
        try:
            return version_of(self.file.stat())
        except OSError:
            return None

    def prepare_to_write(self) -> None:
        """Refuse a device, FIFO or folder before anything is created or opened for writing
        beside it (``--db /dev/null`` must neither be replaced nor get a lock file in
        ``/dev``), then create the file's folder."""
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(self.file).st_mode):
                raise self._not_regular()
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create folder {self.path.parent}: {error.strerror or error}"
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """Hold the database's inter-process lock; yield the lock file's descriptor (for
        its :class:`HighWater` record)."""
        on_slow = None
        if self.on_lock_wait is not None:
            on_slow = functools.partial(self.on_lock_wait, self.lock_path)
        try:
            mode = stat.S_IMODE(os.stat(self.file).st_mode)
        except OSError:
            mode = NEW_FILE_MODE
        try:
            with _files.locked(self.lock_path, self.lock_timeout, mode=mode, on_slow=on_slow) as fd:
                yield fd
        except _files.LockTimeout:
            raise LockTimeoutError(
                f"database {self.path} is locked by another process (waited {self.lock_timeout:g}s)"
            ) from None
        except _files.LockFileError as error:
            raise StoreError(
                f"cannot open lock file {self.lock_path}: {error.strerror or error}"
            ) from None

    def read(
        self, *, database_was_here: bool | None = None
    ) -> tuple[dict[str, dict[str, Any]], FileVersion | None]:
        """The parsed file (:func:`parse`) and its version; ``({}, None)`` when there is no
        file (see :meth:`read_raw`)."""
        raw, version = self.read_raw(database_was_here=database_was_here)
        return (parse(raw, self.path) if raw else {}), version

    def read_raw(
        self, *, database_was_here: bool | None = None
    ) -> tuple[bytes, FileVersion | None]:
        """The file's bytes and its version; ``(b"", None)`` when there is no file.

        An empty file is a new database only where none was before (a ``touch`` or
        ``mktemp``): where one was (``database_was_here``; by default, when its lock file
        exists), it is a database being rewritten in place by another program, or
        truncated, and :class:`EmptyDatabaseError` leaves it untouched.
        """
        try:
            found = _files.read_regular(self.file)
        except _files.NotRegularFile:
            raise self._not_regular() from None
        except OSError as error:
            raise StoreError(
                f"cannot read database {self.path}: {error.strerror or error}"
            ) from None
        if found is None:
            return b"", None
        raw, status = found
        version = version_of(status)
        if not raw:
            if database_was_here is None:
                database_was_here = os.path.lexists(self.lock_path)
            if database_was_here:
                raise EmptyDatabaseError(
                    f"database {self.path} is empty, but a database was there (its lock file "
                    "exists): another program may be rewriting it; it was left untouched"
                )
            return b"", version  # an empty file (from `touch` or mktemp) is a new database
        return raw, version

    def write(
        self, data: dict[str, dict[str, Any]], read_version: FileVersion | None
    ) -> FileVersion:
        """Replace the file atomically, if it is still the file read at ``read_version``;
        return the version written. The caller holds the lock."""
        payload = orjson.dumps(data)
        file = self.file
        _files.remove_temp_files(file)
        # Another program writing the file in place (``cp backup.json db.json``) does not
        # take our lock: replacing the file now would send its bytes to an unlinked inode.
        if self.version() != read_version:
            raise DatabaseChangedError(
                f"database {self.path} was changed by another program during this change; "
                "nothing was written: run the command again"
            )
        try:
            status = _files.atomic_write(file, payload, mode=NEW_FILE_MODE)
        except OSError as error:
            raise StoreError(
                f"cannot write database {self.path}: {error.strerror or error}"
            ) from None
        return version_of(status)

    def _not_regular(self) -> StoreError:
        return StoreError(f"database {self.path} is not a regular file; it was left untouched")
