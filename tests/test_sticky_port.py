"""A database's server keeps its port across restarts: whatever follows the old address (a
dashboard left open, a script's URL) finds the restarted server there."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from projctl.runtime import remembered_port, runtime_paths

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture(autouse=True)
def no_port_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """No port asked for (the tests' PROJCTL_PORT=0 asks for any): the server chooses."""
    monkeypatch.delenv("PROJCTL_PORT")


def start(projctl: Run) -> int:
    started = projctl("server", "start")
    assert started.returncode == 0, started.stderr
    return int(started.stdout.strip().rsplit(":", 1)[1].removesuffix("/ws"))


def stop(projctl: Run) -> None:
    stopped = projctl("server", "stop")
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.usefixtures("broadcasting")
def test_a_restarted_server_takes_its_last_port_again(projctl: Run) -> None:
    first = start(projctl)
    assert remembered_port(runtime_paths(Path(os.environ["PROJCTL_DB"]))) == first
    stop(projctl)
    assert start(projctl) == first
    stop(projctl)


@pytest.mark.usefixtures("broadcasting")
def test_when_its_last_port_is_taken_it_takes_another(projctl: Run) -> None:
    first = start(projctl)
    stop(projctl)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        holder.listen()
        second = start(projctl)
        assert second != first
    stop(projctl)
    # The new port is the one remembered now.
    assert remembered_port(runtime_paths(Path(os.environ["PROJCTL_DB"]))) == second


def test_a_remembered_port_that_is_not_a_port_is_ignored(tmp_path: Path) -> None:
    paths = runtime_paths(tmp_path / "db.json")
    paths.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for garbage in (b"", b"abc", b"70000", b"0", b"-1", b"8000" * 10):
        paths.port_file.write_bytes(garbage)
        assert remembered_port(paths) is None, garbage
    paths.port_file.write_bytes(b"8123\n")
    assert remembered_port(paths) == 8123
