"""Regenerate the shell completion scripts from the app itself.

    python completions/generate.py

Each script is what ``projctl --show-completion SHELL`` prints: a small shim that
asks ``projctl`` for candidates at every TAB, so completions always match the
installed version (commands, options, statuses, event types, existing project ids).
``tests/test_completions.py`` fails when a checked-in script is stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SCRIPTS = {"bash": "projctl.bash", "zsh": "projctl.zsh", "fish": "projctl.fish"}


def generate(shell: str) -> str:
    """The completion script for ``shell``, as the app generates it."""
    # Without this, typer ignores the shell named and detects the one running us.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "projctl", "--show-completion", shell],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def main() -> None:
    for shell, name in SCRIPTS.items():
        (FOLDER / name).write_text(generate(shell))
        print(f"wrote completions/{name}")


if __name__ == "__main__":
    main()
