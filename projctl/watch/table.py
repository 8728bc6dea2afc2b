"""``projctl list``'s table on a terminal: light on purpose (no asyncio, websockets or
``rich.live``), so ``list`` pays only for the table it prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from projctl.model import visible

from .words import plural

STATUS_STYLES: dict[str, str] = {
    "created": "cyan",
    "in_progress": "yellow",
    "on_hold": "magenta",
    "completed": "green",
    "archived": "dim",
}

#: ``list``'s columns, left to right; ``-o wide`` adds the last two.
LIST_COLUMNS: tuple[str, ...] = ("ID", "Name", "Type", "Status", "Owner", "Updated (UTC)")
WIDE_COLUMNS: tuple[str, ...] = ("Created (UTC)", "Description")
#: The columns whose text may end in an ellipsis, and how narrow each may get: in a boxed
#: table (a table that does not fit this goes plain) and in plain columns. Every other
#: column (ids, statuses, timestamps) is shown whole or not at all.
BOXED_MIN_WIDTHS = {"Name": 30, "Type": 12, "Owner": 16, "Description": 30}
PLAIN_MIN_WIDTHS = {"Name": 10, "Type": 8, "Owner": 8, "Description": 10}
#: When plain columns do not fit either, these go first to last; ID and Name always stay.
DROP_ORDER = ("Description", "Created (UTC)", "Type", "Owner", "Updated (UTC)", "Status")
#: Spaces between two plain columns (Rich's cell padding, collapsed, plus the divider).
PLAIN_GAP = 2


def render_projects_table(
    projects: Sequence[Mapping[str, Any]], *, wide: bool = False, width: int | None = None
) -> Table:
    """``projctl list`` on a terminal: every project, status coloured. ``wide`` (``-o wide``)
    adds when each was created and the first line of its description.

    Laid out for a terminal ``width`` wide (``None``: as wide as the cells need). Nothing
    wraps: one line per project. A boxed table when it fits; plain columns when it does
    not, names, types, owners and descriptions ending in an ellipsis, and columns dropped
    (:data:`DROP_ORDER`) when even that does not fit. Ids are never cut.
    """
    columns = LIST_COLUMNS + (WIDE_COLUMNS if wide else ())
    rows = [_cells(project, wide) for project in projects]
    natural = {
        column: max([cell_len(column), *(cell_len(row[column]) for row in rows)])
        for column in columns
    }
    boxed = True
    widths = dict(natural)
    if width is not None:
        # A heavy box: one padding space either side of each cell, a line between and around.
        fitted = _shrink(natural, BOXED_MIN_WIDTHS, width - 3 * len(columns) - 1)
        boxed = fitted is not None
        widths = fitted or _plain_widths(natural, width)
    table = Table(title=plural(len(projects), "project"))
    if not boxed:
        table = Table(
            title=table.title,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
    for column, column_width in widths.items():
        table.add_column(column, width=column_width, no_wrap=True, overflow="ellipsis")
    for project, row in zip(projects, rows, strict=True):
        status = str(project["status"])
        table.add_row(
            *(
                Text(row[column], style=STATUS_STYLES.get(status, "") if column == "Status" else "")
                for column in widths
            )
        )
    return table


def _cells(project: Mapping[str, Any], wide: bool) -> dict[str, str]:
    """A project's text per column, control characters made visible."""
    cells = {
        "ID": visible(str(project["project_id"])),
        "Name": visible(str(project["name"])),
        "Type": visible(str(project["type"])),
        "Status": visible(str(project["status"])),
        "Owner": visible(str(project["owner_id"])),
        "Updated (UTC)": _when(project["updated_at"]),
    }
    if wide:
        description = str(project["description"])
        first_line = description.split("\n", 1)[0]
        more = "…" if first_line != description else ""
        cells["Created (UTC)"] = _when(project["created_at"])
        cells["Description"] = visible(first_line) + more
    return cells


def _shrink(
    natural: Mapping[str, int], minimums: Mapping[str, int], room: int
) -> dict[str, int] | None:
    """Column widths that add up to at most ``room``, or ``None`` if they cannot.

    Only the columns in ``minimums`` shrink, never below their minimum (nor grow past
    their content): the widest is cut first, so a long name and a long description
    share what is left.
    """
    floors = {
        column: min(natural[column], minimums.get(column, natural[column])) for column in natural
    }
    if sum(floors.values()) > room:
        return None
    if sum(natural.values()) <= room:
        return dict(natural)

    def widths(cap: int) -> dict[str, int]:
        return {
            column: natural[column]
            if column not in minimums
            else max(floors[column], min(natural[column], cap))
            for column in natural
        }

    low, high = 0, max(natural.values())  # the widest cap that fits: widths(low) always does
    while low < high:
        middle = (low + high + 1) // 2
        if sum(widths(middle).values()) <= room:
            low = middle
        else:
            high = middle - 1
    fitted = widths(low)
    # What the cap leaves over goes to the columns it cut, left to right.
    spare = room - sum(fitted.values())
    for column in fitted:
        if spare <= 0:
            break
        if column in minimums and fitted[column] < natural[column]:
            fitted[column] += 1
            spare -= 1
    return fitted


def _plain_widths(natural: Mapping[str, int], width: int) -> dict[str, int]:
    """Plain columns for a terminal ``width`` wide, dropping columns until they fit."""
    shown = dict(natural)
    for dropped in (None, *DROP_ORDER):
        if dropped is not None:
            shown.pop(dropped, None)
        fitted = _shrink(shown, PLAIN_MIN_WIDTHS, width - PLAIN_GAP * (len(shown) - 1))
        if fitted is not None:
            return fitted
    # Narrower than an id and a short name: the id whole, the name what is left.
    return {"ID": natural["ID"], "Name": max(1, width - natural["ID"] - PLAIN_GAP)}


def _when(timestamp: Any) -> str:
    return visible(str(timestamp)[:19].replace("T", " "))
