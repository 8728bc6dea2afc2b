"""Run every benchmark of projctl and print its figures beside their references.

    python bench/run.py            # the full run recorded in bench/RESULTS.md (several minutes)
    python bench/run.py --quick    # tiny sizes: checks that every benchmark still runs

Each benchmark is its own script (start-up, write scaling, fan-out, end to end,
watch burst, memory, a flood of snapshot clients, the dashboard in Chromium, the team
server, a three-node NATS cluster), each run as a separate process so that one cannot
warm up or slow down the next. Targets are checked by reading the figures, never by
timed unit tests; `tests/test_bench.py` only runs `--quick` so the scripts cannot rot.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "startup",
    "write_scaling",
    "fanout",
    "e2e",
    "watch_burst",
    "memory",
    "flood",
    "dashboard",
    "remote",
    "cluster",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check they run")
    parser.add_argument("only", nargs="*", choices=[*BENCHMARKS, []], help="run only these")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"\n## {name}", flush=True)
        started = time.monotonic()
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        done = subprocess.run(command, timeout=1800, check=False)
        print(f"({name}: {time.monotonic() - started:.0f}s)", flush=True)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
