"""The commands a shell runs most import none of the heavy modules watch and the server need."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("asyncio", "websockets", "rich.live")


@pytest.mark.parametrize("args", [["--help"], ["create", "x"], ["list"]])
def test_help_create_and_list_import_no_asyncio_websockets_or_live(args: list[str]) -> None:
    probe = (
        "import sys; from projctl.cli import app; "
        "from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, {args!r}); assert r.exit_code == 0, r.output; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_list_on_a_terminal_imports_no_asyncio_websockets_or_live() -> None:
    """On a terminal ``list`` prints a table, and pays for that table only."""
    create = subprocess.run(
        [sys.executable, "-m", "projctl", "create", "On a terminal"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert create.returncode == 0, create.stderr
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write("
        f"'loaded ' + repr(sorted(m for m in {HEAVY!r} if m in sys.modules)) + '\\n'))\n"
        "sys.argv = ['projctl', 'list']\n"
        "assert sys.stdout.isatty()\n"
        "from projctl.cli import main\n"
        "main()\n"
    )
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "loaded []"
