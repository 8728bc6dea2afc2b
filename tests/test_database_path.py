"""A database path that names a FIFO, a device, a folder or a Unix socket: exit 4, one line,
before any server is started or any file is made for it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import projctl
from projctl.errors import StoreError

from .conftest import OwnedStore

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def folder() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="pjdb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["fifo", "device", "folder", "socket"])
def not_a_file(request: pytest.FixtureRequest, folder: Path) -> Iterator[Path]:
    kind = request.param
    if kind == "device":
        yield Path("/dev/null")
        return
    path = folder / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    listener = None
    if kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
    try:
        yield path
    finally:
        if listener is not None:
            listener.close()


def made_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def assert_refused(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 4, result.stderr
    assert result.stderr == f"Error: database {path} is not a regular file; it was left untouched\n"


@pytest.mark.usefixtures("broadcasting")
def test_watch_refuses_before_starting_a_server(projctl: Run, not_a_file: Path) -> None:
    runtime_folder = Path(os.environ["XDG_RUNTIME_DIR"])
    result = projctl("watch", "--json", "--db", str(not_a_file), "--count", "1", "--timeout", "20")
    assert_refused(result, not_a_file)
    assert result.stdout == ""
    assert made_files(runtime_folder) == []  # no log, no state, no lock


@pytest.mark.parametrize("args", [("create", "x"), ("list",), ("show", "x")])
def test_every_command_says_not_a_regular_file(
    projctl: Run, not_a_file: Path, folder: Path, args: tuple[str, ...]
) -> None:
    before = made_files(folder)
    assert_refused(projctl(*args, "--db", str(not_a_file)), not_a_file)
    assert made_files(folder) == before  # no lock file beside it


def test_the_api_refuses_to_start_a_server_for_it(not_a_file: Path) -> None:
    database = projctl.open_database(not_a_file, broadcast=False)
    runtime_folder = Path(os.environ["XDG_RUNTIME_DIR"])
    for start in (database.ensure_server, database.locate_server):
        with pytest.raises(StoreError, match="is not a regular file"):
            start()
    assert made_files(runtime_folder) == []


def test_the_store_itself_calls_a_socket_not_a_regular_file(folder: Path) -> None:
    from projctl.errors import StoreError

    path = folder / "socket"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        store = OwnedStore(path)
        for attempt in (store.list_projects, store.read_state, lambda: store.create("x")):
            with pytest.raises(StoreError, match="is not a regular file"):
                attempt()
