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
import statistics
import subprocess
import sys
from pathlib import Path

from _common import bench_database, timed_run

PROJCTL = str(Path(sys.executable).with_name("projctl"))
REFERENCE = [sys.executable, "-c", "import typer"]


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run, its output discarded, bounded to a minute."""
    return timed_run(command, env, timeout=60, stderr=subprocess.DEVNULL)


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
    with bench_database(100, idle_timeout=300) as bench:
        env = bench.env
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


if __name__ == "__main__":
    main()
