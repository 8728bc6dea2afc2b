"""A real terminal for the tests that need one: tmux runs a command, capture-pane reads
the screen as a person would see it."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator

from .conftest import PROJCTL, require_tool, wait_until


class Terminal:
    """One tmux session on a private server, ``width`` x ``height`` (110 x 30 unless told)."""

    def __init__(self, tmux: str, command: str, width: int = 110, height: int = 30) -> None:
        self.tmux = tmux
        self.socket = f"projctl-test-{os.getpid()}-{time.monotonic_ns()}"
        self._tmux("new-session", "-d", "-s", "watch", "-x", str(width), "-y", str(height), command)

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


@contextlib.contextmanager
def terminals() -> Iterator[Callable[..., Terminal]]:
    """Open terminals (``open_terminal(command, width=..., height=...)``); all closed after."""
    tmux = require_tool("tmux")  # skip (or fail under CI) before the test does any work
    opened: list[Terminal] = []

    def open_terminal(command: str, width: int = 110, height: int = 30) -> Terminal:
        opened.append(Terminal(tmux, command, width, height))
        return opened[-1]

    try:
        yield open_terminal
    finally:
        for term in opened:
            term.close()


def projctl_command(*args: str) -> str:
    """``projctl ARGS`` for a terminal, in the test's environment: then its exit status,
    and the pane stays."""
    keep = {
        name: os.environ[name]
        for name in ("PROJCTL_DB", "PROJCTL_HOST", "PROJCTL_PORT", "PROJCTL_OWNER", "HOME")
    }
    keep.update(COLUMNS="80", LINES="24")  # exported once by a shell, stale after a resize
    environment = " ".join(f"{name}={shlex.quote(value)}" for name, value in keep.items())
    return f"env {environment} {shlex.join([PROJCTL, *args])}; echo EXIT=$?; sleep 60"
