"""Benchmark: `projctl create` with 100 to 100,000 existing projects, beside sqlite3's floor.

Run by hand:  python bench/write_scaling.py [--runs 7] [--quick]

TinyDB keeps the whole database in one JSON file, so every change reads,
parses, re-encodes and rewrites all of it (atomically: temp file, fsync,
rename, under the lock). This measures what that costs as the file grows, as
whole `projctl create --no-broadcast` processes (median of --runs after a
warm-up) and in-process (`ProjectStore.create` alone), and prints sqlite3's
open + insert + commit on a table of the same size as the floor.
Targets (issue 6): at 10,000 projects <= 1.3x the 100 figure; at 100,000 <= 3x.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import orjson
from _common import bench_folder, timed_run

from projctl.store import ProjectStore

PROJCTL = str(Path(sys.executable).with_name("projctl"))
TARGETS = {10_000: 1.3, 100_000: 3.0}


def build_database(path: Path, count: int) -> None:
    """A projctl database with ``count`` projects and a full journal, written in one go.

    Creating 100,000 projects one command at a time would rewrite the file
    100,000 times; the benchmark only needs the file, in the format the store writes.
    """
    stamp = "2023-11-19T12:00:00.000000"
    projects = {}
    for number in range(count):
        project_id = f"proj_20231119_{number // 100:04d}{number % 100:02d}"
        projects[project_id] = {
            "project_id": project_id,
            "name": f"Project number {number}",
            "type": "api",
            "status": "in_progress",
            "owner_id": f"owner{number % 50}",
            "description": "A project of the benchmark, with a sentence of description.",
            "created_at": stamp,
            "updated_at": stamp,
        }
    journal = {
        str(seq): {
            "event_type": "project_created",
            "timestamp": stamp,
            "seq": seq,
            "data": projects[next(iter(projects))],
        }
        for seq in range(max(1, count - 999), count + 1)
    }
    meta = {
        "format": "projctl",
        "schema": 1,
        "database_id": "0123456789abcdef",
        "last_issued": None,
        "last_seq": count,
    }
    path.write_bytes(orjson.dumps({"projects": projects, "journal": journal, "meta": {"1": meta}}))


def whole_process(db: Path, runs: int) -> float:
    env = {**os.environ, "PROJCTL_DB": str(db), "PROJCTL_NO_BROADCAST": "1"}
    figures = []
    for number in range(runs + 1):
        figure = timed_run([PROJCTL, "create", f"bench {number}"], env, timeout=120)
        if number:  # the first run warms the page cache
            figures.append(figure)
    return statistics.median(figures)


def in_process(db: Path, runs: int) -> float:
    store = ProjectStore(db)
    figures = []
    for number in range(runs):
        started = time.perf_counter()
        store.create(f"in-process {number}", owner_id="bench")
        figures.append(time.perf_counter() - started)
    return statistics.median(figures)


def json_floor(db: Path, runs: int) -> float:
    """The least any whole-file JSON store can do per change: parse, encode, write, fsync."""
    figures = []
    for _ in range(runs):
        started = time.perf_counter()
        data = orjson.loads(db.read_bytes())
        payload = orjson.dumps(data)
        temp = db.with_suffix(".floor")
        with open(temp, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, db.with_suffix(".floor-done"))
        figures.append(time.perf_counter() - started)
    return statistics.median(figures)


def sqlite_floor(folder: Path, count: int, runs: int) -> float:
    path = folder / f"floor-{count}.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE projects (project_id TEXT PRIMARY KEY, name TEXT, type TEXT, "
            "status TEXT, owner_id TEXT, description TEXT, created_at TEXT, updated_at TEXT)"
        )
        connection.executemany(
            "INSERT INTO projects VALUES (?, ?, 'api', 'created', 'o', 'd', 't', 't')",
            ((f"proj_{number}", f"Project {number}") for number in range(count)),
        )
    figures = []
    for number in range(runs):
        started = time.perf_counter()
        connection = sqlite3.connect(path)
        connection.execute(
            "INSERT INTO projects VALUES (?, 'x', 'api', 'created', 'o', 'd', 't', 't')",
            (f"proj_new_{number}",),
        )
        connection.commit()
        connection.close()
        figures.append(time.perf_counter() - started)
    return statistics.median(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks it runs")
    args = parser.parse_args()
    sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000, 100_000]
    runs = 2 if args.quick else args.runs
    with bench_folder() as folder:
        print(
            f"{'projects':>9} {'file':>9} {'projctl create':>15} {'ratio':>6} "
            f"{'store.create':>13} {'JSON floor':>11} {'sqlite3 floor':>14}"
        )
        base = None
        for count in sizes:
            db = folder / f"db-{count}.json"
            build_database(db, count)
            size = db.stat().st_size
            process_time = whole_process(db, runs)
            store_time = in_process(db, runs)
            whole_file = json_floor(db, runs)
            floor = sqlite_floor(folder, count, runs)
            base = base or process_time
            ratio = process_time / base
            target = TARGETS.get(count)
            verdict = (
                ""
                if target is None
                else f"  target <= {target}x: {'met' if ratio <= target else 'MISSED'}"
            )
            print(
                f"{count:>9,} {size / 1e6:>7.1f}MB {process_time * 1000:>12.1f} ms {ratio:>5.2f}x "
                f"{store_time * 1000:>10.1f} ms {whole_file * 1000:>8.1f} ms "
                f"{floor * 1000:>11.2f} ms{verdict}"
            )


if __name__ == "__main__":
    main()
