"""Quiet correctness in the Python API: leaving a feed early, names in get(), no tokens in repr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import projctl

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import projctl

    db = projctl.open_database(sys.argv[1])
    db.create("A")
    db.create("B")

    async def first():
        async for message in db.subscribe(since=0):
            return message

    async def leave_with_break():
        seen = 0
        async for message in db.subscribe(since=0):
            seen += 1
            if seen == 2:
                break
        return seen

    async def leave_with_an_error():
        try:
            async for message in db.subscribe(since=0):
                raise LookupError("done")
        except LookupError:
            return "raised"

    async def several_in_one_loop():
        return [await first(), await leave_with_break(), await leave_with_an_error()]

    async def closed_by_a_block():
        async with db.subscribe(since=0) as feed:
            async for message in feed:
                return message["seq"]

    print(asyncio.run(first())["seq"])
    print(asyncio.run(leave_with_break()))
    print(asyncio.run(leave_with_an_error()))
    print(len(asyncio.run(several_in_one_loop())))
    print(asyncio.run(closed_by_a_block()))
    running = db.ensure_server()
    stopped = db.stop_server()
    shown = repr(stopped) + repr(running)
    secrets = [t for t in (running.token, running.subscriber_token, running.write_token) if t]
    print("tokens shown" if any(secret in shown for secret in secrets) else "no tokens shown")
    """
)


@pytest.mark.usefixtures("broadcasting")
def test_leaving_a_feed_early_closes_it_quietly(tmp_path: Path, db_path: Path) -> None:
    script = tmp_path / "feed.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script), str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1", "2", "raised", "3", "1", "no tokens shown"]
    # -X dev also reports any step slower than 0.1 s ("Executing <Task ...> took 0.2
    # seconds"), which a loaded machine makes of an import: a timing note, not an error.
    slow_step = re.compile(r"Executing <.*> took \d+\.\d+ seconds")
    errors = [line for line in done.stderr.splitlines() if not slow_step.fullmatch(line)]
    assert errors == []  # no "aclose(): ... already running", no "Task was destroyed"


def test_get_takes_a_name_and_an_id_prefix(db_path: Path) -> None:
    db = projctl.open_database(db_path, broadcast=False)
    project_id = db.create("Billing API").project.project_id
    assert db.get("Billing API").project_id == project_id
    assert db.get(project_id[:-2]).project_id == project_id
    assert db.get(project_id).name == "Billing API"
    with pytest.raises(projctl.ProjectNotFoundError):
        db.get("Nobody")
