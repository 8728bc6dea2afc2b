"""Pure renderers: a state and a clock in, a Rich renderable out (the live table, the
feed, the whole screen), so tests render them into a captured console."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from projctl.model import visible

from .layout import (
    COLUMN_GAP,
    FIELD_COLUMNS,
    NAME_MIN_WIDTH,
    _change_labels,
    _change_order,
    _fit,
    _is_fresh,
    _layout,
    _plain_cells,
    change_words,
)
from .state import FEED_LENGTH, FeedEntry, Row, WatchState
from .table import STATUS_STYLES
from .words import plural, relative_time

_SHORT_EVENT_NAMES = {
    "project_created": "created",
    "project_updated": "updated",
    "project_deleted": "deleted",
}


_CHANGE_STYLES = {
    "new": "bold green",
    "updated": "bold yellow",
    "deleted": "red",
    "emitted": "bold cyan",
}
_FEED_STYLES = {
    "project_created": "green",
    "project_updated": "yellow",
    "project_deleted": "red",
    "resync": "bold magenta",
}
#: Emitted events (any other type) in the feed.
_EMITTED_STYLE = "cyan"


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
        for field_name, column in FIELD_COLUMNS.items():
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

    An update says what it changed, old and new, before the name (``status created →
    in_progress · Alpha``). Ids are never truncated: when the details do not fit whole,
    the event names get shorter (``updated``), then the ``seq`` goes, then the details.
    """
    entries = list(feed)
    ids = [visible(entry.project_id) for entry in entries]
    seqs = ["" if entry.seq is None else f"#{entry.seq}" for entry in entries]
    details = []
    for entry in entries:
        detail = visible(entry.name)
        if entry.changes:
            # What changed first: a narrow terminal cuts the end of the line.
            # In the table's order: what a narrow screen has no column for comes first.
            changes = sorted(entry.changes, key=_change_order)
            changed = ", ".join(change_words(change) for change in changes)
            detail = f"{changed} · {detail}"
        elif entry.fields:
            detail += f" ({visible(', '.join(entry.fields))})"
        if entry.summary:
            detail += f" {visible(entry.summary)}"
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
    for number, (show_seq, names, show_detail) in enumerate(layouts):
        fixed = [when, widest(names), widest(ids)] + ([widest(seqs)] if show_seq else [])
        room = width - sum(fixed) - COLUMN_GAP * (len(fixed) - (0 if show_detail else 1))
        if not show_detail and room >= 0:
            break
        # The wire's event names only while every detail fits whole.
        least = widest(details) if number == 0 else min(NAME_MIN_WIDTH, widest(details))
        if show_detail and room >= max(1, least):
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
        style = _FEED_STYLES.get(entry.event_type, _EMITTED_STYLE)
        cells += [Text(name, style=style), Text(project_id)]
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
