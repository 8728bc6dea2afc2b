"""Commands -> server through the real CLI: forwarding, auto-start, restarts, failure modes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projctl import runtime
from projctl.runtime import ServerState, pid_alive, runtime_paths
from projctl.store import ProjectStore

from .conftest import PROJCTL, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.usefixtures("broadcasting")


def server_info(db_path: Path) -> ServerState:
    info = runtime.read_server_state(runtime_paths(db_path))
    assert info is not None, "no server is running"
    return info


def collect(url: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Connect to ``url`` and return the first ``count`` messages."""

    async def receive() -> list[dict[str, Any]]:
        async with connect(url) as ws:
            return [orjson.loads(await ws.recv()) for _ in range(count)]

    return asyncio.run(asyncio.wait_for(receive(), timeout))


def server_processes(db_path: Path) -> list[int]:
    """Pids of every ``projctl serve`` process for this database."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            (b"serve" in argv or b"projctl.server" in argv)
            and os.fsencode(db_path.resolve()) in argv
            and pid_alive(int(entry.name))
        ):
            pids.append(int(entry.name))
    return pids


def test_commands_forward_every_event_type_through_an_auto_started_server(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    created = projctl("create", "Alpha")
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""
    project_id = created.stdout.strip()
    info = server_info(db_path)
    assert projctl("update", project_id, "--status", "completed").returncode == 0
    assert projctl("delete", project_id).returncode == 0
    events = collect(info.url + "?since=0", 3)
    assert events == store.journal()
    assert [e["event_type"] for e in events] == [
        "project_created",
        "project_updated",
        "project_deleted",
    ]
    stopped = projctl("server", "stop")
    assert stopped.stdout == f"stopped server pid {info.pid}\n"
    assert not pid_alive(info.pid)
    assert server_processes(db_path) == []


def test_live_subscriber_sees_commands_as_they_happen(projctl: Run, db_path: Path) -> None:
    assert projctl("create", "warm-up").returncode == 0
    info = server_info(db_path)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(info.url) as ws:
            for name in ("one", "two"):
                done = await asyncio.to_thread(projctl, "create", name)
                assert done.returncode == 0
            return [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]

    received = asyncio.run(scenario())
    assert [event["data"]["name"] for event in received] == ["one", "two"]
    assert [event["seq"] for event in received] == [2, 3]


def test_command_substitution_returns_promptly_when_it_starts_the_server(
    bash: str, db_path: Path
) -> None:
    # Were the server to keep the command's stdout open, `$(...)` would wait for it to
    # exit (15 minutes idle): the timeout is the assertion.
    done = subprocess.run(
        [bash, "-c", f'id=$("{PROJCTL}" create "In a subshell"); echo "got $id"'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.startswith("got proj_")
    info = server_info(db_path)
    assert pid_alive(info.pid)
    assert os.getsid(info.pid) == info.pid  # detached: its own session


def test_racing_commands_start_exactly_one_server(db_path: Path, store: ProjectStore) -> None:
    def create(number: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROJCTL, "create", f"racer {number}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    for result in results:
        assert result.returncode == 0
        assert result.stderr == ""
    info = server_info(db_path)
    assert server_processes(db_path) == [info.pid]
    assert collect(info.url + "?since=0", 6) == store.journal()


def test_resume_across_a_server_kill_and_auto_restart(projctl: Run, db_path: Path) -> None:
    for name in ("a", "b", "c"):
        assert projctl("create", name).returncode == 0
    first = server_info(db_path)
    seen = collect(first.url + "?since=0", 3)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(first.pid))
    for name in ("d", "e"):
        done = projctl("create", name)
        assert done.returncode == 0
        assert done.stderr == ""
    second = server_info(db_path)
    assert second.pid != first.pid
    resumed = collect(f"{second.url}?since={seen[-1]['seq']}", 2)
    assert [event["data"]["name"] for event in seen + resumed] == ["a", "b", "c", "d", "e"]
    assert [event["seq"] for event in seen + resumed] == [1, 2, 3, 4, 5]


def test_port_taken_by_another_program_warns_and_still_commits(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        done = projctl("create", "Committed anyway", env={"PROJCTL_PORT": str(port)})
    assert done.returncode == 0
    assert done.stdout.startswith("proj_")
    assert done.stderr.startswith("Warning: event 1 is committed but was not broadcast: ")
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert done.stderr.count("\n") == 1
    assert store.get(done.stdout.strip()).name == "Committed anyway"
    # A later subscriber resuming from the journal still gets the event.
    assert projctl("create", "next").returncode == 0
    events = collect(server_info(db_path).url + "?since=0", 2)
    assert events[0]["data"]["name"] == "Committed anyway"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_no_broadcast_contacts_and_starts_nothing(projctl: Run, db_path: Path, how: str) -> None:
    if how == "flag":
        done = projctl("create", "quiet", "--no-broadcast")
    else:
        done = projctl("create", "quiet", env={"PROJCTL_NO_BROADCAST": "1"})
    assert done.returncode == 0
    assert done.stderr == ""
    assert not runtime_paths(db_path).folder.exists()
    assert server_processes(db_path) == []


def test_idle_server_stops_itself_but_not_while_someone_listens(
    projctl: Run, db_path: Path
) -> None:
    assert projctl("create", "x", env={"PROJCTL_IDLE_TIMEOUT": "1"}).returncode == 0
    info = server_info(db_path)

    async def listen_for(seconds: float) -> None:
        async with connect(info.url):
            await asyncio.sleep(seconds)

    asyncio.run(listen_for(2.5))
    assert pid_alive(info.pid), "stopped while a subscriber was connected"
    wait_until(lambda: not pid_alive(info.pid), timeout=10)
    assert not runtime_paths(db_path).state_file.exists()


def test_stale_state_file_is_cleaned_up(projctl: Run, db_path: Path) -> None:
    assert projctl("create", "first").returncode == 0
    paths = runtime_paths(db_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    state = orjson.loads(paths.state_file.read_bytes())
    projctl("server", "stop")
    paths.state_file.write_bytes(orjson.dumps({**state, "pid": dead.pid}))
    status = projctl("server", "status", "--json")
    assert orjson.loads(status.stdout) == {"running": False}
    assert not paths.state_file.exists()
    assert projctl("create", "second").stderr == ""
    assert server_info(db_path).pid != dead.pid


def test_each_database_has_its_own_server(projctl: Run, tmp_path: Path) -> None:
    db_a, db_b = tmp_path / "a" / "db.json", tmp_path / "b" / "db.json"
    assert projctl("create", "in a", "--db", str(db_a)).returncode == 0
    assert projctl("create", "in b", "--db", str(db_b)).returncode == 0
    info_a, info_b = server_info(db_a), server_info(db_b)
    assert info_a.pid != info_b.pid
    assert projctl("create", "more a", "--db", str(db_a)).returncode == 0
    names = [event["data"]["name"] for event in collect(info_a.url + "?since=0", 2)]
    assert names == ["in a", "more a"]
    assert collect(info_b.url + "?since=0", 1)[0]["data"]["name"] == "in b"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_in_the_foreground(projctl: Run, db_path: Path, stop_signal: signal.Signals) -> None:
    with subprocess.Popen(
        [PROJCTL, "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            wait_until(lambda: runtime.read_server_state(runtime_paths(db_path)) is not None)
            info = server_info(db_path)
            assert info.pid == server.pid
            assert not info.auto
            twice = projctl("serve", "--port", "0")
            assert twice.returncode == 5
            assert twice.stderr.startswith("Error: a server for this database is already running")
            done = projctl("create", "to the foreground server")
            assert done.stderr == ""
            assert server_processes(db_path) == []  # no background server was started
            assert server_info(db_path).pid == server.pid
            status = orjson.loads(projctl("server", "status", "--json").stdout)
            assert status["running"] is True
            assert status["latest_seq"] == 1
            assert status["pid"] == server.pid
        finally:
            server.send_signal(stop_signal)
            _, stderr = server.communicate(timeout=10)
    assert server.returncode == 0
    assert "serving ws://127.0.0.1:" in stderr
    assert not runtime_paths(db_path).state_file.exists()


def test_server_status_and_stop_when_none_runs(projctl: Run, db_path: Path) -> None:
    status = projctl("server", "status")
    assert status.returncode == 0
    assert status.stdout == f"no server is running for {db_path}\n"
    assert orjson.loads(projctl("server", "status", "--json").stdout) == {"running": False}
    stop = projctl("server", "stop")
    assert stop.returncode == 0
    assert stop.stderr == f"no server is running for {db_path}\n"


def test_beyond_loopback_needs_an_explicit_host(projctl: Run, db_path: Path) -> None:
    refused = projctl("serve", env={"PROJCTL_HOST": "0.0.0.0"})
    assert refused.returncode == 2
    assert refused.stderr == (
        "Error: listening beyond loopback (0.0.0.0) needs --host on the command line, "
        "not only PROJCTL_HOST\n"
    )
    # Commands never start such a server in the background either.
    done = projctl("create", "x", env={"PROJCTL_HOST": "0.0.0.0"})
    assert done.returncode == 0
    assert "no server is running for this database" in done.stderr
    assert server_processes(db_path) == []


def test_a_large_server_log_is_rotated_at_the_next_start(projctl: Run, db_path: Path) -> None:
    paths = runtime_paths(db_path)
    runtime.ensure_private_folder(paths.folder)
    old = b"an old line\n" * 200_000  # 2.4 MB
    paths.log_file.write_bytes(old)
    assert projctl("create", "x").returncode == 0
    assert (paths.folder / "server.log.1").read_bytes() == old
    assert paths.log_file.stat().st_size < 10_000
    assert b"serving ws://" in paths.log_file.read_bytes()
