"""A host shared with other programs and other users: what crosses the boundary is checked.

The database may have been written by another program; files beside it and paths to it
may be planted; another local user may try to read, block or feed what we do.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from projctl.store import ProjectStore
from projctl.watch import WatchState, render_projects_table, render_screen

from .test_cli_process import _run_on_a_terminal

Run = Callable[..., subprocess.CompletedProcess[str]]

HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[2J\u202egnp.exe"
SHOWN_NAME = "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202egnp.exe"


def _plant_control_characters(store: ProjectStore) -> str:
    """A project whose name and description another program filled with control characters."""
    project = store.create("placeholder", description="line one").project
    data = orjson.loads(store.path.read_bytes())
    record = data["projects"][project.project_id]
    record["name"] = HOSTILE_NAME
    record["description"] = "line one\nline two\x1b[31m"
    store.path.write_bytes(orjson.dumps(data))
    return project.project_id


def test_show_and_list_make_control_characters_visible(projctl: Run, store: ProjectStore) -> None:
    project_id = _plant_control_characters(store)
    shown = projctl("show", project_id)
    assert shown.returncode == 0
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert f"name         {SHOWN_NAME}\n" in shown.stdout
    assert "description  line one\nline two\\x1b[31m\n" in shown.stdout  # lines kept
    piped = projctl("list")
    assert piped.stdout.split("\t")[1] == SHOWN_NAME
    on_a_terminal = _run_on_a_terminal("list", env={"NO_COLOR": "1"})
    assert "\x1b]0;" not in on_a_terminal
    assert "\u202e" not in on_a_terminal
    assert "\\x1b]0;pwned" in on_a_terminal


def test_json_output_stays_exact(projctl: Run, store: ProjectStore) -> None:
    project_id = _plant_control_characters(store)
    assert orjson.loads(projctl("show", project_id, "--json").stdout)["name"] == HOSTILE_NAME
    assert orjson.loads(projctl("list", "--json").stdout)[0]["name"] == HOSTILE_NAME


def test_watch_screen_makes_control_characters_visible(store: ProjectStore) -> None:
    from projctl.subscribe import Message

    project_id = _plant_control_characters(store)
    record = store.get(project_id).to_dict()
    state = WatchState()
    snapshot = {"event_type": "snapshot", "seq": 1, "data": {"projects": [record]}}
    state.apply(Message(orjson.dumps(snapshot).decode(), snapshot), time.time())
    updated = {
        "event_type": "project_updated",
        "seq": 2,
        "timestamp": record["updated_at"],
        "data": {**record, "updated_fields": ["name\x1b[5m"]},
    }
    state.apply(Message(orjson.dumps(updated).decode(), updated), time.time())
    for renderable in (
        render_screen(state, time.time(), width=200, height=30),
        render_projects_table([record]),
    ):
        out = io.StringIO()
        Console(file=out, width=200, color_system=None).print(renderable)
        text = out.getvalue()
        for control in ("\x1b", "\u202e", "\x07"):
            assert control not in text
        assert "\\x1b]0;pwned" in text


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_database_that_is_not_a_regular_file_is_refused(
    projctl: Run, tmp_path: Path, kind: str
) -> None:
    import os

    if kind == "fifo":
        path = tmp_path / "db.fifo"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path / "db.dir"
        path.mkdir()
    else:
        path = Path("/dev/null")
    before = sorted(p.name for p in path.parent.iterdir()) if kind != "device" else []
    for args in (("create", "x"), ("list",), ("show", "p"), ("update", "p", "-n", "y")):
        done = projctl(*args, "--db", str(path), timeout=20)
        assert done.returncode == 4, (args, done.stderr)
        assert done.stderr == (
            f"Error: database {path} is not a regular file; it was left untouched\n"
        )
    if kind == "device":
        assert Path("/dev/null").is_char_device()
        assert not Path("/dev/null.lock").exists()
    else:
        assert sorted(p.name for p in path.parent.iterdir()) == before  # no lock, no temp file
