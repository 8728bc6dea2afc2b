"""The commands a shell runs most import none of the heavy modules watch and the server need."""

from __future__ import annotations

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
