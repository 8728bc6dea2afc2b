"""Set-up shared by the benchmark scripts: a throwaway database (and its server), timed runs.

The scripts run as ``python bench/X.py``, so ``bench/`` is on ``sys.path`` and they
import this module as ``from _common import ...``. It is not part of projctl.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from projctl import runtime
from projctl.store import ProjectStore

#: Every server a benchmark starts binds loopback with a free port.
HOST = "127.0.0.1"


def compile_projctl() -> None:
    """Cache projctl's bytecode, as an installed package has it: without it
    (PYTHONDONTWRITEBYTECODE in a source checkout) every process compiles each module again,
    and a whole-process figure measures the compiler."""
    import compileall

    compileall.compile_dir(str(Path(runtime.__file__).parent.parent), quiet=1)


@contextlib.contextmanager
def bench_folder() -> Iterator[Path]:
    """A new temporary folder, removed with everything in it on exit."""
    folder = Path(tempfile.mkdtemp(prefix="projctl-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_server(db: Path, idle_timeout: float) -> runtime.ServerState:
    """projctl's server for ``db`` (on ``HOST``, a free port), started if none runs yet."""
    return runtime.ensure_server(
        runtime.runtime_paths(db), runtime.StartOptions(HOST, 0, idle_timeout)
    )


@dataclass(frozen=True)
class BenchDatabase:
    """A throwaway projctl database, as :func:`bench_database` yields it."""

    #: The temporary folder holding the database (and anything else the benchmark puts there).
    folder: Path
    #: The database file, ``folder / "projects.json"``.
    db: Path
    #: ``os.environ`` plus the ``PROJCTL_*`` variables naming this database: for child processes.
    env: dict[str, str]
    #: The server started on entry; ``None`` with ``serve=False``.
    info: runtime.ServerState | None

    @property
    def server(self) -> runtime.ServerState:
        """``info``, for a database opened with ``serve=True``."""
        if self.info is None:
            raise RuntimeError("no server was started for this database (serve=False)")
        return self.info


def _default_project(store: ProjectStore, number: int) -> object:
    return store.create(f"project {number}", owner_id="bench")


@contextlib.contextmanager
def bench_database(
    projects: int = 0,
    *,
    serve: bool = True,
    idle_timeout: float = 600,
    make_project: Callable[[ProjectStore, int], object] | None = None,
) -> Iterator[BenchDatabase]:
    """A new database in a temporary folder, with ``projects`` projects and (by default) a server.

    On entry: sets ``PROJCTL_DB``, ``PROJCTL_HOST=127.0.0.1``, ``PROJCTL_PORT=0`` and
    ``PROJCTL_IDLE_TIMEOUT=idle_timeout`` in ``os.environ`` (left set on exit), creates
    the projects one ``ProjectStore`` call each, ``make_project(store, number)`` for
    ``number`` in ``range(projects)`` (default: ``store.create(f"project {number}")``),
    then with ``serve`` starts the database's server with that idle timeout.
    On exit, however the block ends: stops whatever server runs for the database
    (also one started later, by :func:`start_server` or a projctl command) and
    removes the folder.
    """
    with bench_folder() as folder:
        db = folder / "projects.json"
        env = {
            # The real path: a run from a test suite that turned broadcasting off measures
            # it with broadcasting on all the same.
            **{name: value for name, value in os.environ.items() if name != "PROJCTL_NO_BROADCAST"},
            "PROJCTL_DB": str(db),
            "PROJCTL_HOST": HOST,
            "PROJCTL_PORT": "0",
            "PROJCTL_IDLE_TIMEOUT": f"{idle_timeout:g}",
        }
        # In this process too: the client calls a benchmark makes (and the servers and
        # commands it spawns without an explicit env) find the same database and loopback.
        os.environ.update(env)
        os.environ.pop("PROJCTL_NO_BROADCAST", None)
        try:
            store = ProjectStore(db)
            create = make_project or _default_project
            for number in range(projects):
                create(store, number)
            info = start_server(db, idle_timeout) if serve else None
            yield BenchDatabase(folder=folder, db=db, env=env, info=info)
        finally:
            # Harmless when no server runs: it only finds no state file.
            runtime.stop_server(runtime.runtime_paths(db))


@dataclass(frozen=True)
class Finished:
    """A process run to its end by :func:`run_bounded`."""

    #: ``time.monotonic()`` just before the spawn.
    started: float
    #: ``time.monotonic()`` once the process was reaped.
    exited: float
    returncode: int
    #: What it wrote to stderr, when ``stderr=subprocess.PIPE``; else ``None``.
    stderr: bytes | None


def run_bounded(
    command: list[str],
    env: Mapping[str, str],
    *,
    timeout: float,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = None,
) -> Finished:
    """Run ``command`` to its end, killed if it runs past ``timeout`` seconds.

    ``stdout`` and ``stderr`` go to ``Popen`` (``None``: inherited). With at most
    one of them ``subprocess.PIPE``, that pipe is read to its end. Never raises
    for a non-zero exit: the caller reads ``returncode``.
    """
    # time.monotonic, not perf_counter: callers compare these stamps with other
    # processes' monotonic clocks (on Linux both are CLOCK_MONOTONIC anyway).
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
    # A watchdog bounds the run, not wait(timeout=...): that polls in steps of up to
    # 50 ms and would round every figure up to the next step.
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        # With at most one pipe: reads it to its end, then a blocking waitpid.
        _, errors = process.communicate()
    finally:
        watchdog.cancel()
    exited = time.monotonic()
    return Finished(started, exited, process.returncode, errors)


def timed_run(
    command: list[str],
    env: Mapping[str, str],
    *,
    timeout: float,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = None,
) -> float:
    """Wall seconds of one whole run of ``command`` (see :func:`run_bounded`).

    Raises ``SystemExit`` when it exits non-zero (or is killed by the watchdog).
    """
    finished = run_bounded(command, env, timeout=timeout, stdout=stdout, stderr=stderr)
    if finished.returncode != 0:
        raise SystemExit(f"{command} failed with {finished.returncode}")
    return finished.exited - finished.started
