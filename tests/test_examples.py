"""The example CI script runs end to end against a real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from projctl.store import ProjectStore

from .conftest import PROJCTL

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ci.sh"


@pytest.mark.usefixtures("broadcasting")
def test_example_ci_script(bash: str, tmp_path: Path, store: ProjectStore) -> None:
    done = subprocess.run(
        [bash, str(EXAMPLE)],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(PROJCTL).parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completion event received" in done.stdout
    assert store.list_projects() == []  # cleaned up
    kinds = [(event["event_type"], event["data"].get("status")) for event in store.journal()]
    assert kinds == [
        ("project_created", "created"),
        ("project_updated", "in_progress"),
        ("project_updated", "in_progress"),
        ("project_updated", "in_progress"),
        ("project_updated", "in_progress"),
        ("project_updated", "completed"),
        ("project_deleted", None),
    ]
    assert not (tmp_path / "completed.jsonl").exists()
