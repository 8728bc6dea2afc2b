"""The database file's on-disk format, and the lock file's high-water record.

Private to :mod:`projctl.store`: what a projctl database file must look like before the store
reads it without checking again (:func:`check_format`), and what the lock file remembers of the
last commit (:class:`HighWater`). Neither touches TinyDB: both work on decoded JSON and bytes.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import orjson

from projctl.errors import CorruptDatabaseError, StoreError

__all__ = [
    "FORMAT",
    "META_ID",
    "SCHEMA",
    "TABLES",
    "HighWater",
    "check_format",
    "is_count",
    "parse",
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
