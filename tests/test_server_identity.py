"""Which process is the database's server: a stale state entry never gets a stranger
signalled, no pid but our own children is ever waited on, and a database whose id cannot
be read takes no server for its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from projctl import open_database, runtime
from projctl.errors import ServerError
from projctl.runtime import ServerState, pid_alive, runtime_paths

from .conftest import fake_server_state, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours that is no projctl server, though its argv holds the word
    ``serve`` (as ``jekyll serve`` or ``npm run serve`` do)."""
    with subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve"]
    ) as process:
        try:
            yield process
        finally:
            process.kill()


def test_server_stop_never_signals_a_stranger_named_by_a_stale_state_entry(
    projctl: Run, db_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    fake_server_state(stranger.pid, paths.socket, str(paths.db_path)).write(paths.state_file)
    stop = projctl("server", "stop")
    assert stop.returncode == 0
    assert stop.stderr == (
        f"no server is running for {db_path}: its state entry named pid {stranger.pid}, "
        "which is not that server (any more); removed the entry, signalled nothing\n"
    )
    assert stranger.poll() is None  # alive, and never signalled
    assert not paths.state_file.exists()


def test_a_state_entry_whose_process_started_at_another_time_is_stale(
    db_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """The pid was given to another process since the server recorded it."""
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    started = runtime.process_start_time(stranger.pid)
    assert started is not None
    planted = fake_server_state(stranger.pid, paths.socket, str(paths.db_path))
    planted._replace(process_start=started + 1).write(paths.state_file)
    assert runtime.read_server_state(paths) is None
    assert not paths.state_file.exists()
    planted._replace(process_start=started).write(paths.state_file)
    assert runtime.read_server_state(paths) is not None


def started_server(projctl: Run, db_path: Path) -> ServerState:
    assert projctl("server", "start", "--db", str(db_path)).returncode == 0
    state = runtime.read_server_state(runtime_paths(db_path))
    assert state is not None
    return state


@pytest.mark.parametrize("recorded", ["start time", "launch argv only"])
def test_a_server_that_lost_its_socket_is_still_stopped_when_verified(
    projctl: Run, db_path: Path, recorded: str
) -> None:
    """Verified by its start time, or (a state file that does not record it) by the exact
    background launch: then it is signalled."""
    state = started_server(projctl, db_path)
    paths = runtime_paths(db_path)
    assert state.process_start == runtime.process_start_time(state.pid)
    if recorded == "launch argv only":
        state._replace(process_start=None).write(paths.state_file)
    state.socket.unlink()  # it cannot be asked any more
    stop = projctl("server", "stop")
    assert (stop.returncode, stop.stdout, stop.stderr) == (
        0,
        f"stopped server pid {state.pid}\n",
        "",
    )
    assert not pid_alive(state.pid)


def test_pid_alive_never_reaps_a_child_it_did_not_spawn() -> None:
    with subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"]) as child:
        wait_until(lambda: not pid_alive(child.pid), what="the child exited")
        assert child.wait(timeout=10) == 7  # its exit status was left for its parent


def test_an_unreadable_database_id_takes_no_server_for_its_own(
    projctl: Run, tmp_path: Path
) -> None:
    """A state entry naming another database's live server, for a database whose id cannot
    be read: nothing says that server is this database's, so it is neither reported nor
    stopped as such."""
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    assert projctl("create", "theirs", "--db", str(theirs)).returncode == 0
    their_state = started_server(projctl, theirs)
    my_paths = runtime_paths(mine, for_a_server=True)
    their_state._replace(db=str(my_paths.db_path)).write(my_paths.state_file)
    mine.write_bytes(b"garbage, not a projctl database")
    refusal = (
        f"Error: cannot tell whether the server found (pid {their_state.pid}) serves this "
        "database: the database's id cannot be read (projctl info says why)\n"
    )
    for args in (("server", "status"), ("server", "stop")):
        refused = projctl(*args, "--db", str(mine))
        assert (refused.returncode, refused.stdout, refused.stderr) == (5, "", refusal), args
    with pytest.raises(ServerError, match="cannot tell whether the server found"):
        open_database(mine).server_status()
    assert pid_alive(their_state.pid)
