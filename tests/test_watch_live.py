"""``projctl watch`` on a real terminal: tmux runs it, capture-pane reads the screen."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from ._terminal import Terminal, projctl_command, terminals

# The live screen under tmux, whole runs at two terminal sizes (~35 s of the suite): in the
# slow run, which CI runs every time too.
pytestmark = pytest.mark.slow

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    with terminals() as open_terminal:
        yield open_terminal


def row_of(screen: str, project_id: str) -> str:
    """The table row of ``project_id`` (not of ``<project_id>_2``), or ``""``."""
    return next((line for line in screen.splitlines() if line.startswith(project_id + " ")), "")


def row_after(screen: str, project_id: str) -> str:
    """The line that names ``project_id`` (not ``<project_id>_2``) anywhere, or ``""``."""
    return next((line for line in screen.splitlines() if f" {project_id} " in line), "")


def watch_command(*args: str) -> str:
    """``projctl watch ARGS`` for a terminal: then its exit status, and the pane stays."""
    return projctl_command("watch", *args)


def exited(term: Terminal, timeout: float = 15) -> str:
    """The screen once watch has exited, checked to be the terminal's own again."""
    screen = term.wait_for(lambda s: "EXIT=" in s, "watch exiting", timeout=timeout)
    assert "Traceback" not in screen
    assert "Ctrl-C to quit" not in screen  # the full-screen view is gone: Live exited
    return screen


