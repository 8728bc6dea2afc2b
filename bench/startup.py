"""Benchmark: whole-process start-up of the installed `projctl`, beside `python -c "import typer"`.

Run by hand:  python bench/startup.py [--runs 21] [--quick]

Each figure is the median of several whole-process runs after a warm-up, and
each ratio is paired run by run with the reference measured in the same loop,
so machine drift cancels out. Targets (issue 6): `--help` <= 1.2x, `create`
against a running server holding 100 projects <= 1.5x, completing a project
id <= 1.2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from projctl import client
from projctl.store import ProjectStore

PROJCTL = str(Path(sys.executable).with_name("projctl"))
REFERENCE = [sys.executable, "-c", "import typer"]


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run. A watchdog bounds it: ``wait(timeout=...)`` would poll in
    steps of up to 50 ms and round every figure up to the next step."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        returncode = process.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"{command} failed with {returncode}")
    return elapsed


def measure(
    name: str, command: list[str], env: dict[str, str], runs: int, target: float | None
) -> None:
    timed(command, env)  # warm-up
    timed(REFERENCE, env)
    ratios, seconds, references = [], [], []
    for _ in range(runs):
        reference = timed(REFERENCE, env)
        figure = timed(command, env)
        references.append(reference)
        seconds.append(figure)
        ratios.append(figure / reference)
    ratio = statistics.median(ratios)
    verdict = (
        "" if target is None else f"  target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
    )
    print(
        f"{name:<38} {statistics.median(seconds) * 1000:7.1f} ms   "
        f"reference {statistics.median(references) * 1000:6.1f} ms   ratio {ratio:4.2f}x{verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="3 runs: checks the benchmark runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    folder = Path(tempfile.mkdtemp(prefix="projctl-bench-"))
    db = folder / "projects.json"
    env = {
        **os.environ,
        "PROJCTL_DB": str(db),
        "PROJCTL_HOST": "127.0.0.1",
        "PROJCTL_PORT": "0",
        "PROJCTL_IDLE_TIMEOUT": "300",
    }
    store = ProjectStore(db)
    for number in range(100):
        store.create(f"project {number}")
    os.environ.update(env)
    client.ensure_server(client.runtime_paths(db), client.StartOptions("127.0.0.1", 0, 300))
    try:
        bare = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(5))
        print(f"python -c pass: {bare * 1000:.1f} ms")
        measure("projctl --help", [PROJCTL, "--help"], env, runs, 1.2)
        measure(
            "projctl create (server up, 100 projects)", [PROJCTL, "create", "bench"], env, runs, 1.5
        )
        completion = {
            **env,
            "_PROJCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": "projctl update proj_",
            "COMP_CWORD": "2",
        }
        measure("complete a project id (TAB)", [PROJCTL], completion, runs, 1.2)
        measure("projctl list (piped, 100+ projects)", [PROJCTL, "list"], env, runs, None)
    finally:
        client.stop_server(db)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
