"""``projctl watch``: pure renderers (state -> Rich renderables) and the two run loops.

:class:`WatchState` is what the screen shows, built from the server's messages
by :meth:`WatchState.apply`. The ``render_*`` functions are pure: state and a
clock in, a Rich renderable out, so tests render them into a captured console.
:func:`run_live` owns the terminal (``rich.live.Live``): one task applies
messages as fast as they arrive, another redraws at a fixed rate, so a burst
of events never queues up redraws. :func:`run_json` prints events as JSON Lines.
Both loops take the same options and count the same events: ``--count``,
``--since`` and the filters mean the same on a terminal and in a pipe.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from projctl import events
from projctl.events import PROJECTS_MESSAGE_TYPES
from projctl.model import visible
from projctl.subscribe import Connection, Locate, Message, follow

__all__ = [
    "STATUS_STYLES",
    "EventFilter",
    "WatchState",
    "relative_time",
    "render_feed",
    "render_projects_table",
    "render_screen",
    "render_watch_table",
    "run_json",
    "run_live",
]

#: How long a created or updated row stays highlighted.
HIGHLIGHT_SECONDS = 10.0
#: How long a deleted row stays on screen, struck through, before it disappears.
DELETED_LINGER_SECONDS = 5.0
FEED_LENGTH = 6
REFRESH_INTERVAL = 0.125
#: Failed connection attempts in a row (about 30 s of backoff) before watch gives up.
GIVE_UP_AFTER = 10

#: The table's columns, left to right.
COLUMNS: tuple[str, ...] = ("ID", "Name", "Type", "Status", "Owner", "Last change")
#: Spaces between two columns (Rich's cell padding, collapsed, plus the divider).
COLUMN_GAP = 2
#: Name is truncated, never dropped, down to this width (or its content's, if narrower)...
NAME_MIN_WIDTH = 10
#: ... but Type and Owner are shown only while Name keeps this much (a name says more).
NAME_COMFORT_WIDTH = 16
#: Past its cap, Last change grows only while Name keeps this much.
NAME_ROOMY_WIDTH = 30
#: Caps on the columns sized to their content; longer values end in an ellipsis.
TYPE_MAX_WIDTH = 12
OWNER_MAX_WIDTH = 16
LAST_CHANGE_MAX_WIDTH = 24
#: Short event names for the feed on a narrow terminal.
_SHORT_EVENT_NAMES = {
    "project_created": "created",
    "project_updated": "updated",
    "project_deleted": "deleted",
}

STATUS_STYLES: dict[str, str] = {
    "created": "cyan",
    "in_progress": "yellow",
    "on_hold": "magenta",
    "completed": "green",
    "archived": "dim",
}
_CHANGE_STYLES = {"new": "bold green", "updated": "bold yellow", "deleted": "red"}
_FEED_STYLES = {
    "project_created": "green",
    "project_updated": "yellow",
    "project_deleted": "red",
    "resync": "bold magenta",
}


def plural(count: int, noun: str) -> str:
    """``1 project``, ``2 projects``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def relative_time(seconds: float) -> str:
    """A short age: ``just now``, ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if seconds < 1:
        return "just now"
    return f"{short_age(seconds)} ago"


def short_age(seconds: float) -> str:
    """The shortest age: ``now``, ``12s``, ``5m``, ``3h``, ``2d``."""
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


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

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(self.event_types or self.project_ids or self.statuses or self.owners)

    def describe(self) -> str:
        """The filters set, as ``event=... project=... status=... owner=...``; empty if none."""
        named = (
            ("event", self.event_types),
            ("project", self.project_ids),
            ("status", self.statuses),
            ("owner", self.owners),
        )
        return " ".join(f"{name}={','.join(sorted(values))}" for name, values in named if values)

    def matches_project(self, project: Mapping[str, Any] | None, project_id: str) -> bool:
        """Whether a project (its last known record) passes the project, status, owner filters."""
        if self.project_ids and project_id not in self.project_ids:
            return False
        if self.statuses and (project is None or project.get("status") not in self.statuses):
            return False
        return not (self.owners and (project is None or project.get("owner_id") not in self.owners))

    def matches(self, event: Mapping[str, Any], last_known: Mapping[str, Any] | None) -> bool:
        """Whether a lifecycle event passes every filter.

        A ``project_deleted`` event carries no status or owner, so those filters
        look at ``last_known``, the project as it was before the event.
        """
        if self.event_types and event.get("event_type") not in self.event_types:
            return False
        data = event.get("data", {})
        project_id = str(data.get("project_id", ""))
        subject = last_known if event.get("event_type") == "project_deleted" else data
        return self.matches_project(subject, project_id)


@dataclass
class Row:
    """One project on screen and what last happened to it."""

    project: dict[str, Any]
    #: When this screen learned of the change: highlights fade and deleted rows go from it.
    changed_at: float
    change: Literal["new", "updated", "deleted", "loaded"]
    updated_fields: tuple[str, ...] = ()
    #: When the change happened (the event's timestamp), for the age shown; ``None`` for a
    #: row loaded from a list of projects, whose ``updated_at`` says when it last changed.
    occurred_at: float | None = None


@dataclass(frozen=True)
class FeedEntry:
    at: float
    seq: int | None
    event_type: str
    project_id: str
    name: str
    fields: tuple[str, ...] = ()


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
    #: Lifecycle events received, and those of them that pass ``event_filter``.
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
        if event_type not in events.EVENT_TYPES:
            return
        payload = item.data.get("data", {})
        project_id = str(payload.get("project_id", ""))
        occurred = timestamp_to_epoch(item.data.get("timestamp"))
        # A writer's clock may run ahead of ours: never show a change as in the future.
        occurred = now if occurred is None else min(occurred, now)
        self.events_seen += 1
        fields: tuple[str, ...] = ()
        # Re-inserted at the end: the newest change is last in ``rows``.
        self.rows.pop(project_id, None)
        if event_type == "project_created":
            row = Row(self.projects[project_id], now, "new", occurred_at=occurred)
        elif event_type == "project_updated":
            fields = tuple(str(name) for name in payload.get("updated_fields", ()))
            row = Row(self.projects[project_id], now, "updated", fields, occurred)
        else:
            row = Row(before or dict(payload), now, "deleted", occurred_at=occurred)
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


# -- the table ---------------------------------------------------------------------------


def _is_fresh(row: Row, now: float) -> bool:
    return row.change != "loaded" and now - row.changed_at < HIGHLIGHT_SECONDS


def _plain_cells(row: Row) -> dict[str, str]:
    """The row's text per column but Last change, control characters made visible."""
    project = row.project
    return {
        "ID": visible(str(project.get("project_id", ""))),
        "Name": visible(str(project.get("name", ""))),
        "Type": visible(str(project.get("type", ""))),
        "Status": visible(str(project.get("status", ""))),
        "Owner": visible(str(project.get("owner_id", ""))),
    }