@pytest.mark.usefixtures("broadcasting")
def test_live_table_follows_create_update_delete(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    term = terminal(watch_command())
    term.wait_for(lambda s: "● connected" in s, "the connection")

    project_id = projctl("create", "Shown live", "--owner", "ann").stdout.strip()
    screen = term.wait_for(lambda s: "new · " in row_of(s, project_id), "the new row")
    assert "Shown live" in row_of(screen, project_id)
    assert "created" in row_of(screen, project_id)
    assert "1 project ·" in screen

    assert projctl("update", project_id, "--status", "in_progress").returncode == 0
    screen = term.wait_for(lambda s: "in_progress" in row_of(s, project_id), "the new status")
    assert "status created → in_progress" in row_of(screen, project_id)
    assert "project_updated" in screen

    assert projctl("delete", project_id).returncode == 0
    term.wait_for(lambda s: "del · " in row_of(s, project_id), "the deleted row")
    term.wait_for(lambda s: row_of(s, project_id) == "", "the row gone", timeout=20)

    # The table follows the terminal's size, whatever COLUMNS and LINES say: a narrow
    # window drops the Type column to leave the name room, a wide one brings it back.
    kept = projctl("create", "Kept on screen, with a name that needs room").stdout.strip()
    term.wait_for(lambda s: "Type" in s and row_of(s, kept), "the wide layout")
    term.resize(70, 20)
    screen = term.wait_for(lambda s: "Type" not in s and "Status" in s, "the narrow layout")
    assert "Kept on screen" in row_of(screen, kept)
    term.resize(110, 30)
    term.wait_for(lambda s: "Type" in s, "the wide layout again")

    term.press("C-c")
    assert "EXIT=130" in exited(term)


@pytest.mark.usefixtures("broadcasting")
@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_an_update_says_what_changed_old_to_new_on_a_terminal(
    projctl: Run, terminal: Callable[..., Terminal], width: int, height: int
) -> None:
    name = "Quarterly revenue dashboard for the northern region"
    project_id = projctl("create", name, "--owner", "ann").stdout.strip()
    term = terminal(watch_command(), width=width, height=height)
    term.wait_for(lambda s: "● connected" in s and row_of(s, project_id), "the connection")
    assert projctl("update", project_id, "--owner", "bob", "-s", "in_progress").returncode == 0
    screen = term.wait_for(lambda s: "→" in row_of(s, project_id), "the change")
    # At 80 columns Owner is not on screen: Last change says how it changed.
    assert ("Owner" in screen) is (width == 160)
    assert "owner ann → bob" in row_of(screen, project_id)
    assert "owner ann → bob" in row_after(screen, project_id)  # and the feed
    assert "owner_id" not in screen
    assert all(len(line) <= width for line in screen.splitlines())
    term.press("C-c")
    assert "EXIT=130" in exited(term)


@pytest.mark.usefixtures("broadcasting")
def test_count_exits_zero_after_matching_events_on_a_terminal(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    """--count means the same on a terminal as in JSON mode, --timeout or not."""
    term = terminal(watch_command("--owner", "ann", "--count", "1", "--timeout", "60"))
    term.wait_for(lambda s: "● connected" in s, "the connection")
    assert "filter owner=ann · until 1 matching event (0 so far)" in term.screen()

    assert projctl("create", "Not a match", "--owner", "bob").returncode == 0
    screen = term.wait_for(lambda s: "0 of 1 event matched" in s, "the other event")
    assert "EXIT=" not in screen
    match = projctl("create", "The match", "--owner", "ann").stdout.strip()
    screen = exited(term)
    assert "EXIT=0" in screen
    # The screen is gone, the event it ended on stays (the other one never matched).
    assert "project_created" in row_after(screen, match)
    assert "The match" in row_after(screen, match)
    assert "Not a match" not in screen


@pytest.mark.usefixtures("broadcasting")
@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_count_timing_out_on_a_terminal_leaves_the_matches_and_says_how_many(
    projctl: Run, terminal: Callable[..., Terminal], width: int, height: int
) -> None:
    assert projctl("create", "server please").returncode == 0
    term = terminal(watch_command("--count", "2", "--timeout", "8"), width=width, height=height)
    term.wait_for(lambda s: "● connected" in s, "the connection")
    match = projctl("create", "First match").stdout.strip()
    term.wait_for(lambda s: "(1 so far)" in s, "the first match counted")
    screen = exited(term)
    assert "EXIT=124" in screen
    assert "Error: timed out after 8s: 1 of 2 events" in screen
    line = row_after(screen, match)
    assert "created" in line  # `project_created`, or `created` at 80 columns
    assert "First match" in line
    assert all(len(row) <= width for row in screen.splitlines())


@pytest.mark.usefixtures("broadcasting")
def test_since_replays_into_the_table_and_counts_on_a_terminal(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    """--since on a terminal: the table starts from the projects as they are and the events
    after SEQ are replayed onto it as changes, counted against --count."""
    ids = [projctl("create", name).stdout.strip() for name in ("first", "second", "third")]
    term = terminal(watch_command("--since", "1"))
    screen = term.wait_for(lambda s: "3 projects · 2 events seen · last seq 3" in s, "the replay")
    first, second, third = (row_of(screen, project_id) for project_id in ids)
    assert "new · " in second
    assert "new · " in third
    assert "new · " not in first
    assert first.rstrip().endswith(("just now", "ago"))  # loaded, aged by its updated_at
    assert screen.index(third) < screen.index(second) < screen.index(first)
    term.press("C-c")
    assert "EXIT=130" in exited(term)

    counted = terminal(watch_command("--since", "1", "--count", "2"))
    assert "EXIT=0" in exited(counted)


@pytest.mark.usefixtures("broadcasting")
def test_timeout_without_count_exits_zero_on_a_terminal(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    assert projctl("create", "server please").returncode == 0
    term = terminal(watch_command("--timeout", "2"))
    screen = exited(term)  # seeing it connect first would race the 2 s
    assert "EXIT=0" in screen
    assert "Error" not in screen


@pytest.mark.usefixtures("broadcasting")
def test_timeout_with_count_and_no_event_exits_124_on_a_terminal(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    assert projctl("create", "server please").returncode == 0
    term = terminal(watch_command("--count", "1", "--timeout", "2"))
    screen = exited(term)  # seeing it connect first would race the 2 s
    assert "EXIT=124" in screen
    assert "Error: timed out after 2s: 0 of 1 event" in screen
