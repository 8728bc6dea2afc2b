"""The benchmarks still run (tiny sizes). Targets are read from the full run, never timed here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: Each benchmark, as `bench/run.py` names it, and figures its output must show.
FIGURES = {
    "startup": ("projctl --help", "projctl create"),
    "write_scaling": ("projctl create",),
    "fanout": ("deliv/s",),
    "e2e": ("arrival",),
    "watch_burst": ("on screen",),
    "memory": ("RSS",),
    "flood": ("/healthz, a new connection every", "the loop's longest turn"),
    "dashboard": ("on screen",),
    "remote": ("projctl create", "remote - local", "creates/s", "idle subscribers", "RSS"),
    "cluster": ("cluster / local (median)", "gateway, R3 cluster", "events delivered/s"),
}


@pytest.mark.slow
@pytest.mark.alone
@pytest.mark.timeout(900)  # one benchmark: up to minutes on a busy machine
@pytest.mark.parametrize("name", FIGURES)
def test_benchmark_runs_in_quick_mode(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"## {name}\n" in done.stdout
    for figure in FIGURES[name]:
        assert figure in done.stdout, figure


def test_every_benchmark_is_tested() -> None:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert list(FIGURES) == run.BENCHMARKS