def _change_labels(row: Row, now: float) -> list[str]:
    """What last happened to the row, from the longest wording to the shortest.

    ``upd name,status,owner_id · 3s``, then fewer fields and a ``+N`` for the rest
    (``upd name,status,+1 · 3s``), down to ``upd · 3s``.
    """
    if row.change == "loaded":
        updated = timestamp_to_epoch(row.project.get("updated_at"))
        return ["-" if updated is None else relative_time(now - updated)]
    age = short_age(now - (row.changed_at if row.occurred_at is None else row.occurred_at))
    if row.change == "new":
        return [f"new · {age}"]
    if row.change == "deleted":
        return [f"del · {age}"]
    names = [visible(name) for name in row.updated_fields]
    labels = [f"upd {','.join(names)} · {age}"] if names else []
    for keep in range(len(names) - 1, 0, -1):
        labels.append(f"upd {','.join(names[:keep])},+{len(names) - keep} · {age}")
    labels.append(f"upd · {age}")
    return labels


def _fit(labels: Sequence[str], width: int) -> str:
    """The longest label that fits ``width`` cells (the shortest, if none does)."""
    return next((label for label in labels if cell_len(label) <= width), labels[-1])


def _layout(
    cells: Sequence[Mapping[str, str]], labels: Sequence[Sequence[str]], width: int
) -> dict[str, int]:
    """Each column shown and its width, left to right, for a terminal ``width`` wide.

    Columns are as wide as their content (and header), within their caps. ID is never
    truncated. Name takes what is left, truncated with an ellipsis. When they do not
    all fit, in this order: Type goes, then Owner (each as soon as Name would get less
    than :data:`NAME_COMFORT_WIDTH`), Last change is abbreviated (down to its header's
    width), Status goes, Last change goes (each as soon as Name would get less than
    :data:`NAME_MIN_WIDTH`).
    """

    def content(column: str, cap: int | None = None) -> int:
        widest = max((cell_len(row[column]) for row in cells), default=0)
        natural = max(cell_len(column), widest)
        return natural if cap is None else min(natural, max(cap, cell_len(column)))

    natural = {
        "ID": content("ID"),
        "Name": content("Name"),
        "Type": content("Type", TYPE_MAX_WIDTH),
        "Status": content("Status"),
        "Owner": content("Owner", OWNER_MAX_WIDTH),
        "Last change": max(
            cell_len("Last change"),
            max((cell_len(_fit(row, LAST_CHANGE_MAX_WIDTH)) for row in labels), default=0),
        ),
    }
    last_min = cell_len("Last change")
    longest_label = max(
        natural["Last change"], max((cell_len(row[0]) for row in labels), default=0)
    )
    steps: list[tuple[tuple[str, ...], bool, int]] = [  # columns, abbreviate, Name's minimum
        (COLUMNS, False, NAME_COMFORT_WIDTH),
        (("ID", "Name", "Status", "Owner", "Last change"), False, NAME_COMFORT_WIDTH),
        (("ID", "Name", "Status", "Last change"), False, NAME_MIN_WIDTH),
        (("ID", "Name", "Status", "Last change"), True, NAME_MIN_WIDTH),
        (("ID", "Name", "Last change"), True, NAME_MIN_WIDTH),
        (("ID", "Name"), True, NAME_MIN_WIDTH),
    ]
    for columns, abbreviate, name_least in steps:
        name_min = min(name_least, natural["Name"])
        fixed = sum(natural[c] for c in columns if c not in ("Name", "Last change"))
        room = width - fixed - COLUMN_GAP * (len(columns) - 1)
        last = 0
        if "Last change" in columns:
            last = min(natural["Last change"], max(last_min, room - name_min))
            if not abbreviate:
                last = natural["Last change"]
        if room - last >= name_min:
            if last:
                # Past its cap, Last change may list every field an update changed, as
                # long as Name keeps NAME_ROOMY_WIDTH (or all it needs).
                roomy = min(natural["Name"], NAME_ROOMY_WIDTH)
                last = max(last, min(longest_label, room - roomy))
            widths = {c: natural[c] for c in columns}
            widths["Name"] = min(natural["Name"], room - last)
            if last:
                widths["Last change"] = last
            return widths
    return {"ID": natural["ID"]}


