"""The TinyDB file: projects and the event journal, one locked transaction per change.

The file is an ordinary TinyDB JSON database with three tables:

``projects``
    one document per project, keyed by ``project_id``;
``journal``
    the last ``journal_limit`` events, keyed by ``seq``;
``meta``
    one document: the format marker, the last ``seq`` and the last issued id.

TinyDB alone is not safe across processes, so every change runs as one
transaction: take an exclusive ``flock`` on ``<db>.lock`` (``_files.locked``),
read the file, apply every table operation in memory, then replace the whole
file once (``_files.atomic_write``). Readers never lock: a rename is atomic, so
they see the old or the new file, never half of one. A change and its journal
entry land in the same write, and every change returns one :class:`Change`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from functools import reduce
from operator import and_
from pathlib import Path
from typing import Any, TypeVar

from tinydb import where
from tinydb.queries import QueryLike

from projctl import _storefile, events
from projctl._storefile import DatabaseFile, HighWater
from projctl._storetables import Tables
from projctl.backend import (
    Change,
    Create,
    Delete,
    Emit,
    FileVersion,
    StateRead,
    Update,
    Write,
    check_write,
    same_name,
    write_fingerprint,
)
from projctl.config import DEFAULT_JOURNAL_LIMIT, DEFAULT_LOCK_TIMEOUT
from projctl.errors import (
    CorruptDatabaseError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    PreconditionFailedError,
    ProjectNotFoundError,
)
from projctl.events import Event, format_timestamp, utc_now
from projctl.model import (
    DEFAULT_STATUS,
    DEFAULT_TYPE,
    Project,
    next_project_id,
    validate_fields,
    validate_name,
)

__all__ = [
    "DEFAULT_JOURNAL_LIMIT",
    "DEFAULT_LOCK_TIMEOUT",
    "Change",
    "FileVersion",
    "ProjectStore",
    "StoreState",
]

_T = TypeVar("_T")


#: One consistent read of the database (the type lives with the seam: a server reads it).
StoreState = StateRead


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
        on_lock_wait: Callable[[Path], None] | None = None,
    ) -> None:
        if journal_limit < 1:
            raise InvalidInputError(f"journal limit must be at least 1, got {journal_limit}")
        self.path = Path(path)
        self.journal_limit = journal_limit
        #: The file itself; ``on_lock_wait`` is called once when a change has waited about
        #: a second for its lock.
        self.database_file = DatabaseFile(
            self.path, lock_timeout=lock_timeout, on_lock_wait=on_lock_wait
        )
        #: The transaction this thread holds, which a nested one joins (see commit()).
        self._held = threading.local()

    # -- changes ---------------------------------------------------------------

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        """Commit one :data:`~projctl.backend.Write` in one locked transaction.

        With ``idempotency_key`` the key is recorded in the same transaction, with the
        write's fingerprint and its result, for as long as the journal keeps the events
        (at least): the same write under the same key again commits nothing and returns
        the first result (each :class:`Change` with ``replayed`` set); another write under
        it raises :class:`IdempotencyKeyReusedError`.
        """
        check_write(write)  # bad values are refused before anything is looked up or locked
        with self._transaction() as (tables, written):
            if idempotency_key is None:
                changes = self._checked(lambda: self._commit(tables, write))
            else:
                # The request as it was made (names not yet resolved) is what a retry repeats.
                fingerprint = write_fingerprint(write)
                record = tables.keys.find(idempotency_key)
                if record is not None:
                    if record.get("fingerprint") != fingerprint:
                        raise IdempotencyKeyReusedError(idempotency_key)
                    return self._replayed(record, tables.read_meta())
                changes = self._checked(lambda: self._commit(tables, write))
                self._remember(tables, idempotency_key, fingerprint, changes)
        # The changes were made inside this transaction: only now is their write known.
        return [
            change._replace(
                version=written.version,
                database_id=written.database_id,
                restore=written.restore,
            )
            for change in changes
        ]

    def _remember(self, tables: Tables, key: str, fingerprint: str, changes: list[Change]) -> None:
        """Record a write's key with its result, and forget keys past the journal's window."""
        meta = tables.read_meta()
        last_seq = int(meta.get("last_seq", 0))
        tables.keys.put(
            key,
            {
                "fingerprint": fingerprint,
                "seq": last_seq,
                "changes": [
                    {
                        "project": change.project.to_dict(),
                        "event": change.event,
                        "updated_fields": list(change.updated_fields),
                        **({"same_name": list(change.same_name)} if change.same_name else {}),
                    }
                    for change in changes
                ],
            },
        )
        limit = max(self.journal_limit, int(meta.get("journal_limit", 0)))
        tables.keys.trim(after_seq=last_seq - limit, keep=limit)

    def _replayed(self, record: dict[str, Any], meta: dict[str, Any]) -> list[Change]:
        """The first result recorded under an idempotency key, as :class:`Change` objects."""
        try:
            return [
                Change(
                    Project.from_dict(item["project"]),
                    None if item["event"] is None else events.check_event(dict(item["event"])),
                    tuple(item["updated_fields"]),
                    database_id=str(meta.get("database_id", "")),
                    replayed=True,
                    same_name=tuple(map(str, item.get("same_name", ()))),
                )
                for item in record["changes"]
            ]
        except (KeyError, TypeError, events.EventDecodeError) as error:
            raise CorruptDatabaseError(
                f"database {self.path} holds a malformed idempotency record ({error}); "
                "it was left untouched"
            ) from None

    def _commit(self, tables: Tables, write: Write) -> list[Change]:
        """Carry out ``write`` in the transaction of ``tables``: its project references
        (an id, or an exact unique name) are resolved there, with the change."""
        if isinstance(write, Create):
            others = same_name(validate_name(write.name), tables.names(), unique=write.unique)
            created = self.create(
                write.name,
                type=write.type,
                status=write.status,
                owner_id=write.owner_id,
                description=write.description,
            )
            return [created._replace(same_name=others)]
        if isinstance(write, Update):
            project_id = tables.resolve(write.project_id)
            others = self._renamed_among(tables, project_id, write)
            updated = self.update(project_id, write.changes, if_match=write.if_match)
            if "name" not in updated.updated_fields:
                return [updated]
            return [updated._replace(same_name=others)]
        if isinstance(write, Delete):
            ids = []
            for reference in write.project_ids:
                try:
                    ids.append(tables.resolve(reference))
                except ProjectNotFoundError:
                    if not write.missing_ok:
                        raise
            if not ids:
                return []
            return self.delete_many(ids, missing_ok=write.missing_ok, if_match=write.if_match)
        assert isinstance(write, Emit)  # check_write refused any other kind
        return [self.emit(tables.resolve(write.project_id), write.event_type, write.data)]

    @staticmethod
    def _renamed_among(tables: Tables, project_id: str, write: Update) -> tuple[str, ...]:
        """The other projects named as ``write`` renames ``project_id`` (none when it keeps
        its name); its ``if_match`` is checked first, as the update will."""
        if "name" not in write.changes:
            return ()
        before = tables.project(project_id)
        _check_version(before, write.if_match)
        name = validate_name(write.changes["name"])
        if name == before.name:
            return ()
        return same_name(name, tables.names(), unique=write.unique, besides=project_id)

    def create(
        self,
        name: str,
        *,
        type: str = DEFAULT_TYPE,
        status: str = DEFAULT_STATUS,
        owner_id: str,
        description: str = "",
    ) -> Change:
        """Store a new project and journal its ``project_created`` event.

        ``owner_id`` is always given: the default owner is the caller's rule.
        """
        owner = owner_id
        fields = validate_fields(
            {
                "name": name,
                "type": type,
                "status": status,
                "owner_id": owner,
                "description": description,
            }
        )
        with self._transaction() as (tables, written):
            meta = tables.read_meta()
            now = utc_now()
            timestamp = format_timestamp(now)
            project_id = next_project_id(
                now,
                is_taken=lambda candidate: tables.projects.find(candidate) is not None,
                last_issued=tables.last_issued(meta),
            )
            project = Project(
                project_id=project_id, created_at=timestamp, updated_at=timestamp, **fields
            )
            record = project.to_dict()
            tables.projects.add(record)
            event = events.project_created(record, seq=tables.next_seq(meta), timestamp=timestamp)
            tables.append_event(
                event, meta=meta, journal_limit=self.journal_limit, last_issued=project_id
            )
        return written.change(project, event)

    def update(
        self, project_id: str, changes: Mapping[str, str], *, if_match: str | None = None
    ) -> Change:
        """Apply ``changes`` (editable field -> new value) to one project.

        The :class:`Change` holds the project after the change, the fields whose
        value really changed and the ``project_updated`` event. When no value
        changes, nothing is written and its ``event`` is ``None``. With ``if_match``,
        only when the project is still that version (:class:`PreconditionFailedError`).
        """
        if not changes:
            raise InvalidInputError("nothing to update: give at least one field to change")
        wanted = validate_fields(changes)
        with self._transaction() as (tables, written):
            before = tables.project(project_id)
            _check_version(before, if_match)
            current = before.to_dict()
            updated_fields = [field for field, value in wanted.items() if current[field] != value]
            if not updated_fields:
                return Change(before, None)
            meta = tables.read_meta()
            timestamp = format_timestamp(utc_now())
            record = {**current, **wanted, "updated_at": timestamp}
            tables.projects.replace(record)
            after = Project.from_dict(record)
            event = events.project_updated(
                record, updated_fields, seq=tables.next_seq(meta), timestamp=timestamp
            )
            tables.append_event(event, meta=meta, journal_limit=self.journal_limit)
        return written.change(after, event, tuple(updated_fields))

    def delete(self, project_id: str) -> Change:
        """Remove one project and journal its ``project_deleted`` event.

        The :class:`Change`'s ``project`` is the project as it was when deleted.
        """
        (change,) = self.delete_many([project_id])
        return change

    def delete_many(
        self,
        project_ids: Sequence[str],
        *,
        missing_ok: bool = False,
        if_match: str | None = None,
    ) -> list[Change]:
        """Remove several projects in one transaction: all of them, or none.

        One ``project_deleted`` event per project, in the order given; an id given twice
        counts once. An unknown id raises :class:`ProjectNotFoundError` and deletes
        nothing, unless ``missing_ok`` (then it is skipped). ``if_match``: as for
        :meth:`update`, for every project.
        """
        wanted = list(dict.fromkeys(project_ids))
        with self._transaction() as (tables, written):
            found = []
            for project_id in wanted:
                try:
                    found.append(tables.project(project_id))
                except ProjectNotFoundError:
                    if not missing_ok:
                        raise
                else:
                    _check_version(found[-1], if_match)
            if not found:
                return []
            meta = tables.read_meta()
            timestamp = format_timestamp(utc_now())
            deletions = []
            for project in found:
                tables.projects.discard(project.project_id)
                event = events.project_deleted(
                    project.to_dict(), seq=tables.next_seq(meta), timestamp=timestamp
                )
                tables.append_event(event, meta=meta, journal_limit=self.journal_limit)
                deletions.append((project, event))
        return [written.change(project, event) for project, event in deletions]

    def emit(
        self, project_id: str, event_type: str, data: Mapping[str, Any] | None = None
    ) -> Change:
        """Journal an emitted ``event_type`` event about one project, with ``data``.

        The :class:`Change` holds the project, unchanged, and the event. The rules are
        :func:`events.validate_event_type` and :func:`events.validate_emit_data`
        (:class:`InvalidInputError`), checked before the lock is taken.
        """
        kind = events.validate_event_type(event_type)
        extra = events.validate_emit_data({} if data is None else data)
        with self._transaction() as (tables, written):
            project = tables.project(project_id)
            meta = tables.read_meta()
            event = events.emitted(
                project.to_dict(),
                kind,
                extra,
                seq=tables.next_seq(meta),
                timestamp=format_timestamp(utc_now()),
            )
            tables.append_event(event, meta=meta, journal_limit=self.journal_limit)
        return written.change(project, event)

    def resolve(self, reference: str) -> str:
        """The id of the project ``reference`` names: an exact id, else an exact unique name.

        An id always wins over a name. Raises :class:`ProjectNotFoundError` when nothing
        matches, and :class:`AmbiguousReferenceError` listing the candidates' ids when
        several projects have that name.
        """
        tables = self._snapshot()
        return self._checked(lambda: tables.resolve(reference))

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

    def database_id(self) -> str:
        """The id that tells this database from any other, ``""`` before its first change."""
        return str(self._snapshot().read_meta().get("database_id", ""))

    identity = database_id

    def latest_seq(self) -> int:
        """The ``seq`` of the newest event, 0 for a database with none."""
        meta = self._snapshot().read_meta()
        return int(meta.get("last_seq", 0))

    def journal(self, after: int = 0) -> list[Event]:
        """The retained events with a ``seq`` above ``after``, oldest first."""
        events = self._checked(self._snapshot().events)
        return [event for event in events if event["seq"] > after] if after else events

    def read_state(self) -> StoreState:
        """Everything a broadcast server needs from one read of the file, without locking.

        Every journal entry and project record is checked: another program may have
        written the file. Raises :class:`CorruptDatabaseError` naming the first bad one.
        """
        data, version = self.database_file.read()
        return _storefile.finish(self._state_of(data, version))

    def read_state_in_steps(self) -> Generator[None, None, StoreState]:
        """:meth:`read_state`, a bounded piece of work per step (the
        :class:`~projctl.backend.SteppedRead` a server drives between its other work).

        The first step reads the file (blocking I/O); each later one parses a few records
        or checks a few (:func:`~projctl._storefile.parse_in_steps`).
        """
        raw, version = self.database_file.read_raw()
        yield
        data = (yield from _storefile.parse_in_steps(raw, self.path)) if raw else {}
        return (yield from self._state_of(data, version))

    def _state_of(
        self, data: dict[str, dict[str, Any]], version: FileVersion | None
    ) -> Generator[None, None, StoreState]:
        """The read of parsed ``data``, its records checked a few a step."""
        tables = Tables(data)
        meta = tables.read_meta()
        # The parsed records themselves, not TinyDB's documents (a dict subclass, so each
        # one an object the cyclic GC walks while a server holds them): nobody else holds
        # this parse.
        records: list[dict[str, Any]] = list(data.get("projects", {}).values())
        yield from self._checked_steps(_check_records(records))
        journal = yield from self._checked_steps(tables.events_in_steps())
        return StoreState(
            journal=journal,
            latest_seq=int(meta.get("last_seq", 0)),
            database_id=str(meta.get("database_id", "")),
            version=version,
            project_records=records,
            restores=[(kept, lost) for kept, lost in meta.get("restores", [])],
            journal_limit=max(self.journal_limit, int(meta.get("journal_limit", 0))),
        )

    def file_version(self) -> FileVersion | None:
        """The current :data:`FileVersion` of the database file, ``None`` when there is none."""
        return self.database_file.version()

    # -- the file ----------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """``<db>.lock`` beside the database file itself (a symlink's target)."""
        return self.database_file.lock_path

    @property
    def file(self) -> Path:
        """The database file with symlinks resolved (see :attr:`DatabaseFile.file`)."""
        return self.database_file.file

    def _checked(self, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except (KeyError, TypeError, events.EventDecodeError) as error:
            raise self._malformed(error) from None

    def _checked_steps(self, steps: Generator[None, None, _T]) -> Generator[None, None, _T]:
        """``steps``, as :meth:`_checked` runs one read."""
        try:
            return (yield from steps)
        except (KeyError, TypeError, events.EventDecodeError) as error:
            raise self._malformed(error) from None

    def _malformed(self, error: Exception) -> CorruptDatabaseError:
        if isinstance(error, events.EventDecodeError):
            return CorruptDatabaseError(
                f"database {self.path} holds a malformed journal entry ({error})"
            )
        return CorruptDatabaseError(
            f"database {self.path} holds a malformed project record ({error})"
        )

    def _snapshot(self) -> Tables:
        return Tables(self.database_file.read()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[Tables, _Written]]:
        """Lock, read, let the caller change the tables, write once if anything changed.

        The caller's :class:`_Written` holds the new file's version once the block
        has ended without an exception. Only a missing file is a new database; the
        write is refused (:class:`DatabaseChangedError`, nothing written) when another
        program changed the file since it was read, so its bytes are never lost to the
        rename. A transaction begun inside another on the same thread joins it: its
        changes are written with the outer one's, all or nothing.
        """
        held: tuple[Tables, _Written] | None = getattr(self._held, "transaction", None)
        if held is not None:
            yield held
            return
        database_file = self.database_file
        database_file.prepare_to_write()
        lock_existed = os.path.lexists(database_file.lock_path)
        with database_file.locked() as lock_fd:
            high_water = HighWater.read(lock_fd)
            data, read_version = database_file.read(
                database_was_here=lock_existed or high_water is not None
            )
            tables = Tables(data, high_water)
            written = _Written()
            self._held.transaction = (tables, written)
            try:
                yield tables, written
            finally:
                self._held.transaction = None
            if tables.storage.changed:
                written.version = database_file.write(tables.storage.data, read_version)
                meta = tables.read_meta()
                written.database_id = str(meta.get("database_id", ""))
                written.restore = tables.restore
                HighWater(written.database_id, meta["last_seq"], meta.get("last_issued")).write(
                    lock_fd
                )


#: Project records checked in one step of :meth:`ProjectStore.read_state_in_steps`.
_RECORDS_PER_STEP = 64


def _check_records(records: list[dict[str, Any]]) -> Generator[None, None, None]:
    """Every record a :class:`Project` (``KeyError`` or ``TypeError`` if not), a few a step."""
    for start in range(0, len(records), _RECORDS_PER_STEP):
        for record in records[start : start + _RECORDS_PER_STEP]:
            Project.from_dict(record)
        yield


class _Written:
    """Filled in by :meth:`ProjectStore._transaction` once its write has landed.

    A plain class: a dataclass would cost every command that imports the store its code
    generation, for three attributes."""

    __slots__ = ("database_id", "restore", "version")

    def __init__(self) -> None:
        self.version: FileVersion | None = None
        self.database_id = ""
        self.restore: tuple[int, int] | None = None

    def change(
        self, project: Project, event: Event, updated_fields: tuple[str, ...] = ()
    ) -> Change:
        return Change(project, event, updated_fields, self.version, self.database_id, self.restore)


def _check_version(project: Project, if_match: str | None) -> None:
    """Refuse a change made on condition the project is a version it no longer is."""
    if if_match is not None and if_match != "*" and if_match != project.version_tag:
        raise PreconditionFailedError(
            f"project {project.project_id} changed since version {if_match}; "
            f"it is now {project.version_tag}: nothing was written"
        )
