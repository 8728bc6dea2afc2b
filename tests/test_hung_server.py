"""A background server that takes requests but never answers (SIGSTOP): every command keeps
its deadline, writes go on without it, and the next command does not pay again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from projctl import rpc, runtime
from projctl.runtime import ServerState, runtime_paths
from projctl.store import ProjectStore

from .conftest import wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.usefixtures("broadcasting")


@pytest.fixture
def hung_server(projctl: Run, db_path: Path) -> Iterator[ServerState]:
    """A real background server of the test's database, stopped with SIGSTOP: it still
    accepts connections (the kernel queues them) and answers none."""
    started = projctl("server", "start")
    assert started.returncode == 0, started.stderr
    state = runtime.read_server_state(runtime_paths(db_path))
    assert state is not None
    os.kill(state.pid, signal.SIGSTOP)
    try:
        yield state
    finally:
        os.kill(state.pid, signal.SIGCONT)
        projctl("server", "stop", timeout=20)


def timed(
    run: Callable[[], subprocess.CompletedProcess[str]],
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


def test_watch_timeout_holds_against_a_hung_server(projctl: Run, hung_server: ServerState) -> None:
    result, elapsed = timed(lambda: projctl("watch", "--json", "--count", "1", "--timeout", "2"))
    assert result.returncode == 124, result.stderr
    assert elapsed < 6.0  # --timeout 2 holds: the blocking lookup once took 10 s
    assert result.stdout == ""
    assert result.stderr.endswith("Error: timed out after 2s: 0 of 1 event\n")
    assert f"the server (pid {hung_server.pid}) is not answering" in result.stderr


def test_info_reports_a_hung_server_instead_of_failing(
    projctl: Run, hung_server: ServerState
) -> None:
    result, elapsed = timed(lambda: projctl("info"))
    assert (result.returncode, result.stderr) == (0, "")
    assert elapsed < 6.0  # a 1 s wait, not the old 10 s
    assert f"server    not answering (pid {hung_server.pid}, {hung_server.url})" in result.stdout
    # Remembered: the JSON report right after does not wait the whole answer time again.
    as_json, elapsed = timed(lambda: projctl("info", "--json"))
    assert as_json.returncode == 0, as_json.stderr
    assert orjson.loads(as_json.stdout)["server"] == {
        "running": True,
        "answering": False,
        "url": hung_server.url,
        "pid": hung_server.pid,
        "subscribers": None,
    }
    assert elapsed < 6.0  # remembered: the short wait its warning names


def test_writes_go_on_without_a_hung_server_and_it_is_remembered(
    projctl: Run, hung_server: ServerState, store: ProjectStore
) -> None:
    warning = (
        f"Warning: event {{seq}} is committed but was not broadcast: the server "
        f"(pid {hung_server.pid}) is {{still}}not answering (the server did not answer "
        f"within {{within}}s); subscribers resuming with ?since= will still receive it\n"
    )
    first, elapsed = timed(lambda: projctl("create", "first"))
    assert first.returncode == 0
    assert elapsed < 6.0  # a 1 s wait, not the old 10 s
    assert first.stderr == warning.format(seq=1, still="", within="1")
    second, elapsed = timed(lambda: projctl("create", "second"))
    assert second.returncode == 0
    assert elapsed < 6.0  # remembered: the short wait its warning names
    assert second.stderr == warning.format(seq=2, still="still ", within="0.3")
    assert [event["seq"] for event in store.journal()] == [1, 2]  # journaled all the same
    # Nothing replaced it: the stopped server still holds the database.
    state = runtime.read_server_state(runtime_paths(store.path))
    assert state is not None
    assert state.pid == hung_server.pid
    # Once it runs again, the next write is answered and the memory of it is dropped.
    os.kill(hung_server.pid, signal.SIGCONT)
    wait_until(lambda: rpc.request(hung_server.socket, rpc.OP_STATUS), what="an answer")
    third = projctl("create", "third")
    assert (third.returncode, third.stderr) == (0, "")
    assert not runtime_paths(store.path).hung_file.exists()