def render_watch_table(rows: Sequence[Row], now: float, *, width: int = 120) -> Table:
    """The live table of ``rows`` in the order given, laid out for a terminal ``width`` wide.

    Columns are sized to the rows' content and dropped or narrowed in a fixed order
    when they do not fit (see :func:`_layout`); ids are never truncated. New and
    updated rows are highlighted, the cells an update changed stand out, and deleted
    rows are struck through.
    """
    cells = [_plain_cells(row) for row in rows]
    labels = [_change_labels(row, now) for row in rows]
    widths = _layout(cells, labels, width)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column, column_width in widths.items():
        table.add_column(column, width=column_width, no_wrap=True, overflow="ellipsis")
    for row, plain, label in zip(rows, cells, labels, strict=True):
        fresh = _is_fresh(row, now)
        changed = set(row.updated_fields) if fresh and row.change == "updated" else set()
        styled: dict[str, RenderableType] = {}
        for column, field_name in (
            ("Name", "name"),
            ("Type", "type"),
            ("Status", "status"),
            ("Owner", "owner_id"),
        ):
            style = STATUS_STYLES.get(plain["Status"], "") if column == "Status" else ""
            if field_name in changed:
                style = f"{style} reverse".strip()
            styled[column] = Text(plain[column], style=style)
        styled["ID"] = Text(plain["ID"], style="bold" if fresh else "")
        if "Last change" in widths:
            marked = row.change != "loaded" and (fresh or row.change == "deleted")
            change_style = _CHANGE_STYLES[row.change] if marked else "dim"
            styled["Last change"] = Text(_fit(label, widths["Last change"]), style=change_style)
        table.add_row(
            *(styled[column] for column in widths),
            style="dim strike" if row.change == "deleted" else "",
        )
    return table


