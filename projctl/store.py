"""The TinyDB file: projects and the event journal, one locked transaction per change.

The file is an ordinary TinyDB JSON database with three tables:

``projects``
    one document per project, keyed by ``project_id``;
``journal``
    the last ``journal_limit`` events, keyed by ``seq``;
``meta``
    one document: the format marker, the last ``seq`` and the last issued id.

TinyDB alone is not safe across processes, so every change runs as one
transaction: take an exclusive ``flock`` on ``<db>.lock`` (the kernel drops it
when the holder dies, so a crash never leaves a stale lock), read the file,
apply every table operation in memory, then write the whole file once to a
temporary file beside it, ``fsync`` it and ``os.replace`` it over the old one.
Readers never lock: a rename is atomic, so they see the old or the new file,
never half of one. A change and its journal entry land in the same write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import reduce
from operator import and_
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
from tinydb import where
from tinydb.queries import QueryLike
from tinydb.storages import Storage
from tinydb.table import Document, Table

from projctl import events
from projctl.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    LockTimeoutError,
    ProjectNotFoundError,
    StoreError,
)
from projctl.events import Event, format_timestamp, utc_now
from projctl.model import (
    DEFAULT_STATUS,
    DEFAULT_TYPE,
    Project,
    default_owner,
    next_project_id,
    validate_fields,
)

__all__ = [
    "DEFAULT_JOURNAL_LIMIT",
    "DEFAULT_LOCK_TIMEOUT",
    "FileVersion",
    "ProjectStore",
    "StoreState",
    "default_db_path",
]

DEFAULT_JOURNAL_LIMIT = 1000
DEFAULT_LOCK_TIMEOUT = 10.0

_FORMAT = "projctl"
_SCHEMA = 1
_META_ID = 1
_TABLES = ("projects", "journal", "meta")

_T = TypeVar("_T")

#: ``(inode, mtime_ns, size)`` of the database file. Every commit replaces the file, so
#: the version changes with every commit.
FileVersion = tuple[int, int, int]


def _version_of(status: os.stat_result) -> FileVersion:
    return (status.st_ino, status.st_mtime_ns, status.st_size)


@dataclass(frozen=True)
class StoreState:
    """One consistent read of the database: its journal, latest ``seq`` and projects."""

    journal: list[Event]
    latest_seq: int
    database_id: str
    version: FileVersion | None
    project_records: list[dict[str, Any]]


def default_db_path() -> Path:
    """``<user data dir>/projctl/projects.json`` (XDG on Linux, the platform's own elsewhere)."""
    import platformdirs  # only needed when neither --db nor PROJCTL_DB is given

    return Path(platformdirs.user_data_dir("projctl", appauthor=False)) / "projects.json"


class _MemoryStorage(Storage):
    """Gives TinyDB one decoded copy of the file and keeps its writes in memory.

    TinyDB writes the whole database after every table operation. Holding those
    writes until the transaction commits turns a change of several operations
    into one file write, and makes the operations all-or-nothing.
    """

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self.data = data
        self.changed = False

    def read(self) -> dict[str, dict[str, Any]]:
        return self.data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.data = data
        self.changed = True


class _ProjectsTable(Table):
    """Projects keyed by ``project_id`` instead of TinyDB's counter: lookups by id are O(1).

    TinyDB supports any ``document_id_class`` but types its API for ``int``; the
    casts below are confined to these four methods.
    """

    document_id_class = cast(Any, str)

    def find(self, project_id: str) -> dict[str, Any] | None:
        return self.get(doc_id=cast(int, project_id))

    def add(self, record: dict[str, str]) -> None:
        self.insert(Document(record, doc_id=cast(int, record["project_id"])))

    def replace(self, record: dict[str, str]) -> None:
        self.update(record, doc_ids=[cast(int, record["project_id"])])

    def discard(self, project_id: str) -> None:
        self.remove(doc_ids=[cast(int, project_id)])

    def _update_table(self, updater: Callable[[dict[Any, Mapping[str, Any]]], None]) -> None:
        # TinyDB's version copies the whole table twice per change, converting every
        # key to ``document_id_class`` and back to ``str``. Our keys are ``str`` both
        # ways, so the copies change nothing; at 100,000 projects they cost ~130 ms.
        tables = self._storage.read()
        if tables is None:
            tables = {}
        updater(tables.setdefault(self.name, {}))
        self._storage.write(tables)
        self.clear_cache()


class _Tables:
    """The three tables of one database state, backed by one :class:`_MemoryStorage`."""

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self.storage = _MemoryStorage(data)
        self.projects = _ProjectsTable(self.storage, "projects")
        self.journal = Table(self.storage, "journal")
        self.meta = Table(self.storage, "meta")

    def read_meta(self) -> dict[str, Any]:
        meta = self.meta.get(doc_id=_META_ID)
        return dict(meta) if isinstance(meta, dict) else {}

    def events(self) -> list[Event]:
        """The journaled events, oldest first."""
        return [cast(Event, dict(entry)) for entry in self.journal.all()]

    def project(self, project_id: str) -> Project:
        record = self.projects.find(project_id)
        if record is None:
            raise ProjectNotFoundError(project_id)
        return Project.from_dict(record)

    def append_event(
        self, event: Event, *, meta: dict[str, Any], journal_limit: int, **meta_changes: Any
    ) -> None:
        """Journal ``event``, drop what falls out of the retained window, advance ``meta``."""
        seq = event["seq"]
        self.journal.insert(Document(event, doc_id=seq))
        excess = len(self.journal) - journal_limit
        if excess > 0:
            oldest = sorted(document.doc_id for document in self.journal)[:excess]
            self.journal.remove(doc_ids=oldest)
        new_meta = {
            "format": _FORMAT,
            "schema": _SCHEMA,
            # Tells a database from a re-created one at the same path.
            "database_id": meta.get("database_id") or os.urandom(8).hex(),
            "last_issued": meta.get("last_issued"),
            **meta_changes,
            "last_seq": seq,
        }
        self.meta.upsert(Document(new_meta, doc_id=_META_ID))


class ProjectStore:
    """Projects and their event journal in one TinyDB JSON file.

    Every method that changes something commits the change and its event in
    one atomic write under the inter-process lock, and returns the event so the
    caller can forward it. Nothing is written when a method raises.

    Errors: :class:`InvalidInputError` for values that break the model's rules,
    :class:`ProjectNotFoundError` for unknown ids, :class:`StoreError` (or its
    subclasses) when the file cannot be read, parsed, locked or written.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        journal_limit: int = DEFAULT_JOURNAL_LIMIT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if journal_limit < 1:
            raise InvalidInputError(f"journal limit must be at least 1, got {journal_limit}")
        self.path = Path(path)
        self.journal_limit = journal_limit
        self.lock_timeout = lock_timeout
        #: The :data:`FileVersion` this store last wrote: a forwarded event carries it so the
        #: server can tell whether the file holds commits it has not been told about.
        self.last_written_version: FileVersion | None = None

    # -- changes ---------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        type: str = DEFAULT_TYPE,
        status: str = DEFAULT_STATUS,
        owner_id: str | None = None,
        description: str = "",
    ) -> tuple[Project, Event]:
        """Store a new project and journal its ``project_created`` event."""
        fields = validate_fields(
            {
                "name": name,
                "type": type,
                "status": status,
                "owner_id": default_owner() if owner_id is None else owner_id,
                "description": description,
            }
        )
        with self._transaction() as tables:
            meta = tables.read_meta()
            now = utc_now()
            timestamp = format_timestamp(now)
            project_id = next_project_id(
                now,
                is_taken=lambda candidate: tables.projects.find(candidate) is not None,
                last_issued=meta.get("last_issued"),
            )
            project = Project(
                project_id=project_id, created_at=timestamp, updated_at=timestamp, **fields
            )
            record = project.to_dict()
            tables.projects.add(record)
            event = events.project_created(
                record, seq=meta.get("last_seq", 0) + 1, timestamp=timestamp
            )
            tables.append_event(
                event, meta=meta, journal_limit=self.journal_limit, last_issued=project_id
            )
        return project, event

    def update(
        self, project_id: str, changes: Mapping[str, str]
    ) -> tuple[Project, list[str], Event | None]:
        """Apply ``changes`` (editable field -> new value) to one project.

        Returns the project after the change, the fields whose value really
        changed (in :data:`~projctl.model.EDITABLE_FIELDS` order) and the
        ``project_updated`` event. When no value changes, nothing is written
        and the event is ``None``.
        """
        if not changes:
            raise InvalidInputError("nothing to update: give at least one field to change")
        wanted = validate_fields(changes)
        with self._transaction() as tables:
            before = tables.project(project_id)
            current = before.to_dict()
            updated_fields = [field for field, value in wanted.items() if current[field] != value]
            if not updated_fields:
                return before, [], None
            meta = tables.read_meta()
            timestamp = format_timestamp(utc_now())
            record = {**current, **wanted, "updated_at": timestamp}
            tables.projects.replace(record)
            after = Project.from_dict(record)
            event = events.project_updated(
                record, updated_fields, seq=meta["last_seq"] + 1, timestamp=timestamp
            )
            tables.append_event(event, meta=meta, journal_limit=self.journal_limit)
        return after, updated_fields, event

    def delete(self, project_id: str) -> tuple[Project, Event]:
        """Remove one project and journal its ``project_deleted`` event; return what was removed."""
        with self._transaction() as tables:
            project = tables.project(project_id)
            meta = tables.read_meta()
            tables.projects.discard(project_id)
            event = events.project_deleted(
                project.to_dict(), seq=meta["last_seq"] + 1, timestamp=format_timestamp(utc_now())
            )
            tables.append_event(event, meta=meta, journal_limit=self.journal_limit)
        return project, event

    # -- reads (lock-free: the file is only ever replaced whole) -------------

    def get(self, project_id: str) -> Project:
        """The project with this id; :class:`ProjectNotFoundError` if there is none."""
        tables = self._snapshot()
        return self._checked(lambda: tables.project(project_id))

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        """All projects in creation order, keeping those that match every filter given."""
        tables = self._snapshot()
        conditions: list[QueryLike] = [
            where(field) == value
            for field, value in (("status", status), ("type", type), ("owner_id", owner_id))
            if value is not None
        ]
        records = (
            tables.projects.search(reduce(and_, conditions))
            if conditions
            else tables.projects.all()
        )
        return self._checked(lambda: [Project.from_dict(record) for record in records])

    def latest_seq(self) -> int:
        """The ``seq`` of the newest event, 0 for a database with none."""
        meta = self._snapshot().read_meta()
        return int(meta.get("last_seq", 0))

    def journal(self) -> list[Event]:
        """The retained events, oldest first."""
        return self._snapshot().events()

    def read_state(self) -> StoreState:
        """Everything a broadcast server needs from one read of the file, without locking."""
        data, version = self._read_file_with_version()
        tables = _Tables(data)
        meta = tables.read_meta()
        return StoreState(
            journal=tables.events(),
            latest_seq=int(meta.get("last_seq", 0)),
            database_id=str(meta.get("database_id", "")),
            version=version,
            # TinyDB's documents are already fresh dict copies: no second copy.
            project_records=list(tables.projects.all()),
        )

    def file_version(self) -> FileVersion | None:
        """The current :data:`FileVersion` of the database file, ``None`` when there is none."""
        try:
            return _version_of(self.path.stat())
        except OSError:
            return None

    # -- the file ----------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _checked(self, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except (KeyError, TypeError) as error:
            raise CorruptDatabaseError(
                f"database {self.path} holds a malformed project record ({error})"
            ) from None

    def _snapshot(self) -> _Tables:
        return _Tables(self._read_file_with_version()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tables]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create folder {self.path.parent}: {error.strerror or error}"
            ) from None
        with self._locked():
            tables = _Tables(self._read_file_with_version()[0])
            try:
                yield tables
            except (KeyError, TypeError) as error:
                raise CorruptDatabaseError(
                    f"database {self.path} holds a malformed record ({error}); "
                    "it was left untouched"
                ) from None
            if tables.storage.changed:
                self._write_file(tables.storage.data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the lock file, polling until ``lock_timeout``.

        ``flock`` rather than a lock library: it is all we need on POSIX, the
        kernel releases it when the holder dies, and it adds nothing to start-up.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise StoreError(
                f"cannot open lock file {self.lock_path}: {error.strerror or error}"
            ) from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeoutError(
                            f"database {self.path} is locked by another process "
                            f"(waited {self.lock_timeout:g}s)"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.025)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read_file_with_version(self) -> tuple[dict[str, dict[str, Any]], FileVersion | None]:
        try:
            with open(self.path, "rb") as file:
                raw = file.read()
                version = _version_of(os.fstat(file.fileno()))
        except FileNotFoundError:
            return {}, None
        except OSError as error:
            raise StoreError(
                f"cannot read database {self.path}: {error.strerror or error}"
            ) from None
        if not raw:
            return {}, version  # an empty file (from `touch` or mktemp) is a new database
        # Parsing builds one dict per project, none of which can be part of a cycle;
        # without this the cyclic GC walks the growing heap again and again.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CorruptDatabaseError(
                f"database {self.path} is not valid JSON; it was left untouched"
            ) from None
        finally:
            if gc_was_enabled:
                gc.enable()
        self._check_format(data)
        return data, version

    def _check_format(self, data: Any) -> None:
        not_ours = CorruptDatabaseError(
            f"{self.path} is not a projctl database; it was left untouched"
        )
        if not isinstance(data, dict):
            raise not_ours
        meta = (
            data.get("meta", {}).get(str(_META_ID)) if isinstance(data.get("meta"), dict) else None
        )
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise not_ours
        if not all(isinstance(data.get(name, {}), dict) for name in _TABLES):
            raise not_ours
        schema = meta.get("schema")
        if not isinstance(schema, int) or schema > _SCHEMA:
            raise StoreError(
                f"database {self.path} has schema {schema!r}, newer than this projctl "
                f"understands ({_SCHEMA}); upgrade projctl"
            )
        if not isinstance(meta.get("last_seq"), int):
            raise not_ours

    def _write_file(self, data: dict[str, dict[str, Any]]) -> None:
        """Replace the database atomically: temp file beside it, fsync, rename, fsync the folder."""
        payload = orjson.dumps(data)
        folder = self.path.parent
        temp_prefix = f".{self.path.name}.tmp-"
        self._remove_orphaned_temp_files(folder, temp_prefix)
        temp_path = folder / f"{temp_prefix}{os.getpid()}"
        try:
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
        try:
            fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            try:
                with os.fdopen(fd, "wb") as temp_file:
                    temp_file.write(payload)
                    temp_file.flush()
                    os.fsync(temp_file.fileno())
                    version = _version_of(os.fstat(temp_file.fileno()))
                os.replace(temp_path, self.path)
                self.last_written_version = version
            except BaseException:
                with contextlib.suppress(OSError):
                    temp_path.unlink()
                raise
            _fsync_folder(folder)
        except OSError as error:
            raise StoreError(
                f"cannot write database {self.path}: {error.strerror or error}"
            ) from None

    @staticmethod
    def _remove_orphaned_temp_files(folder: Path, prefix: str) -> None:
        # Temp files are only made while holding the lock, and we hold it now,
        # so any we find belong to a writer that died mid-write.
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable. Some file systems refuse fsync on folders: that is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)
