"""Faults: a writer killed at every stage of its transaction, and a hostile environment.

Each crash leaves a valid database, an unblocked next command, and every committed
change delivered to subscribers through the journal.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import Result
from websockets.asyncio.client import connect

from projctl import rpc, runtime
from projctl.runtime import pid_alive, runtime_paths
from projctl.store import ProjectStore

from .conftest import (
    fake_server_state,
    mounted_tmpfs,
    readline_within,
    server_up,
    wait_until,
)

# Many whole processes each (~7 s of the suite): in the slow run, which CI runs every
# time too; the README's command stays fast.
pytestmark = pytest.mark.slow

Run = Callable[..., subprocess.CompletedProcess[str]]

# Runs `projctl create` in-process with one function wrapped to announce the stage on stdout
# and then hang, so the test can SIGKILL it exactly there.
_STAGED_WRITER = """
import os, sys, time
import projctl._files as files
import projctl.rpc as rpc


stage = sys.argv[1]

def hang(label):
    sys.stdout.write(label + "\\n"); sys.stdout.flush()
    time.sleep(600)

real_flock, real_fdopen, real_request = files.fcntl.flock, files.os.fdopen, rpc.request

def flock(fd, operation):
    if stage == "before-lock":
        hang(stage)
    real_flock(fd, operation)
    if stage == "holding-lock":
        hang(stage)

class HalfWriter:
    def __init__(self, file):
        self.file = file
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.file.__exit__(*exc)
    def write(self, data):
        self.file.write(data[: len(data) // 2]); self.file.flush()
        hang(stage)
    def __getattr__(self, name):
        return getattr(self.file, name)

def fdopen(fd, *args, **kwargs):
    file = real_fdopen(fd, *args, **kwargs)
    return HalfWriter(file) if stage == "mid-write" else file

def request(address, op, **kwargs):
    if stage == "after-replace" and op == rpc.OP_FORWARD:
        hang(stage)
    return real_request(address, op, **kwargs)

files.fcntl.flock = flock
files.os.fdopen = fdopen
rpc.request = request

from projctl.cli import main

sys.argv = ["projctl", "create", "written by a doomed writer"]
main()
"""

STAGES = ["before-lock", "holding-lock", "mid-write", "after-replace"]


def kill_at(stage: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _STAGED_WRITER, stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as writer:
        try:
            assert writer.stdout is not None
            line = readline_within(writer.stdout, 30, "the staged writer")
            assert line == f"{stage}\n", line
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)


@pytest.mark.usefixtures("broadcasting")
@pytest.mark.parametrize("stage", STAGES)
def test_writer_killed_at_each_stage(
    stage: str, projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    assert projctl("create", "before the crash").returncode == 0  # starts the server
    info = server_up(db_path)
    kill_at(stage)
    # The database loads, and holds the doomed change only if it got past the rename.
    names = [project.name for project in store.list_projects()]
    committed = stage == "after-replace"
    assert names == ["before the crash"] + (["written by a doomed writer"] if committed else [])
    # The next command is not blocked by the dead writer's lock or its temp file (a lock
    # left behind would make it wait for the 10 s lock timeout and fail with exit 4).
    after = projctl("create", "after the crash")
    assert after.returncode == 0, after.stderr
    assert not [p for p in db_path.parent.iterdir() if ".tmp-" in p.name]
    # Every committed change reaches a subscriber, through the journal where no forward came.
    journal = store.journal()

    async def replay() -> list[dict[str, Any]]:
        async with connect(info.url + "?since=0") as ws:
            return [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in journal]

    assert asyncio.run(replay()) == journal
    assert [event["seq"] for event in journal] == list(range(1, len(journal) + 1))


@pytest.mark.usefixtures("broadcasting")
def test_forward_lost_in_a_crash_reaches_live_subscribers(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    assert projctl("create", "first").returncode == 0
    info = server_up(db_path)

    async def scenario() -> dict[str, Any]:
        async with connect(info.url) as ws:
            await asyncio.to_thread(kill_at, "after-replace")
            return orjson.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]

    event = asyncio.run(scenario())
    assert event == store.journal()[-1]
    assert event["data"]["name"] == "written by a doomed writer"


# -- a hostile environment --------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system (root only; skipped where mounting is not allowed)."""
    folder = tmp_path / "small"
    folder.mkdir()
    with mounted_tmpfs(folder, "size=256k"):  # elsewhere, the simulated test covers ENOSPC
        yield folder


def test_disk_full_is_a_clean_error_and_loses_nothing(projctl: Run, small_disk: Path) -> None:
    db = small_disk / "projects.json"
    ids = []
    for number in range(5):
        done = projctl("create", f"fits {number}", "--db", str(db), "-d", "x" * 10_000)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    before = db.read_bytes()
    failure = None
    for number in range(40):  # each write needs the whole file twice: fill until one fails
        done = projctl("create", f"too much {number}", "--db", str(db), "-d", "y" * 10_000)
        if done.returncode != 0:
            failure = done
            break
        before = db.read_bytes()
    assert failure is not None, "the disk never filled up"
    assert failure.returncode == 4
    assert failure.stderr == f"Error: cannot write database {db}: No space left on device\n"
    assert db.read_bytes() == before  # the old file is intact
    assert not [p for p in small_disk.iterdir() if ".tmp-" in p.name]
    listing = projctl("list", "--db", str(db))
    assert listing.returncode == 0
    assert [line.split("\t")[0] for line in listing.stdout.splitlines()][:5] == ids


def test_failing_write_simulated(
    cli: Callable[..., Result], store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("create", "kept").exit_code == 0
    before = store.path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("projctl.store.os.fsync", no_space)
    result = cli("create", "lost")
    assert result.exit_code == 4
    assert result.stderr == f"Error: cannot write database {store.path}: No space left on device\n"
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in store.list_projects()] == ["kept"]
    assert not [p for p in store.path.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.usefixtures("broadcasting")
def test_garbage_database_under_a_running_server(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    assert projctl("create", "x").returncode == 0
    info = server_up(db_path)
    db_path.write_bytes(b"\x89PNG garbage")
    refused = projctl("create", "y")
    assert refused.returncode == 4
    assert db_path.read_bytes() == b"\x89PNG garbage"
    log_file = runtime_paths(db_path).log_file
    wait_until(
        lambda: b"cannot read the journal" in log_file.read_bytes(),
        what="the server's file watcher reading the garbage",
    )
    assert pid_alive(info.pid)
    status = rpc.request(info.socket, rpc.OP_STATUS)
    assert status["latest_seq"] == 1


@pytest.mark.usefixtures("broadcasting")
def test_state_file_naming_a_live_stranger_and_a_foreign_port(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    """The state file points at a live process that is no projctl server, on a port in use."""
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    with (
        subprocess.Popen(["sleep", "60"]) as stranger,
        socket.create_server(("127.0.0.1", 0)) as foreign,
    ):
        try:
            port = foreign.getsockname()[1]
            fake_server_state(stranger.pid, paths.socket, str(paths.db_path), port).write(
                paths.state_file
            )
            done = projctl("create", "still works")
            assert done.returncode == 0
            assert done.stderr == ""
            info = wait_until(
                lambda: (
                    (state := runtime.read_server_state(paths)) is not None
                    and state.pid != stranger.pid
                    and state
                ),
                20,
                "a server of its own",
            )
            assert info.pid != stranger.pid
            assert info.port != port
            assert store.list_projects()[0].name == "still works"
            assert pid_alive(stranger.pid)  # nobody killed the stranger
        finally:
            stranger.kill()