# -- the feed ----------------------------------------------------------------------------


def render_feed(feed: Iterable[FeedEntry], now: float, *, width: int = 120) -> Table:
    """The events in ``feed``, in the order given (the state keeps them newest first).

    Ids are never truncated: on a narrow terminal the event names get shorter, then
    the ``seq`` goes, then the name and fields.
    """
    entries = list(feed)
    ids = [visible(entry.project_id) for entry in entries]
    seqs = ["" if entry.seq is None else f"#{entry.seq}" for entry in entries]
    details = []
    for entry in entries:
        detail = visible(entry.name)
        if entry.fields:
            detail += f" ({visible(', '.join(entry.fields))})"
        details.append(detail)

    def widest(texts: Iterable[str]) -> int:
        return max((cell_len(text) for text in texts), default=0)

    long_names = [entry.event_type for entry in entries]
    short_names = [_SHORT_EVENT_NAMES.get(name, name) for name in long_names]
    when = len("just now")
    layouts: list[tuple[bool, list[str], bool]] = [  # seq shown, event names, detail shown
        (True, long_names, True),
        (True, short_names, True),
        (False, short_names, True),
        (False, short_names, False),
    ]
    for show_seq, names, show_detail in layouts:
        fixed = [when, widest(names), widest(ids)] + ([widest(seqs)] if show_seq else [])
        room = width - sum(fixed) - COLUMN_GAP * (len(fixed) - (0 if show_detail else 1))
        if not show_detail and room >= 0:
            break
        if show_detail and room >= min(NAME_MIN_WIDTH, max(1, widest(details))):
            break
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column("when", no_wrap=True, style="dim", width=when)
    if show_seq:
        table.add_column("seq", no_wrap=True, justify="right", style="dim")
    table.add_column("event", no_wrap=True)
    table.add_column("project", no_wrap=True)
    if show_detail:
        table.add_column("detail", no_wrap=True, overflow="ellipsis", width=max(1, room))
    for entry, project_id, seq, name, detail in zip(
        entries, ids, seqs, names, details, strict=True
    ):
        cells: list[RenderableType] = [relative_time(now - entry.at)]
        if show_seq:
            cells.append(seq)
        cells += [Text(name, style=_FEED_STYLES.get(entry.event_type, "")), Text(project_id)]
        if show_detail:
            cells.append(Text(detail))
        table.add_row(*cells)
    return table


# -- the screen --------------------------------------------------------------------------


def _connection_text(state: WatchState, now: float) -> Text:
    connection = state.connection
    if connection.state == "connected":
        return Text("● connected", style="bold green")
    if connection.state == "starting":
        return Text("◌ starting server", style="bold cyan")
    waited = now - state.connection_changed_at
    left = max(0.0, (connection.retry_in or 0) - waited)
    text = Text(f"○ reconnecting in {left:.1f}s", style="bold yellow")
    if connection.error:
        # The error may quote the server (a close reason): no raw controls on the terminal.
        text.append(f" ({visible(connection.error)})", style="yellow")
    return text


def _line(*parts: str | tuple[str, str] | Text) -> Text:
    return Text.assemble(*parts, overflow="ellipsis", no_wrap=True)


