"""The benchmarks still run (tiny sizes). Targets are read from the full run, never timed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
@pytest.mark.timeout(900)  # every benchmark, one after another: minutes on a busy machine
def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = ("startup", "write_scaling", "fanout", "e2e", "watch_burst", "memory", "dashboard")
    for name in (*names, "remote"):
        assert f"## {name}\n" in done.stdout
    for figure in ("projctl --help", "projctl create", "deliv/s", "arrival", "on screen", "RSS"):
        assert figure in done.stdout, figure
