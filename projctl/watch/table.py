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
