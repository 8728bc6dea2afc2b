"""What the watch screen shows: the filters, and :class:`WatchState`, built from the
server's messages by :meth:`WatchState.apply`. No rendering, no I/O."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from projctl import events
from projctl.events import PROJECTS_MESSAGE_TYPES
from projctl.subscribe import Connection, Message

from .words import plural

#: How long a row stays highlighted, and a deleted one on screen: the same for every live
#: view (the dashboard too), typed once in ``events``.
HIGHLIGHT_SECONDS = events.HIGHLIGHT_SECONDS
DELETED_LINGER_SECONDS = events.DELETED_LINGER_SECONDS
FEED_LENGTH = 6


def timestamp_to_epoch(timestamp: object) -> float | None:
    """Seconds since the epoch for a contract timestamp; ``None`` for anything else."""
    moment = events.parse_timestamp(timestamp)
    return None if moment is None else moment.timestamp()


@dataclass(frozen=True)
class EventFilter:
    """``watch`` filters: the same filter repeated means OR, different filters mean AND."""

    event_types: frozenset[str] = frozenset()
    project_ids: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(
            self.event_types or self.project_ids or self.statuses or self.owners or self.types
        )

    def describe(self) -> str:
        """The filters set, as ``event=... project=... type=... status=... owner=...``;
        empty if none."""
        named = (
            ("event", self.event_types),
            ("project", self.project_ids),
            ("type", self.types),
            ("status", self.statuses),
            ("owner", self.owners),
        )
        return " ".join(f"{name}={','.join(sorted(values))}" for name, values in named if values)

    def matches_project(self, project: Mapping[str, Any] | None, project_id: str) -> bool:
        """Whether a project (its last known record) passes the project, type, status and
        owner filters."""
        if self.project_ids and project_id not in self.project_ids:
            return False
        for wanted, field_name in (
            (self.types, "type"),
            (self.statuses, "status"),
            (self.owners, "owner_id"),
        ):
            if wanted and (project is None or project.get(field_name) not in wanted):
                return False
        return True

    def matches(self, event: Mapping[str, Any], last_known: Mapping[str, Any] | None) -> bool:
        """Whether a lifecycle or emitted event passes every filter.

        A ``project_deleted`` event carries no type, status or owner, nor does an emitted
        one, so those filters look at ``last_known``, the project as it was before the
        event (as :func:`projctl.events.apply` returns it).
        """
        event_type = event.get("event_type")
        if self.event_types and event_type not in self.event_types:
            return False
        data = event.get("data", {})
        project_id = str(data.get("project_id", ""))
        carries_project = event_type in ("project_created", "project_updated")
        return self.matches_project(data if carries_project else last_known, project_id)


@dataclass
class Tally:
    """How many events a watch has matched so far, kept where its caller can read it
    after a timeout cancelled the watch (and with it the count it would have returned)."""

    matched: int = 0


@dataclass(frozen=True)
class FieldChange:
    """One field an update changed: its name as on the wire, its value before (``None``
    when this screen never saw it) and after."""

    field: str
    old: Any
    new: Any


@dataclass
class Row:
    """One project on screen and what last happened to it."""

    project: dict[str, Any]
    #: When this screen learned of the change: highlights fade and deleted rows go from it.
    changed_at: float
    change: Literal["new", "updated", "deleted", "loaded", "emitted"]
    updated_fields: tuple[str, ...] = ()
    #: When the change happened (the event's timestamp), for the age shown; ``None`` for a
    #: row loaded from a list of projects, whose ``updated_at`` says when it last changed.
    occurred_at: float | None = None
    #: For ``emitted``: the event's type and a short summary of its data.
    event_type: str = ""
    summary: str = ""
    #: For ``updated``: each field it changed, old and new, in ``updated_fields`` order.
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class FeedEntry:
    at: float
    seq: int | None
    event_type: str
    project_id: str
    name: str
    fields: tuple[str, ...] = ()
    #: An emitted event's data, summarised (:func:`projctl.events.data_summary`).
    summary: str = ""
    #: For ``project_updated``: each field it changed, old and new.
    changes: tuple[FieldChange, ...] = ()


@dataclass
class WatchState:
    """Everything the live screen shows; changed only by its methods (load, apply, expire).

    ``rows`` is ordered by last change, the most recent last; the screen shows it
    newest first. ``feed`` holds the events that pass ``event_filter``, newest first.
    """

    rows: dict[str, Row] = field(default_factory=dict)
    #: The live projects, folded from the feed by :func:`projctl.events.apply`.
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed: deque[FeedEntry] = field(default_factory=lambda: deque(maxlen=FEED_LENGTH))
    connection: Connection = field(default_factory=lambda: Connection("starting"))
    connection_changed_at: float = 0.0
    server_url: str | None = None
    event_filter: EventFilter = field(default_factory=EventFilter)
    #: ``--count``: how many matching events end the watch (``None``: never).
    count: int | None = None
    #: Events received (lifecycle and emitted), and those of them that pass ``event_filter``.
    events_seen: int = 0
    events_matched: int = 0
    last_seq: int | None = None

    @property
    def done(self) -> bool:
        """Whether ``count`` matching events have arrived."""
        return self.count is not None and self.events_matched >= self.count

    def load(self, projects: Iterable[Mapping[str, Any]], now: float) -> None:
        """Start from these projects, as they are: every row ``loaded``, none marked."""
        self.projects = {str(project["project_id"]): dict(project) for project in projects}
        self._load_rows(now)

    def _load_rows(self, now: float) -> None:
        # Ordered by updated_at, so the table starts newest change on top. The contract's
        # timestamps are fixed-width UTC, so their text sorts as their time does: no parsing
        # (a snapshot may hold 20,000 projects); anything else sorts as the oldest.
        def last_change(item: tuple[str, dict[str, Any]]) -> tuple[str, str]:
            updated = item[1].get("updated_at")
            return (updated if isinstance(updated, str) else "", item[0])

        self.rows = {
            project_id: Row(project, now, "loaded")
            for project_id, project in sorted(self.projects.items(), key=last_change)
        }

    def apply(self, item: Message | Connection, now: float) -> None:
        """Fold one message (or connection change) into the state."""
        if isinstance(item, Connection):
            self.connection = item
            self.connection_changed_at = now
            if item.url:
                self.server_url = item.url
            return
        event_type = item.event_type
        if item.seq is not None:
            self.last_seq = item.seq
        before = events.apply(self.projects, item.data)
        if event_type in PROJECTS_MESSAGE_TYPES:
            self._load_rows(now)
            if event_type == "resync":
                self.feed.appendleft(
                    FeedEntry(
                        now,
                        item.seq,
                        "resync",
                        "",
                        f"{plural(len(self.projects), 'project')} reloaded",
                    )
                )
            return
        if not events.is_event(item.data):
            return
        payload = item.data.get("data", {})
        project_id = str(payload.get("project_id", ""))
        # The row as it was: where an update's old values come from.
        previous = self.rows.get(project_id)
        occurred = timestamp_to_epoch(item.data.get("timestamp"))
        # A writer's clock may run ahead of ours: never show a change as in the future.
        occurred = now if occurred is None else min(occurred, now)
        self.events_seen += 1
        fields: tuple[str, ...] = ()
        changes: tuple[FieldChange, ...] = ()
        summary = ""
        row: Row | None = None
        if event_type not in events.EVENT_TYPES:
            # An emitted event changes no field; it is the project's last change.
            summary = events.data_summary(payload)
            if before is not None:
                row = Row(before, now, "emitted", (), occurred, event_type, summary)
        elif event_type == "project_created":
            row = Row(self.projects[project_id], now, "new", occurred_at=occurred)
        elif event_type == "project_updated":
            fields = tuple(str(name) for name in payload.get("updated_fields", ()))
            after = self.projects[project_id]
            old = previous.project if previous is not None else before
            changes = tuple(
                FieldChange(name, None if old is None else old.get(name), after.get(name))
                for name in fields
            )
            row = Row(after, now, "updated", fields, occurred, changes=changes)
        else:
            row = Row(before or dict(payload), now, "deleted", occurred_at=occurred)
        if row is not None:
            # Re-inserted at the end: the newest change is last in ``rows``.
            self.rows.pop(project_id, None)
            self.rows[project_id] = row
        if self.event_filter.matches(item.data, before):
            self.events_matched += 1
            self.feed.appendleft(
                FeedEntry(
                    occurred,
                    item.seq,
                    event_type,
                    project_id,
                    str(payload.get("name", "")),
                    fields,
                    summary,
                    changes,
                )
            )

    def expire(self, now: float) -> None:
        """Drop deleted rows that have lingered long enough."""
        gone = [
            project_id
            for project_id, row in self.rows.items()
            if row.change == "deleted" and now - row.changed_at >= DELETED_LINGER_SECONDS
        ]
        for project_id in gone:
            del self.rows[project_id]

    @property
    def project_count(self) -> int:
        return sum(1 for row in self.rows.values() if row.change != "deleted")
