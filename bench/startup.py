"""Benchmark: whole-process start-up of the installed `projctl`, beside `python -c "import typer"`.

Run by hand:  python bench/startup.py [--runs 9] [--quick]

Every figure is paired run by run with the reference, measured right before it in the
same loop, so drift on a shared machine cancels out; each line prints the medians of
both and the median of the per-run ratios. Targets (issue 23): `--help` <= 1.2x,
`create` against a running server holding 100 projects <= 1.4x, a `create` that finds
no server and starts one <= 1.5x. Completing a project id and `list` are shown
alongside. projctl's bytecode is compiled first, as an installed package has it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import bench_database, compile_projctl, start_server, timed_run

from projctl import runtime

PROJCTL = str(Path(sys.executable).with_name("projctl"))
REFERENCE = [sys.executable, "-c", "import typer"]


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run, its output discarded, bounded to a minute."""
    return timed_run(command, env, timeout=60, stderr=subprocess.DEVNULL)


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    runs: int,
    target: float | None,
    *,
    before: Callable[[], None] | None = None,
    after: Callable[[], None] | None = None,
) -> float:
    """Print and return the median ratio of ``command`` to the reference over ``runs``
    paired runs; ``before``/``after`` set up and clean up each run, untimed."""
    for _ in range(2):  # warm-up: caches, and a first server start's folder and log
        if before:
            before()
        timed(command, env)
        if after:
            after()
    timed(REFERENCE, env)
    ratios, seconds, references = [], [], []
    for _ in range(runs):
        if before:
            before()
        reference = timed(REFERENCE, env)
        figure = timed(command, env)
        if after:
            after()
        references.append(reference)
        seconds.append(figure)
        ratios.append(figure / reference)
    ratio = statistics.median(ratios)
    verdict = (
        "" if target is None else f"  target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
    )
    print(
        f"{name:<44} {statistics.median(seconds) * 1000:7.1f} ms   "
        f"reference {statistics.median(references) * 1000:6.1f} ms   ratio {ratio:4.2f}x{verdict}",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 runs: checks the benchmark runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    compile_projctl()
    with bench_database(100, idle_timeout=300) as bench:
        env = bench.env
        paths = runtime.runtime_paths(bench.db)
        bare = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(5))
        print(f"python -c pass: {bare * 1000:.1f} ms   runs: {runs}, paired with the reference")
        measure("projctl --help", [PROJCTL, "--help"], env, runs, 1.2)
        measure(
            "projctl create (server up, 100 projects)", [PROJCTL, "create", "bench"], env, runs, 1.4
        )

        def no_server() -> None:
            runtime.stop_server(paths)

        def server_up_then_stopped() -> None:
            # The command may leave its server starting: let it come up (untimed, so the
            # next pair is not measured beside a starting server), then stop it.
            if (
                runtime.poll_until(lambda: runtime.read_server_state(paths), time.monotonic() + 30)
                is None
            ):
                log = paths.log_file.read_text(errors="replace") if paths.log_file.exists() else ""
                raise SystemExit(
                    "the server that create started never came up; its log: "
                    + (log[-2000:] or "(empty)")
                )
            runtime.stop_server(paths)

        measure(
            "projctl create (no server: starts one)",
            [PROJCTL, "create", "bench"],
            env,
            runs,
            1.5,
            before=no_server,
            after=server_up_then_stopped,
        )
        start_server(bench.db, 300)
        completion = {
            **env,
            "_PROJCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": "projctl update proj_",
            "COMP_CWORD": "2",
        }
        measure("complete a project id (TAB)", [PROJCTL], completion, runs, None)
        measure("projctl list (piped, 100+ projects)", [PROJCTL, "list"], env, runs, None)


if __name__ == "__main__":
    main()
