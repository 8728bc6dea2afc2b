"""The storage seam: what every storage of projects and events offers the code above it.

:class:`Backend` is the one interface :class:`projctl.Database`, the CLI and the remote
path use; they never learn which storage they have. Today there are two: the TinyDB file
on this machine with its background server (``projctl.local``), and a team server reached
over the team protocol (``projctl.remote``). A change goes in as one :data:`Write` and
comes back as :class:`Change` results, one per event committed; an emitted event
(:class:`Emit`) is one more member of :data:`Write`, not one more method.

This module holds types only: it reads nothing and starts nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from projctl.events import Event
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, Project

if TYPE_CHECKING:
    from pathlib import Path

    from projctl.runtime import Endpoint

__all__ = [
    "Backend",
    "Change",
    "Create",
    "Delete",
    "Emit",
    "FileVersion",
    "Follower",
    "ServedStorage",
    "StateRead",
    "SteppedRead",
    "Update",
    "Write",
    "check_idempotency_key",
    "write_fingerprint",
]

#: ``(st_dev, st_ino, st_mtime_ns)`` of a database file after a commit (TinyDB only).
FileVersion = tuple[int, int, int]


@dataclass(frozen=True)
class StateRead:
    """One consistent read of a database: its journal, latest ``seq`` and projects.

    ``restores`` lists the ``(kept, lost)`` seq ranges that restores of older copies
    skipped (see :attr:`Change.restore`), oldest first; ``journal_limit`` is how many
    events the database keeps; ``version`` tells this read from a later one (``None``:
    the storage has no such token).
    """

    journal: list[Event]
    latest_seq: int
    database_id: str
    version: FileVersion | None
    project_records: list[dict[str, Any]]
    journal_limit: int
    restores: list[tuple[int, int]] = field(default_factory=list)


class Change(NamedTuple):
    """What one change did: the result of a :data:`Write` committed to a :class:`Backend`.

    ``project`` is the project after the change (for a deletion: as it was when
    deleted; for an :class:`Emit`: as it is, unchanged). ``event`` is the journaled
    event, ``None`` when an update changed no value (then nothing was written).
    ``updated_fields`` lists the fields whose value changed, in
    :data:`~projctl.model.EDITABLE_FIELDS` order (empty for the other writes).
    ``version`` is the :data:`FileVersion` the commit wrote, which a forward carries so
    the server can tell whether the file holds commits it was not told about;
    ``database_id`` identifies the database it went into, so a forward can never be
    taken by a server of another database. ``restore`` is set when this commit found an
    older copy of the database put in place by another program: ``(kept, lost)``, the
    copy ended at seq ``kept`` while seqs up to ``lost`` had been issued; this commit's
    events follow ``lost`` (seqs are never reused), and whoever saw events after ``kept``
    must start over (a ``resync``). The last three are the TinyDB file's; a team server's
    results leave them empty. A named tuple, like the writes: every change returns one.
    """

    project: Project
    event: Event | None
    updated_fields: tuple[str, ...] = ()
    version: FileVersion | None = None
    database_id: str = ""
    restore: tuple[int, int] | None = None
    #: The first result of an idempotency key used again: nothing was written now, and
    #: its event was broadcast the first time.
    replayed: bool = False
    #: The ids of the other projects that had this project's new name when a create or a
    #: rename was committed (found in its own transaction), for a warning; else empty (and
    #: always empty from a JetStream database, which looks names up only to refuse one).
    same_name: tuple[str, ...] = ()


#: The empty mapping a write's optional mapping defaults to (read-only: it is shared).
_NOTHING: Mapping[str, Any] = MappingProxyType({})


class Create(NamedTuple):
    """A new project; its id is assigned by the backend. ``owner_id`` is always given: the
    default owner is the caller's rule (``projctl.config``), never the storage's. With
    ``unique``, a name another project has is refused (:class:`~projctl.errors.NameTakenError`);
    without it, the :class:`Change` names them (``same_name``)."""

    name: str
    owner_id: str
    type: str = DEFAULT_TYPE
    status: str = DEFAULT_STATUS
    description: str = ""
    unique: bool = False


class Update(NamedTuple):
    """New values for some editable fields of one project (by id, or exact unique name:
    resolved in the commit's own transaction). With ``if_match`` (a
    :attr:`~projctl.model.Project.version_tag`), only if the project is still that version:
    else :class:`~projctl.errors.PreconditionFailedError` and nothing is written. A new
    ``name`` and ``unique``: as for :class:`Create` (keeping its own name is no rename)."""

    project_id: str
    changes: Mapping[str, str] = _NOTHING
    if_match: str | None = None
    unique: bool = False


class Delete(NamedTuple):
    """Several projects (by id or exact name) deleted at once: all of them or, when one is
    missing, none
    (with ``missing_ok`` the missing ones are skipped). ``if_match``: as for
    :class:`Update`, checked against every project deleted."""

    project_ids: tuple[str, ...]
    missing_ok: bool = False
    if_match: str | None = None


class Emit(NamedTuple):
    """An emitted event about one project (by id): ``event_type`` and the caller's ``data``
    (the rules: :func:`projctl.events.validate_event_type` and
    :func:`~projctl.events.validate_emit_data`). Journaled with the next ``seq`` and
    broadcast like a lifecycle event; it changes no project."""

    project_id: str
    event_type: str
    data: Mapping[str, Any] = _NOTHING


#: One change, committed all-or-nothing. The writes are named tuples, not dataclasses: every
#: command imports them, and a dataclass costs each command its code generation.
Write = Create | Update | Delete | Emit


#: An idempotency key: 1 to this many printable ASCII characters (what a header carries).
IDEMPOTENCY_KEY_MAX = 255


def check_idempotency_key(key: str) -> str:
    """``key`` if it may be an idempotency key; else :class:`InvalidInputError`."""
    from projctl.errors import InvalidInputError

    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not all(" " <= c <= "~" for c in key):
        raise InvalidInputError(
            f"an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        )
    return key


def check_write(write: Write) -> None:
    """Refuse (:class:`~projctl.errors.InvalidInputError`) a write whose values break a rule,
    or a kind of write no backend knows. Every backend calls it first, before it looks
    anything up, locks or connects."""
    from projctl import events
    from projctl.errors import InvalidInputError
    from projctl.model import validate_fields

    if isinstance(write, Create):
        create_fields(write)
    elif isinstance(write, Update):
        if not write.changes:
            raise InvalidInputError("nothing to update: give at least one field to change")
        validate_fields(write.changes)
    elif isinstance(write, Emit):
        events.validate_event_type(write.event_type)
        events.validate_emit_data(write.data)
    elif not isinstance(write, Delete):
        raise InvalidInputError(f"this database cannot commit {type(write).__name__}")


def create_fields(write: Create) -> dict[str, str]:
    """The fields of the project ``write`` creates, validated (the name trimmed)."""
    from projctl.model import validate_fields

    return validate_fields(
        {
            "name": write.name,
            "type": write.type,
            "status": write.status,
            "owner_id": write.owner_id,
            "description": write.description,
        }
    )


def same_name(
    name: str,
    projects: Iterable[tuple[str, str]],
    *,
    unique: bool,
    besides: str | None = None,
) -> tuple[str, ...]:
    """The ids of the ``(project_id, name)`` pairs named ``name`` (as stored: validated),
    other than ``besides``: a commit's :attr:`Change.same_name`. With ``unique`` there must
    be none: :class:`~projctl.errors.NameTakenError` naming them. Every backend calls it in
    its commit, on the projects its write is planned on."""
    others = tuple(pid for pid, other in projects if other == name and pid != besides)
    if others and unique:
        from projctl.errors import NameTakenError

        raise NameTakenError(f"another project is named {name!r} ({', '.join(others)})")
    return others


#: Fields added to a write after keys were first recorded: in a fingerprint only when set.
_FINGERPRINTED_WHEN_SET = frozenset({"unique"})


def write_fingerprint(write: Write) -> str:
    """What tells one request from another under the same idempotency key: the write's
    kind and every value it carries (not how its JSON was spelled)."""
    import hashlib
    import json

    described: dict[str, Any] = {"kind": type(write).__name__}
    for name, value in write._asdict().items():
        if name in _FINGERPRINTED_WHEN_SET and not value:
            continue  # as a key recorded before the field existed was fingerprinted
        described[name] = dict(value) if isinstance(value, Mapping) else value
    encoded = json.dumps(described, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


class ServedStorage(Protocol):
    """What a server needs of the database it serves (the TinyDB store is one): where it is,
    its writes, one consistent read of everything, and a cheap token that changes with
    every commit (to notice commits nobody forwarded)."""

    @property
    def path(self) -> Path: ...

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]: ...
    def read_state(self) -> StateRead: ...
    def file_version(self) -> FileVersion | None: ...


@runtime_checkable
class SteppedRead(Protocol):
    """A :class:`ServedStorage` whose read can also be done a bounded piece at a time (the
    TinyDB file): a server drives it between its other work. Read in a thread instead, a
    large file's parse would hold the GIL that the server's event loop needs."""

    def read_state_in_steps(self) -> Generator[None, None, StateRead]:
        """:meth:`ServedStorage.read_state` as a generator whose return value is the read:
        its first step is blocking I/O (for a thread), each later one a short piece of work."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A storage of projects and their event journal.

    Errors are the domain's: :class:`~projctl.errors.InvalidInputError`,
    :class:`~projctl.errors.ProjectNotFoundError`, :class:`~projctl.errors.StoreError`,
    and :class:`~projctl.errors.ServerError` when a backend behind a network cannot be
    reached. A failed :meth:`commit` has written nothing.
    """

    @property
    def location(self) -> str:
        """Where the storage is, for messages: a file's path, a server's URL."""
        ...

    def identity(self) -> str:
        """The id that tells this database from any other (``""`` before its first change)."""
        ...

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        """Commit one change and its events all-or-nothing: one :class:`Change` per project
        it touched (an :class:`Update` that changes nothing: one with ``event=None``).

        With ``idempotency_key``, a write committed before under that key is not applied
        again: its first result comes back (for at least the journal's window). The key
        with a different write raises
        :class:`~projctl.errors.IdempotencyKeyReusedError`."""
        ...

    def get(self, project_id: str) -> Project:
        """The project with this id."""
        ...

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        """Every project in creation order, keeping those that match every filter given."""
        ...

    def resolve(self, reference: str) -> str:
        """The id of the project ``reference`` names: an exact id, else an exact unique name."""
        ...

    def journal(self, after: int = 0) -> list[Event]:
        """The retained events with a ``seq`` above ``after``, oldest first."""
        ...

    def latest_seq(self) -> int:
        """The ``seq`` of the newest event, 0 when there is none."""
        ...

    def info(self) -> dict[str, Any]:
        """What ``projctl info`` reports: the database, its projects, latest seq, journal
        and server."""
        ...

    def feed(self, *, start: bool = True, deadline: float | None = None) -> Endpoint:
        """Where to follow new events (the ``/ws`` URL, its token and CA): ``start`` may start
        a server when none runs; nothing waits past ``deadline`` (``time.monotonic()``)."""
        ...


@runtime_checkable
class Follower(Protocol):
    """A :class:`Backend` that is its own feed (the JetStream stream): subscribers follow
    it directly instead of a broadcast server's ``/ws`` (:meth:`Backend.feed`)."""

    def follow(
        self, *, since: int | None = None, snapshot: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every message the feed would send, in ``seq`` order, forever: the events after
        ``since`` (a ``resync`` with every project when they have left the journal), a
        ``snapshot`` first when asked, else only what happens from now on."""
        ...
