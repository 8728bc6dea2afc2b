"""``projctl watch`` on a real terminal: tmux runs it, capture-pane reads the screen."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from .conftest import PROJCTL, require_tool, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]


class Terminal:
    """One tmux session on a private server, 110 x 30."""

    def __init__(self, tmux: str, command: str) -> None:
        self.tmux = tmux
        self.socket = f"projctl-test-{os.getpid()}-{time.monotonic_ns()}"
        self._tmux("new-session", "-d", "-s", "watch", "-x", "110", "-y", "30", command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "watch")

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 15) -> str:
        """The screen, once ``condition`` holds for it; the last screen in the failure."""

        def shown() -> str:
            text = self.screen()
            return text if condition(text) else ""

        try:
            return wait_until(shown, timeout=timeout, what=f"screen showing {what}")
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{self.screen()}") from None

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "watch", "-x", str(width), "-y", str(height))

    def press(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "watch", *keys)

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10
        )


@pytest.fixture
def terminal() -> Iterator[Callable[[str], Terminal]]:
    tmux = require_tool("tmux")  # skip (or fail under CI) before the test does any work
    opened: list[Terminal] = []

    def open_terminal(command: str) -> Terminal:
        opened.append(Terminal(tmux, command))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def row_of(screen: str, project_id: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(project_id)), "")


@pytest.mark.usefixtures("broadcasting")
def test_live_table_follows_create_update_delete(
    projctl: Run, terminal: Callable[[str], Terminal]
) -> None:
    keep = {
        name: os.environ[name]
        for name in ("PROJCTL_DB", "PROJCTL_HOST", "PROJCTL_PORT", "PROJCTL_OWNER", "HOME")
    }
    keep.update(COLUMNS="80", LINES="24")  # exported once by a shell, stale after a resize
    environment = " ".join(f"{name}={shlex.quote(value)}" for name, value in keep.items())
    term = terminal(f"env {environment} {shlex.quote(PROJCTL)} watch; echo EXIT=$?; sleep 60")
    term.wait_for(lambda s: "● connected" in s, "the connection")

    project_id = projctl("create", "Shown live", "--owner", "ann").stdout.strip()
    screen = term.wait_for(lambda s: "NEW" in row_of(s, project_id), "the new row")
    assert "Shown live" in row_of(screen, project_id)
    assert "created" in row_of(screen, project_id)
    assert "1 project ·" in screen

    assert projctl("update", project_id, "--status", "in_progress").returncode == 0
    screen = term.wait_for(lambda s: "in_progress" in row_of(s, project_id), "the new status")
    assert "updated status" in row_of(screen, project_id)
    assert "project_updated" in screen

    assert projctl("delete", project_id).returncode == 0
    term.wait_for(lambda s: "DELETED" in row_of(s, project_id), "the deleted row")
    term.wait_for(lambda s: row_of(s, project_id) == "", "the row gone", timeout=20)

    # The table follows the terminal's size, whatever COLUMNS and LINES say:
    # a narrow window drops the Owner column, a wide one brings it back.
    assert "Owner" in term.screen()
    term.resize(70, 20)
    term.wait_for(lambda s: "Owner" not in s and "Status" in s, "the narrow layout")
    term.resize(110, 30)
    term.wait_for(lambda s: "Owner" in s, "the wide layout again")

    term.press("C-c")
    screen = term.wait_for(lambda s: "EXIT=" in s, "watch exiting")
    assert "EXIT=130" in screen
    assert "Traceback" not in screen
