"""``projctl list``'s table: one line per project at any width, ids whole, long text cut
with an ellipsis in the table only."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from rich.console import Console

from projctl.watch import render_projects_table

from ._terminal import Terminal, projctl_command, terminals

Run = Callable[..., subprocess.CompletedProcess[str]]

LONG_NAME = "Quarterly billing reconciliation for the northern region, " * 3
IDS = ("proj_20261204_034733", "proj_20261204_034733_2")


def _project(project_id: str, name: str, **fields: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "name": name,
        "type": "api",
        "status": "in_progress",
        "owner_id": "alice",
        "created_at": "2026-12-04T03:47:33.000000Z",
        "updated_at": "2026-12-04T03:47:33.000000Z",
        "description": "",
        **fields,
    }


PROJECTS = [
    _project(IDS[0], LONG_NAME.strip(), description="first line\nsecond line"),
    _project(
        IDS[1], "Short", owner_id="a-very-long-owner-name-from-the-company-directory-" + "x" * 20
    ),
]


def rendered(width: int | None, *, wide: bool = False) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width or 10_000, color_system=None)
    console.print(render_projects_table(PROJECTS, wide=wide, width=width))
    return out.getvalue().splitlines()


def row_of(lines: list[str], project_id: str) -> str:
    return next(line for line in lines if f"{project_id} " in line)


@pytest.mark.parametrize("wide", [False, True])
def test_at_80_columns_plain_columns_one_line_each_ids_whole(wide: bool) -> None:
    lines = rendered(80, wide=wide)
    assert all(len(line) <= 80 for line in lines)
    assert not any(mark in "".join(lines) for mark in "┏┃│└")  # no box
    assert len(lines) == 5  # title, header, rule, one line per project
    first, second = row_of(lines, IDS[0]), row_of(lines, IDS[1])
    assert first.startswith(IDS[0] + " ")
    assert second.startswith(IDS[1] + " ")
    assert "Quarterly" in first
    assert "…" in first
    assert "in_progress" in first
    assert "2026-12-04 03:47:33" in first


def test_at_160_columns_a_boxed_table_with_the_long_text_cut() -> None:
    lines = rendered(160)
    assert all(len(line) <= 160 for line in lines)
    assert lines[1].startswith("┏")
    assert len(lines) == 7  # title, box top, header, rule, two projects, box bottom
    first, second = row_of(lines, IDS[0]), row_of(lines, IDS[1])
    assert f"│ {IDS[0]} " in first
    assert "Quarterly billing reconciliation for the n" in first
    assert "…" in first
    assert "a-very-long-owner-name-from-the-company" in second
    assert "…" in second  # the owner too
    for heading in ("ID", "Name", "Type", "Status", "Owner", "Updated (UTC)"):
        assert heading in lines[2]


def test_wide_at_160_columns_cuts_names_to_keep_the_box() -> None:
    lines = rendered(160, wide=True)
    assert all(len(line) <= 160 for line in lines)
    assert len(lines) == 7
    first = row_of(lines, IDS[0])
    assert "│ Quarterly billing reconciliat… │" in first
    assert "│ first line… │" in first  # the first line of a longer description


def test_with_no_width_nothing_is_cut() -> None:
    """In a pipe (``-o table``) the table takes what its cells need."""
    lines = rendered(None)
    assert LONG_NAME.strip() in row_of(lines, IDS[0])
    assert PROJECTS[1]["owner_id"] in row_of(lines, IDS[1])


def test_tsv_json_and_names_are_never_cut(cli: Callable[..., Any]) -> None:
    long_name = LONG_NAME.strip()
    project_id = cli("create", long_name).stdout.strip()
    assert cli("list").stdout.split("\t")[1] == long_name
    assert orjson.loads(cli("list", "--json").stdout)[0]["name"] == long_name
    assert cli("list", "-o", "name").stdout == project_id + "\n"


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    with terminals() as open_terminal:
        yield open_terminal


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_list_on_a_terminal_keeps_ids_whole_and_names_on_one_line(
    projctl: Run, terminal: Callable[..., Terminal], width: int, height: int
) -> None:
    long_name = LONG_NAME.strip()
    ids = [projctl("create", name).stdout.strip() for name in (long_name, "Short one")]
    term = terminal(projctl_command("list"), width=width, height=height)
    screen = term.wait_for(lambda s: "EXIT=" in s, "list exiting")
    assert "EXIT=0" in screen
    lines = screen.splitlines()
    for project_id in ids:
        rows = [line for line in lines if f"{project_id} " in line]
        assert len(rows) == 1, screen  # the id whole, on one line...
        row = rows[0]
        assert row.startswith((project_id + " ", f"│ {project_id} ")), screen
    # ... and the long name cut to that line.
    long_row = next(line for line in lines if f"{ids[0]} " in line)
    assert ("Quarterly billing reconciliation" in long_row) is (width == 160)
    assert "…" in long_row
    assert len([line for line in lines if "Quarterly" in line]) == 1
    assert ("┏" in screen) is (width == 160)
