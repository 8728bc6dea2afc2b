"""The TinyDB side of the store: one database state as tables, held in memory for one
transaction (:class:`Tables`), with the rules that touch them all at once (the next seq,
the journal's window, the meta record, resolving a project reference).

Private to :mod:`projctl.store`, which reads and writes the file around them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping
from typing import Any, cast

from tinydb.storages import Storage
from tinydb.table import Document, Table

from projctl import events
from projctl._storefile import FORMAT, META_ID, SCHEMA, HighWater
from projctl.errors import AmbiguousReferenceError, CorruptDatabaseError, ProjectNotFoundError
from projctl.events import Event
from projctl.model import Project, parse_project_id

__all__ = ["KEYS_TABLE", "RESTORES_KEPT", "MemoryStorage", "Tables"]

#: How many restores of an older copy the database remembers (see ``Change.restore``).
RESTORES_KEPT = 32
#: The table of idempotency records: key -> the write's fingerprint and first result.
KEYS_TABLE = "idempotency"
#: Journal entries checked in one step of :meth:`Tables.events_in_steps`.
_ENTRIES_PER_STEP = 128


class MemoryStorage(Storage):
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
        # The one override of a private TinyDB method, kept on purpose: TinyDB's version
        # copies the whole table twice per change, converting every key to
        # ``document_id_class`` and back to ``str``. No public hook reaches that loop (a
        # Storage or middleware sees the tables only before and after it), and our keys
        # are ``str`` both ways, so the copies change nothing but cost O(projects) per
        # change (bench/write_scaling.py). tests/test_store.py pins the TinyDB behaviour
        # this relies on.
        tables = self._storage.read()
        if tables is None:
            tables = {}
        updater(tables.setdefault(self.name, {}))
        self._storage.write(tables)
        self.clear_cache()


class _KeysTable(Table):
    """Idempotency records keyed by the key itself (see :meth:`ProjectStore.commit`)."""

    document_id_class = cast(Any, str)

    def find(self, key: str) -> dict[str, Any] | None:
        return self.get(doc_id=cast(int, key))

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.upsert(Document(record, doc_id=cast(int, key)))

    def trim(self, *, after_seq: int, keep: int) -> None:
        """Forget records older than the journal's window (their seq at or below
        ``after_seq``), and beyond the newest ``keep``."""
        records = sorted(
            ((int(record.get("seq", 0)), str(key)) for key, record in self._read_table().items()),
        )
        old = [key for seq, key in records if seq <= after_seq]
        old += [key for _seq, key in records[: max(0, len(records) - keep)] if key not in old]
        if old:
            self.remove(doc_ids=[cast(int, key) for key in old])


class Tables:
    """The three tables of one database state, backed by one :class:`_MemoryStorage`.

    ``high_water`` is the lock file's record (see :class:`HighWater`), given to a
    transaction: seqs and ids it names are never issued again, even when the file holds
    an older copy of the database.
    """

    def __init__(
        self, data: dict[str, dict[str, Any]], high_water: HighWater | None = None
    ) -> None:
        self.storage = MemoryStorage(data)
        self.projects = _ProjectsTable(self.storage, "projects")
        self.journal = Table(self.storage, "journal")
        self.meta = Table(self.storage, "meta")
        self.keys = _KeysTable(self.storage, KEYS_TABLE)
        self.high_water = high_water
        #: Set by the first event appended after a restore: ``(kept, lost)``.
        self.restore: tuple[int, int] | None = None

    def read_meta(self) -> dict[str, Any]:
        meta = self.meta.get(doc_id=META_ID)
        return dict(meta) if isinstance(meta, dict) else {}

    def _remembered(self, meta: dict[str, Any]) -> HighWater | None:
        """The lock file's record when it speaks of this very database."""
        high_water = self.high_water
        if high_water is None or high_water.database_id != meta.get("database_id"):
            return None
        return high_water

    def next_seq(self, meta: dict[str, Any]) -> int:
        """The ``seq`` the next event gets: after every one ever issued in this database."""
        last_seq = int(meta.get("last_seq", 0))
        remembered = self._remembered(meta)
        if remembered is not None:
            last_seq = max(last_seq, remembered.last_seq)
        return last_seq + 1

    def last_issued(self, meta: dict[str, Any]) -> str | None:
        """The newest project id ever issued in this database."""
        candidates = [meta.get("last_issued")]
        remembered = self._remembered(meta)
        if remembered is not None:
            candidates.append(remembered.last_issued)
        parsed = [
            (key, candidate)
            for candidate in candidates
            if isinstance(candidate, str) and (key := parse_project_id(candidate)) is not None
        ]
        return max(parsed)[1] if parsed else None

    def resolve(self, reference: str) -> str:
        """See :meth:`ProjectStore.resolve`."""
        if self.projects.find(reference) is not None:
            return reference
        named = [
            str(record["project_id"])
            for record in self.projects.all()
            if record["name"] == reference
        ]
        if not named:
            raise ProjectNotFoundError(reference, looked_up_by="id or name")
        if len(named) > 1:
            raise AmbiguousReferenceError(
                f"{len(named)} projects are named {reference!r}: {', '.join(named)}; "
                "give one of these ids"
            )
        return named[0]

    def names(self) -> list[tuple[str, str]]:
        """Every project's ``(project_id, name)``, from the decoded tables as they are (no
        TinyDB document is built: this runs on every create)."""
        records = self.storage.read().get(self.projects.name, {})
        return [(str(project_id), record["name"]) for project_id, record in records.items()]

    def events(self) -> list[Event]:
        """The journaled events, oldest first; ``EventDecodeError`` for an entry that is not one."""
        journal = [events.check_event(dict(entry)) for entry in self.journal.all()]
        journal.sort(key=lambda event: event["seq"])
        return journal

    def events_in_steps(self) -> Generator[None, None, list[Event]]:
        """:meth:`events`, a few entries checked a step (for a read done in steps)."""
        entries = list(self.journal.all())
        journal: list[Event] = []
        for start in range(0, len(entries), _ENTRIES_PER_STEP):
            journal += [
                events.check_event(dict(entry))
                for entry in entries[start : start + _ENTRIES_PER_STEP]
            ]
            yield
        journal.sort(key=lambda event: event["seq"])
        return journal

    def project(self, project_id: str) -> Project:
        record = self.projects.find(project_id)
        if record is None:
            raise ProjectNotFoundError(project_id)
        try:
            return Project.from_dict(record)
        except (KeyError, TypeError) as error:
            raise CorruptDatabaseError(
                f"project {project_id!r} is a malformed record ({error}); "
                "the database was left untouched"
            ) from None

    def append_event(
        self, event: Event, *, meta: dict[str, Any], journal_limit: int, **meta_changes: Any
    ) -> None:
        """Journal ``event``, drop what falls out of the retained window, advance ``meta``.

        The window is the database's own limit or ``journal_limit``, whichever is larger:
        a writer configured for fewer events never trims what the database keeps.
        """
        seq = event["seq"]
        previous = int(meta.get("last_seq", 0))
        restores = [list(pair) for pair in meta.get("restores", [])]
        if seq != previous + 1:
            # The file is an older copy: the seqs in between were issued and are lost.
            self.restore = (previous, seq - 1)
            restores = [*restores, [previous, seq - 1]][-RESTORES_KEPT:]
        limit = max(journal_limit, int(meta.get("journal_limit", 0)))
        self.journal.insert(Document(event, doc_id=seq))
        excess = len(self.journal) - limit
        if excess > 0:
            oldest = sorted(document.doc_id for document in self.journal)[:excess]
            self.journal.remove(doc_ids=oldest)
        new_meta = {
            "format": FORMAT,
            "schema": SCHEMA,
            # Tells a database from a re-created one at the same path.
            "database_id": meta.get("database_id") or os.urandom(8).hex(),
            "last_issued": self.last_issued(meta),
            "journal_limit": limit,
            **({"restores": restores} if restores else {}),
            **meta_changes,
            "last_seq": seq,
        }
        self.meta.upsert(Document(new_meta, doc_id=META_ID))
        meta.clear()
        meta.update(new_meta)
