"""``projctl list``'s table on a terminal: light on purpose (no asyncio, websockets or
``rich.live``), so ``list`` pays only for the table it prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def render_projects_table(projects: Sequence[Mapping[str, Any]], *, wide: bool = False) -> Table:
    """``projctl list`` on a terminal: every project, status coloured. ``wide`` (``-o wide``)
    adds when each was created and the first line of its description."""
    table = Table(title=plural(len(projects), "project"))
    columns = ["ID", "Name", "Type", "Status", "Owner", "Updated (UTC)"]
    if wide:
        columns += ["Created (UTC)", "Description"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for project in projects:
        status = str(project["status"])
        cells = [
            Text(visible(str(project["project_id"]))),
            Text(visible(str(project["name"]))),
            Text(visible(str(project["type"]))),
            Text(visible(status), style=STATUS_STYLES.get(status, "")),
            Text(visible(str(project["owner_id"]))),
            Text(_when(project["updated_at"])),
        ]
        if wide:
            description = str(project["description"])
            first_line = description.split("\n", 1)[0]
            more = "…" if first_line != description else ""
            cells += [Text(_when(project["created_at"])), Text(visible(first_line) + more)]
        table.add_row(*cells)
    return table


def _when(timestamp: Any) -> str:
    return visible(str(timestamp)[:19].replace("T", " "))
