"""``projctl watch``: pure renderers (state -> Rich renderables) and the two run loops.

:class:`WatchState` is what the screen shows, built from the server's messages
by :meth:`WatchState.apply`. The ``render_*`` functions are pure: state and a
clock in, a Rich renderable out, so tests render them into a captured console.
:func:`run_live` owns the terminal (``rich.live.Live``): one task applies
messages as fast as they arrive, another redraws at a fixed rate, so a burst
of events never queues up redraws. :func:`run_json` prints events as JSON Lines.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from rich import box
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

STATUS_STYLES: dict[str, str] = {
    "created": "cyan",
    "in_progress": "yellow",
    "on_hold": "magenta",
    "completed": "green",
    "archived": "dim",
}
_CHANGE_STYLES = {"new": "bold green", "updated": "bold yellow", "deleted": "red"}


def plural(count: int, noun: str) -> str:
    """``1 project``, ``2 projects``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def relative_time(seconds: float) -> str:
    """A short age: ``just now``, ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


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
    changed_at: float
    change: Literal["new", "updated", "deleted", "loaded"]
    updated_fields: tuple[str, ...] = ()


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
    """Everything the live screen shows; changed only by :meth:`apply` and :meth:`expire`."""

    rows: dict[str, Row] = field(default_factory=dict)
    #: The live projects, folded from the feed by :func:`projctl.events.apply`.
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed: deque[FeedEntry] = field(default_factory=lambda: deque(maxlen=FEED_LENGTH))
    connection: Connection = field(default_factory=lambda: Connection("starting"))
    connection_changed_at: float = 0.0
    server_url: str | None = None
    events_seen: int = 0
    last_seq: int | None = None

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
            self.rows = {
                project_id: Row(project, now, "loaded")
                for project_id, project in self.projects.items()
            }
            if event_type == "resync":
                self.feed.append(
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
        self.events_seen += 1
        fields: tuple[str, ...] = ()
        # Re-inserted at the end: the newest change is last in ``rows``.
        self.rows.pop(project_id, None)
        if event_type == "project_created":
            self.rows[project_id] = Row(self.projects[project_id], now, "new")
        elif event_type == "project_updated":
            fields = tuple(payload.get("updated_fields", ()))
            self.rows[project_id] = Row(self.projects[project_id], now, "updated", fields)
        else:
            self.rows[project_id] = Row(before or dict(payload), now, "deleted")
        self.feed.append(
            FeedEntry(now, item.seq, event_type, project_id, str(payload.get("name", "")), fields)
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


def _columns_for(width: int) -> list[str]:
    columns = ["ID", "Name", "Type", "Status", "Owner", "Updated", "Last change"]
    if width < 100:
        columns.remove("Type")
    if width < 80:
        columns.remove("Owner")
    if width < 64:
        columns.remove("Updated")
    return columns


def render_watch_table(
    rows: Sequence[Row], now: float, *, width: int = 120, hidden: int = 0
) -> Table:
    """The live table: newest change first, changes highlighted, deleted rows struck through."""
    columns = _columns_for(width)
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(
            column,
            no_wrap=True,
            overflow="ellipsis",
            ratio=3 if column == "Name" else None,
            min_width=8 if column == "Name" else None,
            max_width=34 if column == "Last change" else None,
        )
    for row in rows:
        table.add_row(
            *_cells(row, now, columns), style="dim strike" if row.change == "deleted" else ""
        )
    if hidden:
        table.caption = f"{hidden} more not shown (least recently changed)"
    return table


def _cells(row: Row, now: float, columns: Sequence[str]) -> list[RenderableType]:
    project = row.project
    fresh = now - row.changed_at < HIGHLIGHT_SECONDS
    changed = set(row.updated_fields) if fresh and row.change == "updated" else set()

    def cell(text: str, field_name: str | None = None, style: str = "") -> Text:
        if field_name is not None and field_name in changed:
            style = f"{style} reverse".strip()
        return Text(visible(text), style=style)

    updated = timestamp_to_epoch(str(project.get("updated_at", "")))
    status = str(project.get("status", ""))
    values: dict[str, RenderableType] = {
        "ID": cell(str(project.get("project_id", "")), style="bold" if fresh else ""),
        "Name": cell(str(project.get("name", "")), "name"),
        "Type": cell(str(project.get("type", "")), "type"),
        "Status": cell(status, "status", STATUS_STYLES.get(status, "")),
        "Owner": cell(str(project.get("owner_id", "")), "owner_id"),
        "Updated": Text(relative_time(now - updated) if updated is not None else "-"),
        "Last change": _last_change(row, now, fresh),
    }
    return [values[column] for column in columns]


def _last_change(row: Row, now: float, fresh: bool) -> Text:
    age = relative_time(now - row.changed_at)
    if row.change == "loaded":
        return Text("-", style="dim")
    if row.change == "new":
        label = "NEW"
    elif row.change == "updated":
        label = "updated " + visible(", ".join(row.updated_fields))
    else:
        label = "DELETED"
    style = _CHANGE_STYLES[row.change] if fresh or row.change == "deleted" else "dim"
    return Text(f"{label} · {age}", style=style)


def render_feed(feed: Iterable[FeedEntry], now: float) -> Table:
    """The most recent events, newest last."""
    table = Table(box=None, show_header=False, pad_edge=False, expand=True)
    table.add_column("when", no_wrap=True, style="dim", width=9)
    table.add_column("seq", no_wrap=True, justify="right", style="dim")
    table.add_column("event", no_wrap=True)
    table.add_column("project", no_wrap=True, overflow="ellipsis", ratio=1)
    for entry in feed:
        style = {
            "project_created": "green",
            "project_updated": "yellow",
            "project_deleted": "red",
            "resync": "bold magenta",
        }.get(entry.event_type, "")
        detail = f"{entry.project_id} {entry.name}".strip()
        if entry.fields:
            detail += f" ({', '.join(entry.fields)})"
        table.add_row(
            relative_time(now - entry.at),
            "" if entry.seq is None else f"#{entry.seq}",
            Text(entry.event_type, style=style),
            Text(visible(detail)),
        )
    return table


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
        text.append(f" ({connection.error})", style="yellow")
    return text


def render_screen(
    state: WatchState,
    now: float,
    *,
    width: int,
    height: int,
    event_filter: EventFilter | None = None,
) -> RenderableType:
    """The whole watch screen for a terminal of ``width`` x ``height``."""
    event_filter = event_filter or EventFilter()
    header = Text.assemble(
        ("projctl watch", "bold"),
        "  ",
        _connection_text(state, now),
        "  ",
        (state.server_url or "", "dim"),
        overflow="ellipsis",
        no_wrap=True,
    )
    visible = [
        row
        for project_id, row in state.rows.items()
        if event_filter.matches_project(row.project, project_id)
    ]
    feed = [
        entry
        for entry in state.feed
        if not event_filter.event_types or entry.event_type in event_filter.event_types
    ]
    feed_lines = min(len(feed), FEED_LENGTH, max(0, height // 4))
    # header, table head and rule, caption, blank, feed title, footer
    budget = max(1, height - 7 - feed_lines)
    hidden = max(0, len(visible) - budget)
    shown = list(reversed(visible))[:budget]
    footer = Text(
        f"{plural(state.project_count, 'project')} · {plural(state.events_seen, 'event')} seen · "
        f"last seq {state.last_seq if state.last_seq is not None else '-'}"
        + (f" · {hidden} hidden" if hidden else "")
        + " · Ctrl-C to quit",
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )
    parts: list[RenderableType] = [
        header,
        render_watch_table(shown, now, width=width, hidden=hidden),
    ]
    if feed_lines:
        parts += [Text("Recent events", style="bold"), render_feed(feed[-feed_lines:], now)]
    parts.append(footer)
    return Group(*parts)


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


async def run_live(locate: Locate, *, console: Console, event_filter: EventFilter) -> None:
    """Show the live screen until cancelled (Ctrl-C). Restores the terminal on the way out.

    ``locate`` finds the server to follow (see :func:`projctl.subscribe.follow`).
    """
    state = WatchState()
    messages = follow(locate, since=None, snapshot=True, give_up_after=GIVE_UP_AFTER)

    async def consume() -> None:
        applied = 0
        async for item in messages:
            state.apply(item, time.time())
            applied += 1
            if applied % 256 == 0:
                await asyncio.sleep(0)  # let the screen redraw during a burst

    with Live(console=console, screen=True, auto_refresh=False, redirect_stderr=False) as live:

        async def redraw() -> None:
            while True:
                now = time.time()
                state.expire(now)
                width, height = _terminal_size(console)
                live.update(
                    render_screen(
                        state, now, width=width, height=height, event_filter=event_filter
                    ),
                    refresh=True,
                )
                await asyncio.sleep(REFRESH_INTERVAL)

        await asyncio.gather(consume(), redraw())


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
    async for item in follow(locate, since=since, give_up_after=GIVE_UP_AFTER):
        if isinstance(item, Connection):
            err.write(_connection_line(item) + "\n")
            err.flush()
            continue
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


def _connection_line(connection: Connection) -> str:
    if connection.state == "connected":
        return f"projctl watch: connected to {connection.url}"
    if connection.state == "starting":
        return "projctl watch: starting a server"
    return (
        f"projctl watch: disconnected ({connection.error}); "
        f"reconnecting in {connection.retry_in or 0:.1f}s"
    )