def render_screen(state: WatchState, now: float, *, width: int, height: int) -> RenderableType:
    """The whole watch screen for a terminal of ``width`` x ``height``.

    A header (connection, server; then the filters and ``--count``, when set), the
    table of the projects that pass the filters, newest change on top, as many as
    fit, the latest matching events, newest on top, and a footer that says how many
    projects are shown of how many there are.
    """
    event_filter = state.event_filter
    lines: list[RenderableType] = [
        _line(
            ("projctl watch", "bold"),
            "  ",
            _connection_text(state, now),
            "  ",
            (state.server_url or "", "dim"),
        )
    ]
    wanted = []
    if event_filter.active:
        wanted.append(f"filter {visible(event_filter.describe())}")
    if state.count is not None:
        wanted.append(
            f"until {plural(state.count, 'matching event')} ({state.events_matched} so far)"
        )
    if wanted:
        lines.append(_line((" · ".join(wanted), "bold cyan")))
    matching = [
        row
        for project_id, row in state.rows.items()
        if event_filter.matches_project(row.project, project_id)
    ]
    feed = list(state.feed)
    feed_lines = min(len(feed), FEED_LENGTH, max(0, height // 4))
    # the header lines, the table's head and rule, the feed's title and lines, the footer
    budget = max(1, height - len(lines) - 2 - (1 + feed_lines if feed_lines else 0) - 1)
    shown = list(reversed(matching))[:budget]
    lines.append(render_watch_table(shown, now, width=width))
    if feed_lines:
        lines += [
            Text("Recent events", style="bold"),
            render_feed(feed[:feed_lines], now, width=width),
        ]
    lines.append(_line((_footer(state, shown, matching, width), "dim")))
    return Group(*lines)


def _footer(state: WatchState, shown: Sequence[Row], matching: Sequence[Row], width: int) -> str:
    """``N of M projects shown`` (or ``M projects`` when all are), the events, the last seq."""
    total = state.project_count
    on_screen = sum(1 for row in shown if row.change != "deleted")
    matching_projects = sum(1 for row in matching if row.change != "deleted")
    filtered = state.event_filter.active
    if not filtered and on_screen == total:
        projects = plural(total, "project")
    else:
        projects = f"{on_screen} of {plural(total, 'project')} shown"
        if filtered and matching_projects > on_screen:
            projects += f" ({matching_projects} match)"
    if filtered:
        seen = f"{state.events_matched} of {plural(state.events_seen, 'event')} matched"
    else:
        seen = f"{plural(state.events_seen, 'event')} seen"
    last_seq = state.last_seq if state.last_seq is not None else "-"
    footer = projects
    for part in (seen, f"last seq {last_seq}", "Ctrl-C to quit"):
        if cell_len(f"{footer} · {part}") > width:
            break  # whole parts or none: the first ones say the most
        footer += f" · {part}"
    return footer


def render_projects_table(projects: Sequence[Mapping[str, Any]]) -> Table:
    """``projctl list`` on a terminal: every project, status coloured."""
    table = Table(title=plural(len(projects), "project"))
    for column in ("ID", "Name", "Type", "Status", "Owner", "Updated (UTC)"):
        table.add_column(column, overflow="fold")
    for project in projects:
        status = str(project["status"])
        table.add_row(
            Text(visible(str(project["project_id"]))),
            Text(visible(str(project["name"]))),
            Text(visible(str(project["type"]))),
            Text(visible(status), style=STATUS_STYLES.get(status, "")),
            Text(visible(str(project["owner_id"]))),
            Text(visible(str(project["updated_at"])[:19].replace("T", " "))),
        )
    return table


# -- the run loops -----------------------------------------------------------------------


async def run_live(
    locate: Locate,
    *,
    console: Console,
    event_filter: EventFilter,
    since: int | None = None,
    count: int | None = None,
    projects: Iterable[Mapping[str, Any]] = (),
    err: IO[str] | None = None,
) -> int:
    """Show the live screen until ``count`` matching events have arrived; return how many did.

    Runs until cancelled (Ctrl-C, a timeout) when ``count`` is ``None``. The terminal
    is restored on the way out, whichever way that is. ``locate`` finds the server to
    follow (see :func:`projctl.subscribe.follow`).

    Without ``since`` the table starts from the server's snapshot and ``projects`` is
    not used. With ``since`` it starts from ``projects`` (the projects as they are,
    which the caller reads) and the events after ``since`` are replayed onto it as
    changes: marked in the table, listed in the feed, and counted against ``count``
    and the filters exactly as :func:`run_json` counts them. When a ``resync`` replaced
    events that were never received, one line says so on ``err`` as the screen closes.
    """
    state = WatchState(event_filter=event_filter, count=count)
    if since is not None:
        state.load(projects, time.time())
    messages = follow(locate, since=since, snapshot=since is None, give_up_after=GIVE_UP_AFTER)
    # Said on ``err`` once the screen is gone: the full-screen view would hide it.
    resyncs: list[str] = []

    async def consume() -> int:
        applied = 0
        async for item in messages:
            if isinstance(item, Message) and item.event_type == "resync":
                after = since if state.last_seq is None else state.last_seq
                resyncs.append(
                    resync_line(after, item.seq, count=count, matched=state.events_matched)
                )
            state.apply(item, time.time())
            if state.done:
                break
            applied += 1
            if applied % 256 == 0:
                await asyncio.sleep(0)  # let the screen redraw during a burst
        return state.events_matched

    try:
        return await _show_live(console, state, consume)
    finally:
        if err is not None and resyncs:
            err.write("".join(line + "\n" for line in resyncs))
            err.flush()


async def _show_live(
    console: Console, state: WatchState, consume: Callable[[], Coroutine[Any, Any, int]]
) -> int:
    """Run ``consume`` while the screen shows ``state``; return what it returns."""
    with Live(console=console, screen=True, auto_refresh=False, redirect_stderr=False) as live:

        async def redraw() -> None:
            while True:
                now = time.time()
                state.expire(now)
                width, height = _terminal_size(console)
                live.update(render_screen(state, now, width=width, height=height), refresh=True)
                await asyncio.sleep(REFRESH_INTERVAL)

        drawer = asyncio.create_task(redraw())
        consumer = asyncio.create_task(consume())
        try:
            # The drawer only ever ends by failing: its error is raised, as the consumer's is.
            await asyncio.wait({drawer, consumer}, return_when=asyncio.FIRST_COMPLETED)
            if drawer.done():
                drawer.result()
            return consumer.result()
        finally:
            drawer.cancel()
            consumer.cancel()
            await asyncio.wait({drawer, consumer})


def _terminal_size(console: Console) -> tuple[int, int]:
    """The terminal's size now, and make ``console`` draw at it.

    Rich prefers ``COLUMNS``/``LINES`` from the environment, which many shells export
    once and never update: a full-screen view that trusted them would draw at a stale
    size after every resize.
    """
    try:
        size = os.get_terminal_size(console.file.fileno())
    except (AttributeError, OSError, ValueError):
        return console.size.width, console.size.height
    console.size = (size.columns, size.lines)
    return size.columns, size.lines


async def run_json(
    locate: Locate,
    *,
    since: int | None,
    event_filter: EventFilter,
    count: int | None,
    out: IO[str],
    err: IO[str],
    known_projects: Iterable[Mapping[str, Any]] = (),
) -> int:
    """Print matching events as JSON Lines, exactly as received; return how many matched.

    Returns after ``count`` matches (never, when ``count`` is ``None``).
    ``snapshot`` and ``resync`` messages are printed too unless ``--event`` filters.
    Connection changes go to ``err``. ``known_projects`` are the projects before the
    first event, so a filter on status or owner can judge a deletion.
    """
    known: dict[str, dict[str, Any]] = {str(p["project_id"]): dict(p) for p in known_projects}
    matched = 0
    last_seq = since
    async for item in follow(locate, since=since, give_up_after=GIVE_UP_AFTER):
        if isinstance(item, Connection):
            err.write(_connection_line(item) + "\n")
            err.flush()
            continue
        if item.event_type == "resync":
            err.write(resync_line(last_seq, item.seq, count=count, matched=matched) + "\n")
            err.flush()
        last_seq = item.seq if item.seq is not None else last_seq
        before = events.apply(known, item.data)
        if item.event_type in PROJECTS_MESSAGE_TYPES:
            if not event_filter.event_types:
                out.write(item.text + "\n")
                out.flush()
            continue
        if event_filter.matches(item.data, before):
            out.write(item.text + "\n")
            out.flush()
            matched += 1
        if count is not None and matched >= count:
            return matched
    return matched


def resync_line(after: int | None, seq: int | None, *, count: int | None, matched: int) -> str:
    """What watch says when a ``resync`` replaced events it never got: they left the journal
    (or the database was replaced), so they cannot be shown, matched or counted."""
    gone = "some events" if after is None else f"the events after seq {after}"
    line = (
        f"projctl watch: {gone} are no longer in the journal; the server sent every project "
        f"as of seq {'?' if seq is None else seq} instead (resync), so they were not seen"
    )
    if count is not None and matched < count:
        line += f" and do not count toward --count ({matched} of {count} matched so far)"
    return line


def _connection_line(connection: Connection) -> str:
    if connection.state == "connected":
        return f"projctl watch: connected to {connection.url}"
    if connection.state == "starting":
        return "projctl watch: starting a server"
    return (
        f"projctl watch: disconnected ({visible(connection.error or '')}); "
        f"reconnecting in {connection.retry_in or 0:.1f}s"
    )
