"""The server's decisions, without I/O: event order, gaps, the replay window, snapshots.

A :class:`Sequencer` takes inputs (a forwarded event, a read of the journal, a
new subscriber's ``since``) and returns the encoded messages to send; it never
touches a socket, a file or the event loop, so every decision is unit-tested
with plain calls (the way websockets' ``ServerProtocol`` keeps the protocol
apart from the connection).

**The journal is the truth.** A forward is a fast hint: the next ``seq`` goes
out at once, an early one waits for those before it (:attr:`Sequencer.waiting`),
and a commit whose forward never came is noticed because the database file
changed with no forward explaining it (:meth:`Sequencer.is_explained`); either
way the caller reads the journal and hands it to :meth:`Sequencer.catch_up`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from projctl import events
from projctl.events import Event

__all__ = [
    "JournalRead",
    "ProjectsMessage",
    "Sequencer",
    "SequencerStats",
]

#: The database file's version (``store.FileVersion``), compared for equality only: it
#: changes with every commit, so a version no forward explains means a commit went unsent.
Version = object


class JournalRead(Protocol):
    """One consistent read of the database (``store.StoreState`` is one)."""

    @property
    def journal(self) -> Sequence[Event]: ...
    @property
    def latest_seq(self) -> int: ...
    @property
    def database_id(self) -> str: ...
    @property
    def version(self) -> Version | None: ...
    @property
    def project_records(self) -> Sequence[dict[str, Any]]: ...
    @property
    def restores(self) -> Sequence[tuple[int, int]]: ...


@dataclass
class SequencerStats:
    events: int = 0
    gap_fills: int = 0
    resyncs: int = 0


#: The size of a snapshot's or resync's fragments: small, so that a server streaming it to
#: many subscribers does little work for each before it lets others run.
FRAGMENT_BYTES = 16 * 1024


@dataclass(frozen=True)
class ProjectsMessage:
    """A ``snapshot`` or ``resync`` for a new subscriber, encoded lazily: iterating it
    yields the fragments of the one message (:func:`events.projects_message_chunks`).

    ``key`` names what it holds: two with the same key carry the same projects at the same
    ``seq`` of the same database, so a server may encode one and send it to both.
    """

    key: tuple[Literal["snapshot", "resync"], str, int, int]
    fragments: Iterator[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return self.fragments


def _now() -> str:
    return events.format_timestamp(events.utc_now())


class Sequencer:
    """Orders one database's events for broadcast and answers what a new subscriber gets.

    Every method returns the encoded messages to send, oldest first; the caller
    sends them (to every subscriber, or to the one that asked). Not thread-safe:
    one event loop drives it.
    """

    def __init__(self, *, window: int = 1000, clock: Callable[[], str] = _now) -> None:
        self.window = window
        self.clock = clock
        self.stats = SequencerStats()
        self.database_id = ""
        #: The ``seq`` of the newest event sent.
        self.last_seq = 0
        # Encoded recent events, oldest first, for replay; at least the journal's size.
        # Only the encoded form: the rare snapshot that needs an event's data decodes it.
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=window)
        self._pending: dict[int, Event] = {}
        self._highest_forwarded = 0
        self._explained_version: Version | None = None
        #: Seqs an older copy of the database put back skipped: ``kept -> lost`` means the
        #: event after ``kept`` is ``lost + 1``, and ``kept < seq <= lost`` were never kept.
        self._holes: dict[int, int] = {}
        #: How many times the events started over from a read (:meth:`load`): the projects
        #: at one seq may differ across a start-over (an older copy put back keeps the seq).
        self._loads = 0

    # -- inputs ------------------------------------------------------------------

    def load(self, state: JournalRead, *, last_seq: int | None = None) -> None:
        """Start over from a read of the database (at start-up, or after it was replaced).

        ``last_seq`` keeps counting from a seq the read is behind (a restored older copy:
        the seqs between were issued and must never be sent again).
        """
        self._loads += 1
        self.database_id = state.database_id
        self._holes = dict(state.restores)
        self.last_seq = state.latest_seq
        if last_seq is not None and last_seq > state.latest_seq:
            self._holes[state.latest_seq] = last_seq
            self.last_seq = last_seq
        self._highest_forwarded = self.last_seq
        self._explained_version = state.version
        window = max(self.window, len(state.journal))
        self._recent = deque(
            ((event["seq"], events.encode_event(event)) for event in state.journal),
            maxlen=window,
        )
        self._pending.clear()

    def accept(self, event: Event, version: Version | None = None) -> list[bytes]:
        """Take one committed event (from a forward or the journal).

        Returns the events now due: this one and any early ones waiting behind it,
        or nothing when it was already sent or comes early (then :attr:`waiting`).
        """
        seq = event["seq"]
        if seq > self._highest_forwarded:
            self._highest_forwarded = seq
            if version is not None:
                self._explained_version = version
        if seq <= self.last_seq:
            return []
        self._pending[seq] = event
        due = []
        while self._next_seq in self._pending:
            due.append(self._emit(self._pending.pop(self._next_seq)))
        return due

    @property
    def _next_seq(self) -> int:
        """The seq due next: after the last one sent, and after any seqs a restore skipped."""
        return self._holes.get(self.last_seq, self.last_seq) + 1

    def needs_resync_for(self, restore: tuple[int, int]) -> bool:
        """Whether a commit that found a restore ``(kept, lost)`` means subscribers must start
        over: events after ``kept`` were sent, and the database no longer holds them.

        When they need not (nothing after ``kept`` went out), the skipped seqs are noted so
        that the next event is due at once.
        """
        kept, lost = restore
        if self._holes.get(kept, kept) >= lost:
            return False  # known already
        if self.last_seq > kept:
            return True
        self._holes[kept] = lost
        return False

    def adopt_database(self, database_id: str) -> bool:
        """Take ``database_id`` as the database's own, unless another one is already known.

        A new database gets its id with its first change: a forward carrying that id is
        how the server learns it. Returns whether the id is this sequencer's now.
        """
        if not self.database_id:
            self.database_id = database_id
        return self.database_id == database_id

    def _emit(self, event: Event) -> bytes:
        message = events.encode_event(event)
        self.last_seq = event["seq"]
        self._recent.append((event["seq"], message))
        self.stats.events += 1
        return message

    @property
    def waiting(self) -> bool:
        """Whether early events wait for a gap: the caller should read the journal soon."""
        return bool(self._pending)

    def is_explained(self, version: Version | None) -> bool:
        """Whether the database file at ``version`` holds nothing this sequencer was not told."""
        return version == self._explained_version

    def catch_up(self, state: JournalRead) -> list[bytes]:
        """Bring the stream up to a read of the journal; return what to send to everyone.

        A read older than what forwards already told us is merely stale (it ran
        while events kept arriving) and changes nothing. A new database id (the file
        was replaced) or events that left the journal unsent start over with a
        ``resync`` message holding every project.
        """
        self.stats.gap_fills += 1
        if self.database_id and not state.database_id:
            return []  # no file where the database was: it is being replaced; wait for it
        if self.database_id and state.database_id != self.database_id:
            return self._resync(state)
        self.database_id = state.database_id  # adopts the id of a database created meanwhile
        if any(self.needs_resync_for(restore) for restore in state.restores):
            return self._resync(state)
        self._holes.update((kept, lost) for kept, lost in state.restores)
        missing = [event for event in state.journal if event["seq"] > self.last_seq]
        if missing and missing[0]["seq"] != self._next_seq:
            return self._resync(state)
        due = [message for event in missing for message in self.accept(event)]
        for seq in [seq for seq in self._pending if seq <= self.last_seq]:
            del self._pending[seq]
        if self.last_seq == state.latest_seq:
            self._explained_version = state.version
            self._highest_forwarded = max(self._highest_forwarded, state.latest_seq)
        return due

    def is_behind(self, state: JournalRead) -> bool:
        """Whether a read of this very database holds fewer events than were sent: an older
        copy was put back (or the read is stale: read again before calling
        :meth:`restored`)."""
        return state.database_id == self.database_id and state.latest_seq < self.last_seq

    def restored(self, state: JournalRead) -> list[bytes]:
        """An older copy of the database was put back (``state`` is behind what was sent):
        everyone starts over from it, and seq goes on from the last one sent, never back."""
        return self._resync(state, last_seq=self.last_seq)

    def _resync(self, state: JournalRead, *, last_seq: int | None = None) -> list[bytes]:
        self.stats.resyncs += 1
        self.load(state, last_seq=last_seq)
        return [
            events.projects_message(
                "resync", state.project_records, seq=self.last_seq, timestamp=self.clock()
            )
        ]

    # -- a new subscriber --------------------------------------------------------

    @property
    def oldest_seq(self) -> int:
        """The ``seq`` of the oldest event in the replay window (after the last when empty)."""
        return self._recent[0][0] if self._recent else self.last_seq + 1

    def can_replay(self, since: int) -> bool:
        """Whether every event after ``since`` is still in the replay window."""
        oldest = self.oldest_seq
        lost = any(kept < since <= skipped for kept, skipped in self._holes.items())
        return oldest - 1 <= since <= self.last_seq and not lost

    def recent_after(self, since: int) -> list[tuple[int, bytes]]:
        """The retained encoded events after ``since`` (see :meth:`can_replay`), oldest first."""
        return [(seq, message) for seq, message in self._recent if seq > since]

    def needs_projects(self, *, since: int | None, snapshot: bool) -> bool:
        """Whether a subscriber asking for this must be sent the project list (read it first)."""
        return snapshot or (since is not None and not self.can_replay(since))

    def opening_parts(
        self, *, since: int | None, snapshot: bool, state: JournalRead | None
    ) -> list[bytes | ProjectsMessage]:
        """What a new subscriber gets before the live feed, which follows seamlessly.

        ``since``: the retained events after it, or a ``resync`` with the projects
        when they are gone (``state`` must then be given, see :meth:`needs_projects`).
        ``snapshot``: a ``snapshot`` message with the projects as of :attr:`last_seq`.
        Each item is one message: encoded whole (an event), or a :class:`ProjectsMessage`
        (a snapshot or resync, encoded lazily in fragments, and shareable: subscribers
        joining at the same seq may be sent one encoding). The caller must register the
        subscriber for the live feed with no other input in between; live events
        that come while these are sent must wait behind them.
        """
        if since is not None and self.can_replay(since):
            return [message for _seq, message in self.recent_after(since)]
        key = self.projects_message_key(since=since, snapshot=snapshot)
        if state is None or key is None:
            return []
        event_type = key[0]
        return [
            ProjectsMessage(
                key=key,
                fragments=events.projects_message_chunks(
                    event_type,
                    self.projects_at_last_seq(state),
                    seq=self.last_seq,
                    timestamp=self.clock(),
                    chunk_bytes=FRAGMENT_BYTES,
                ),
            )
        ]

    def projects_message_key(
        self, *, since: int | None, snapshot: bool
    ) -> tuple[Literal["snapshot", "resync"], str, int, int] | None:
        """The :attr:`ProjectsMessage.key` of what :meth:`opening_parts` would send now
        (``None`` when it sends no projects): a caller holding a message with this key
        may send that instead."""
        if since is not None and self.can_replay(since):
            return None
        if since is None and not snapshot:
            return None
        event_type: Literal["snapshot", "resync"] = "snapshot" if since is None else "resync"
        return (event_type, self.database_id, self._loads, self.last_seq)

    def projects_at_last_seq(self, state: JournalRead) -> list[dict[str, Any]]:
        """The projects as of :attr:`last_seq`, from a read of the file at or before it.

        The read's own records when it is up to date (the records themselves are not
        copied: many subscribers share one read of a large database).
        """
        if state.latest_seq >= self.last_seq:
            records = state.project_records
            return records if isinstance(records, list) else list(records)
        projects = {record["project_id"]: record for record in state.project_records}
        for seq, message in self._recent:
            if seq > state.latest_seq:
                events.apply(projects, events.decode_event(message))
        return list(projects.values())
