"""Commands -> server through the real CLI: forwarding, auto-start, restarts, failure modes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projctl import _files, runtime
from projctl.config import DURATION_RULE
from projctl.errors import ConfigError, ServerError
from projctl.runtime import (
    RuntimePaths,
    ServerLaunch,
    ServerState,
    StartOptions,
    is_loopback,
    pid_alive,
    runtime_paths,
)
from projctl.store import ProjectStore

from .conftest import PROJCTL, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.usefixtures("broadcasting")


def server_info(db_path: Path) -> ServerState:
    """The database's server, once it is up: a command that starts one does not wait for it."""
    return wait_until(
        lambda: runtime.read_server_state(runtime_paths(db_path)), 20, "a server is running"
    )


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


def test_a_server_that_cannot_start_is_reported_by_the_next_command(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    """A create does not wait for the server it starts, so it cannot tell that the server
    failed. The next command finds the failed start (the server is gone and never published
    its state), starts one and waits for it, and warns with the reason: the old message."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {"PROJCTL_PORT": str(port)}
        first = projctl("create", "Committed anyway", env=env)
        assert (first.returncode, first.stderr) == (0, "")
        assert first.stdout.startswith("proj_")
        paths = runtime_paths(db_path)
        wait_until(lambda: b"cannot listen on 127.0.0.1" in paths.log_file.read_bytes())
        second = projctl("create", "Still committed", env=env)
    assert second.returncode == 0
    assert second.stderr.startswith("Warning: event 2 is committed but was not broadcast: ")
    assert "cannot listen on 127.0.0.1" in second.stderr
    assert second.stderr.count("\n") == 1
    assert [project.name for project in store.list_projects()] == [
        "Committed anyway",
        "Still committed",
    ]
    # A later subscriber resuming from the journal still gets both events.
    assert projctl("create", "next").returncode == 0
    events = collect(server_info(db_path).url + "?since=0", 3)
    assert [event["data"]["name"] for event in events] == [
        "Committed anyway",
        "Still committed",
        "next",
    ]


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open."""
    try:
        return any(os.readlink(entry) == str(path) for entry in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def test_a_watch_waiting_for_the_server_gets_the_event_of_a_cold_start(
    projctl: Run, db_path: Path
) -> None:
    """No event lost on a cold start: a watch started before the first create, with no server
    yet, waits for one; the create does not wait for anyone; the server that then starts
    reads the event from the journal and the watch receives it."""
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    # Hold the start lock: the watch can only wait for its server, deterministically.
    lock = _files.try_lock(paths.start_lock)
    assert lock is not None
    watch = subprocess.Popen(
        [PROJCTL, "watch", "--json", "--count", "1", "--timeout", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # It waits for the server once it has the start lock file open.
        wait_until(lambda: _has_open(watch.pid, paths.start_lock), 20, "the watch waits")
        assert watch.poll() is None
        created = projctl("create", "Cold", timeout=20)
        assert (created.returncode, created.stderr) == (0, "")
        assert runtime.read_server_state(paths) is None  # it waited for no server
    finally:
        os.close(lock)  # now the watch starts the server
        try:
            out, err = watch.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            watch.kill()
            out, err = watch.communicate(timeout=10)
    assert watch.returncode == 0, err
    [line] = out.splitlines()
    event = orjson.loads(line)
    assert (event["event_type"], event["seq"], event["data"]["name"]) == (
        "project_created",
        1,
        "Cold",
    )


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_no_broadcast_contacts_and_starts_nothing(projctl: Run, db_path: Path, how: str) -> None:
    if how == "flag":
        done = projctl("create", "quiet", "--no-broadcast")
    else:
        done = projctl("create", "quiet", env={"PROJCTL_NO_BROADCAST": "1"})
    assert done.returncode == 0
    assert done.stderr == ""
    assert not runtime_paths(db_path).state_file.exists()
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
    server_info(db_path)  # up: the create started it in the background
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
    db_a.parent.mkdir()
    db_b.parent.mkdir()
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
    assert status.returncode == 3  # usable in `if`
    assert status.stdout == f"no server is running for {db_path}\n"
    assert status.stderr == ""
    as_json = projctl("server", "status", "--json")
    assert (as_json.returncode, orjson.loads(as_json.stdout)) == (3, {"running": False})
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
    paths = runtime_paths(db_path, for_a_server=True)
    runtime.check_private_folder(paths.folder, create=True)
    old = b"an old line\n" * 200_000  # 2.4 MB
    paths.log_file.write_bytes(old)
    assert projctl("create", "x").returncode == 0
    assert paths.log_file.with_name(paths.log_file.name + ".1").read_bytes() == old
    server_info(db_path)  # up: the create started it in the background
    # It publishes its state before its first log line is flushed: wait for the line.
    wait_until(lambda: b"serving ws://" in paths.log_file.read_bytes(), 20, "the serving line")
    assert paths.log_file.stat().st_size < 10_000


# -- ServerState: the state file's one definition -------------------------------------

STATE_FIELDS: dict[str, Any] = {
    "pid": 4242,
    "host": "127.0.0.1",
    "port": 8123,
    "url": "ws://127.0.0.1:8123/ws",
    "token": "publisher-token",
    "socket": "/tmp/projctl-test/server.sock",
    "db": "/data/projects.json",
    "database_id": "0123456789abcdef",
    "version": "1.2.3",
    "auto": True,
    "subscriber_token": None,
    "started_at": 1700000000.25,
}


def make_state(**changes: Any) -> ServerState:
    state = ServerState(
        pid=4242,
        host="127.0.0.1",
        port=8123,
        url="ws://127.0.0.1:8123/ws",
        token="publisher-token",
        socket=Path("/tmp/projctl-test/server.sock"),
        db="/data/projects.json",
        database_id="0123456789abcdef",
        version="1.2.3",
        auto=True,
        subscriber_token=None,
        started_at=1700000000.25,
    )
    return state._replace(**changes)


def state_bytes(**changes: Any) -> bytes:
    """The state file's content with some fields changed (``...`` removes one)."""
    fields = {**STATE_FIELDS, **changes}
    return orjson.dumps({name: value for name, value in fields.items() if value is not ...})


def test_server_state_repr_shows_no_token() -> None:
    state = make_state(subscriber_token="sub-secret", write_token="write-secret")
    shown = repr(state)
    assert shown.startswith(f"ServerState(pid={state.pid!r}, host=")
    assert "process_start=None" in shown
    for secret in (state.token, "sub-secret", "write-secret"):
        assert secret not in shown


@pytest.mark.parametrize("subscriber_token", [None, "subscriber-token"])
def test_server_state_encodes_every_field_and_decodes_back(subscriber_token: str | None) -> None:
    state = make_state(subscriber_token=subscriber_token, auto=False)
    raw = state.encode()
    assert orjson.loads(raw) == {
        **STATE_FIELDS,
        "auto": False,
        "subscriber_token": subscriber_token,
        "write_token": None,
        "process_start": None,
    }
    decoded = ServerState.decode(raw)
    assert decoded == state
    assert isinstance(decoded.socket, Path)


def test_server_state_decode_accepts_a_whole_started_at_and_no_subscriber_token() -> None:
    decoded = ServerState.decode(state_bytes(started_at=1700000000, subscriber_token=...))
    assert decoded == make_state(started_at=1700000000.0)
    assert type(decoded.started_at) is float
    assert decoded.subscriber_token is None


@pytest.mark.parametrize(("pid", "port"), [(1, 1), (1, 65535), (2**31 - 1, 8123)])
def test_server_state_decode_accepts_the_range_edges(pid: int, port: int) -> None:
    assert ServerState.decode(state_bytes(pid=pid, port=port)) == make_state(pid=pid, port=port)


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"\xff"])
def test_server_state_decode_refuses_what_is_not_json(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"^not JSON: "):
        ServerState.decode(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"state"', b"42"])
def test_server_state_decode_refuses_what_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"^not a JSON object\Z"):
        ServerState.decode(raw)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("pid", "pid must be a int"),
        ("host", "host must be a str"),
        ("port", "port must be a int"),
        ("url", "url must be a str"),
        ("token", "token must be a str"),
        ("socket", "socket must be a str"),
        ("db", "db must be a str"),
        ("database_id", "database_id must be a str"),
        ("version", "version must be a str"),
        ("auto", "auto must be a bool"),
        ("started_at", "started_at must be a number"),
    ],
)
def test_server_state_decode_refuses_a_missing_field(missing: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}\Z"):
        ServerState.decode(state_bytes(**{missing: ...}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pid": True}, "pid must be a int"),
        ({"pid": "4242"}, "pid must be a int"),
        ({"pid": 4242.0}, "pid must be a int"),
        ({"port": False}, "port must be a int"),
        ({"port": "8123"}, "port must be a int"),
        ({"auto": 1}, "auto must be a bool"),
        ({"auto": "true"}, "auto must be a bool"),
        ({"host": 127}, "host must be a str"),
        ({"socket": None}, "socket must be a str"),
        ({"socket": ["/tmp/s.sock"]}, "socket must be a str"),
        ({"token": None}, "token must be a str"),
        ({"subscriber_token": 5}, "subscriber_token must be a str"),
        ({"subscriber_token": False}, "subscriber_token must be a str"),
        ({"started_at": "now"}, "started_at must be a number"),
        ({"started_at": True}, "started_at must be a number"),
        ({"started_at": None}, "started_at must be a number"),
    ],
)
def test_server_state_decode_refuses_a_wrong_type(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}\Z"):
        ServerState.decode(state_bytes(**changes))


@pytest.mark.parametrize(
    "changes",
    [{"pid": 0}, {"pid": -1}, {"port": 0}, {"port": -1}, {"port": 65536}, {"port": 10**6}],
)
def test_server_state_decode_refuses_a_pid_or_port_out_of_range(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^pid or port out of range\Z"):
        ServerState.decode(state_bytes(**changes))


def test_server_state_write_publishes_a_private_file_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "server.json"
    first = make_state()
    previous_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        first.write(path)
    finally:
        os.umask(previous_umask)
    assert path.read_bytes() == first.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in folder.iterdir()] == ["server.json"]
    second = make_state(port=9000, url="ws://127.0.0.1:9000/ws")
    with path.open("rb") as reader:
        second.write(path)
        # Replaced, not rewritten in place: a reader of the old file sees it whole.
        assert reader.read() == first.encode()
    assert ServerState.decode(path.read_bytes()) == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in folder.iterdir()] == ["server.json"]


def test_server_state_write_over_a_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_bytes(b"{}")
    path.chmod(0o644)
    make_state().write(path)
    # The file holds the publisher token: "readable by its owner only", whatever was there.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def state_paths(db_path: Path) -> Iterator[RuntimePaths]:
    """The runtime paths of the test database, its private folder made.

    The state file is removed afterwards: one naming this test's own pid would
    otherwise make the teardown kill the test run as a stray server.
    """
    paths = runtime_paths(db_path)
    runtime.check_private_folder(paths.folder, create=True)
    yield paths
    paths.state_file.unlink(missing_ok=True)


def test_read_server_state_without_a_state_file(db_path: Path) -> None:
    paths = runtime_paths(db_path)
    assert runtime.read_server_state(paths) is None
    assert not paths.folder.exists()  # reading creates nothing


def test_read_server_state_returns_a_valid_state_of_a_live_pid(state_paths: RuntimePaths) -> None:
    state = make_state(pid=os.getpid(), db=str(state_paths.db_path))
    state.write(state_paths.state_file)
    # A process publishing its own state records when it started.
    recorded = state._replace(process_start=runtime.process_start_time(os.getpid()))
    assert recorded.process_start is not None
    assert runtime.read_server_state(state_paths) == recorded
    assert state_paths.state_file.read_bytes() == recorded.encode()  # left in place


@pytest.mark.parametrize("raw", [b"garbage", b"", b"{}", b"[]", b"null"])
def test_read_server_state_removes_a_state_file_that_is_not_json_state(
    state_paths: RuntimePaths, raw: bytes
) -> None:
    state_paths.state_file.write_bytes(raw)
    assert runtime.read_server_state(state_paths) is None
    assert not state_paths.state_file.exists()


@pytest.mark.parametrize(
    "changes", [{"pid": str(os.getpid())}, {"port": 0}, {"auto": "yes"}, {"socket": None}]
)
def test_read_server_state_removes_a_state_file_with_a_bad_field(
    state_paths: RuntimePaths, changes: dict[str, Any]
) -> None:
    valid = orjson.loads(make_state(pid=os.getpid(), db=str(state_paths.db_path)).encode())
    state_paths.state_file.write_bytes(orjson.dumps({**valid, **changes}))
    assert runtime.read_server_state(state_paths) is None
    assert not state_paths.state_file.exists()


def test_read_server_state_reads_up_to_the_size_limit_only(state_paths: RuntimePaths) -> None:
    state = make_state(pid=os.getpid(), db=str(state_paths.db_path))
    at_limit = state.encode().ljust(runtime.STATE_FILE_MAX)  # JSON allows trailing blanks
    state_paths.state_file.write_bytes(at_limit)
    assert runtime.read_server_state(state_paths) == state
    state_paths.state_file.write_bytes(at_limit + b" ")
    assert runtime.read_server_state(state_paths) is None
    assert not state_paths.state_file.exists()


def test_read_server_state_removes_the_state_of_a_dead_pid(state_paths: RuntimePaths) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    assert not pid_alive(gone.pid)
    make_state(pid=gone.pid, db=str(state_paths.db_path)).write(state_paths.state_file)
    assert runtime.read_server_state(state_paths) is None
    assert not state_paths.state_file.exists()


def test_read_server_state_removes_the_state_of_another_database(
    state_paths: RuntimePaths, tmp_path: Path
) -> None:
    other = runtime_paths(tmp_path / "other" / "projects.json").db_path
    make_state(pid=os.getpid(), db=str(other)).write(state_paths.state_file)
    assert runtime.read_server_state(state_paths) is None
    assert not state_paths.state_file.exists()


# -- ServerLaunch: the background server's command line ------------------------------


@pytest.mark.parametrize(
    "options",
    [
        StartOptions(host="127.0.0.1", port=0, idle_timeout=900.0),
        StartOptions(host="::1", port=65535, idle_timeout=0.25, port_fallback=True),
        StartOptions(host="localhost", port=8000, idle_timeout=0.0, require_token=True),
        StartOptions(host="0.0.0.0", port=1, idle_timeout=1e-07, max_connections=1),
        StartOptions(
            host="example.com",
            port=443,
            idle_timeout=0.1 + 0.2,
            port_fallback=True,
            require_token=True,
            max_connections=10**6,
        ),
    ],
)
def test_server_launch_argv_parses_back(tmp_path: Path, options: StartOptions) -> None:
    db = tmp_path / "my data" / "-projects.json"
    launch = ServerLaunch(db, options)
    argv = launch.argv()
    assert argv[0] == sys.executable
    assert argv[1:3] == ["-m", "projctl.server"]
    assert argv[3:] == [
        "--db",
        str(db),
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--idle-timeout",
        repr(options.idle_timeout),
        "--port-fallback",
        "1" if options.port_fallback else "0",
        "--require-token",
        "1" if options.require_token else "0",
        "--max-connections",
        str(options.max_connections),
    ]
    assert ServerLaunch.parse(argv[3:]) == launch


def test_server_launch_parse_takes_options_in_any_order_and_expands_the_db_path() -> None:
    parsed = ServerLaunch.parse(
        [
            "--max-connections",
            "7",
            "--require-token",
            "yes",
            "--idle-timeout",
            "30",
            "--port-fallback",
            "off",
            "--port",
            "8000",
            "--host",
            "localhost",
            "--db",
            "~/p.json",
        ]
    )
    assert parsed == ServerLaunch(
        Path(os.environ["HOME"]) / "p.json",
        StartOptions(
            host="localhost",
            port=8000,
            idle_timeout=30.0,
            port_fallback=False,
            require_token=True,
            max_connections=7,
        ),
    )


LAUNCH_ARGS = [
    "--db",
    "/data/p.json",
    "--host",
    "127.0.0.1",
    "--port",
    "8000",
    "--idle-timeout",
    "5",
    "--port-fallback",
    "0",
    "--require-token",
    "0",
    "--max-connections",
    "4096",
]
#: The options of a launch: every one is required.
LAUNCH_OPTIONS = LAUNCH_ARGS[::2]


def launch_args(**changes: str) -> list[str]:
    args = list(LAUNCH_ARGS)
    for name, value in changes.items():
        index = args.index("--" + name.replace("_", "-"))
        args[index + 1] = value
    return args


def test_the_launch_args_used_here_parse() -> None:
    assert ServerLaunch.parse(LAUNCH_ARGS) == ServerLaunch(
        Path("/data/p.json"),
        StartOptions(host="127.0.0.1", port=8000, idle_timeout=5.0, max_connections=4096),
    )


@pytest.mark.parametrize("option", LAUNCH_OPTIONS)
def test_server_launch_parse_refuses_a_missing_option(option: str) -> None:
    args = list(LAUNCH_ARGS)
    index = args.index(option)
    del args[index : index + 2]
    with pytest.raises(ConfigError, match=r"^not a server launch: "):
        ServerLaunch.parse(args)


def test_server_launch_parse_says_which_option_is_missing_and_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    last = LAUNCH_OPTIONS[-1]
    with pytest.raises(ConfigError) as raised:
        ServerLaunch.parse(LAUNCH_ARGS[:-2])
    # Core raises, the caller reports: the one-line message must name what is wrong.
    assert last in str(raised.value)
    assert "\n" not in str(raised.value)
    assert capsys.readouterr() == ("", "")


SECONDS = f"expected {DURATION_RULE}"
FLAG = "expected 1, true, yes, on, or 0, false, no, off"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            launch_args(port="abc"),
            "--port='abc' is not accepted: expected a whole number from 0 to 65535",
        ),
        (
            launch_args(port="65536"),
            "--port='65536' is not accepted: expected a whole number from 0 to 65535",
        ),
        (launch_args(idle_timeout="nan"), f"--idle-timeout='nan' is not accepted: {SECONDS}"),
        (launch_args(idle_timeout="inf"), f"--idle-timeout='inf' is not accepted: {SECONDS}"),
        (launch_args(idle_timeout="-1"), f"--idle-timeout='-1' is not accepted: {SECONDS}"),
        (launch_args(db=""), "--db='' is not accepted: expected the path of a database file"),
        (
            launch_args(host=""),
            "--host='' is not accepted: "
            "expected a host name or IP address, like localhost or 127.0.0.1",
        ),
        (launch_args(port_fallback="maybe"), f"--port-fallback='maybe' is not accepted: {FLAG}"),
        (launch_args(require_token="2"), f"--require-token='2' is not accepted: {FLAG}"),
        (
            launch_args(max_connections="0"),
            "--max-connections='0' is not accepted: expected a whole number of at least 1",
        ),
    ],
)
def test_server_launch_parse_refuses_a_bad_value(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ServerLaunch.parse(args)
    assert str(raised.value) == message


def test_server_launch_parse_refuses_an_option_without_its_value() -> None:
    with pytest.raises(ConfigError) as raised:
        ServerLaunch.parse(LAUNCH_ARGS[:-1])
    assert str(raised.value) == (
        f"not a server launch: argument {LAUNCH_OPTIONS[-1]}: expected one argument"
    )


# -- is_loopback -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "ip6-localhost"]
)
def test_is_loopback_for_this_machine(host: str) -> None:
    assert is_loopback(host) is True


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",
        "192.168.1.10",
        "10.0.0.1",
        "128.0.0.1",
        "1127.0.0.1",
        "example.com",
        "localhost.example.com",
        "my-localhost",
    ],
)
def test_is_loopback_for_other_hosts(host: str) -> None:
    assert is_loopback(host) is False


@pytest.mark.parametrize("host", ["127.0.0.1.example.com", "127.attacker.example"])
def test_is_loopback_for_a_name_that_only_starts_like_a_loopback_address(host: str) -> None:
    # A DNS name may resolve anywhere: only an IPv4 address in 127.0.0.0/8 is loopback.
    assert is_loopback(host) is False


# -- one database, one identity, whatever path reaches it --------------------------------


def test_the_runtime_folder_without_xdg_is_in_the_first_usable_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``tempfile.gettempdir()`` picks it: $TMPDIR, $TEMP, $TMP, then /tmp; a variable
    naming a missing folder or a file is passed over."""
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    mine = f"projctl-{os.getuid()}"
    assert runtime.private_folder() == Path("/tmp", mine)
    (tmp_path / "a file").touch()
    (tmp_path / "temp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setenv("TEMP", str(tmp_path / "a file"))
    monkeypatch.setenv("TMP", str(tmp_path / "temp"))
    assert runtime.private_folder() == tmp_path / "temp" / mine
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert runtime.private_folder() == tmp_path / mine


def test_a_database_key_is_the_one_every_version_computes(tmp_path: Path) -> None:
    """The key names a server's entry: a version that computed it otherwise would not find
    the servers an older one started."""
    import hashlib

    folder = os.stat(tmp_path)
    material = f"{folder.st_dev}:{folder.st_ino}:projects.json".encode()
    expected = hashlib.sha256(material).hexdigest()[:20]
    assert runtime.database_key(tmp_path / "projects.json") == expected
    missing = tmp_path / "missing" / "projects.json"
    expected = hashlib.sha256(f"path:{missing}".encode()).hexdigest()[:20]
    assert runtime.database_key(missing) == expected


@pytest.mark.usefixtures("broadcasting")
def test_every_path_to_one_database_finds_one_server(projctl: Run, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked-folder").symlink_to(real)
    db = real / "db.json"
    paths_to_it = [
        str(db),
        str(tmp_path / "linked-folder" / "db.json"),
        str(tmp_path / "link-to-file.json"),
    ]
    (tmp_path / "link-to-file.json").symlink_to(db)
    relative = os.path.relpath(db, tmp_path)
    for number in range(4):
        for path in paths_to_it:
            done = projctl("create", f"via {number} {path}", "--db", path)
            assert done.returncode == 0, done.stderr
            assert done.stderr == ""
        done = subprocess.run(
            [PROJCTL, "create", f"relative {number}", "--db", relative],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert done.stderr == ""
    entries = {runtime_paths(Path(path)).key for path in paths_to_it}
    assert len(entries) == 1
    assert len(server_processes(db)) == 1
    assert len(list(runtime_paths(db).folder.glob("*.json"))) == 1
    # A symlinked database is written through to its target: the link stays a link.
    assert (tmp_path / "link-to-file.json").is_symlink()
    assert len(ProjectStore(db).list_projects()) == 16
    assert sorted(p.name for p in real.iterdir()) == ["db.json", "db.json.lock"]


def test_a_taken_port_that_was_asked_for_names_its_holder(projctl: Run, tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    with subprocess.Popen(
        [PROJCTL, "serve", "--db", str(first), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            state = wait_until(lambda: runtime.read_server_state(runtime_paths(first)))
            busy = projctl(
                "serve", "--db", str(tmp_path / "second.json"), "--port", str(state.port)
            )
            assert busy.returncode == 5
            assert busy.stderr == (
                f"Error: cannot listen on 127.0.0.1:{state.port}: Address already in use "
                f"(the projctl server of {first}, pid {state.pid}, holds it)\n"
            )
            with socket.socket() as stranger:
                stranger.bind(("127.0.0.1", 0))
                stranger.listen()
                port = stranger.getsockname()[1]
                taken = projctl("serve", "--db", str(tmp_path / "third.json"), "--port", str(port))
            assert taken.returncode == 5
            assert taken.stderr.endswith("Address already in use (by another program)\n")
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_four_serves_at_once_give_one_server(tmp_path: Path) -> None:
    db = tmp_path / "db.json"
    command = [PROJCTL, "serve", "--db", str(db), "--port", "0"]
    servers = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        state = wait_until(lambda: runtime.read_server_state(runtime_paths(db)))
        refused = []
        for server in servers:
            if server.pid != state.pid:
                _, stderr = server.communicate(timeout=15)
                assert server.returncode == 5
                refused.append(stderr)
        assert len(refused) == 3
        for stderr in refused:
            assert f"Error: a server for this database is already running: pid {state.pid}" in (
                stderr
            )
    finally:
        for server in servers:
            server.terminate()
            server.communicate(timeout=10)


@pytest.mark.usefixtures("broadcasting")
def test_a_server_of_another_database_is_never_followed(projctl: Run, tmp_path: Path) -> None:
    """A state entry naming a live server of another database (a copied file, a stale
    entry) is refused by every command that talks to it, watch first of all."""
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    assert projctl("create", "mine", "--db", str(mine), "--no-broadcast").returncode == 0
    assert projctl("create", "theirs", "--db", str(theirs)).returncode == 0
    their_state = server_info(theirs)
    my_paths = runtime_paths(mine)
    their_state._replace(db=str(my_paths.db_path)).write(my_paths.state_file)
    for args in (("watch", "--json", "--since", "0", "--timeout", "5"), ("server", "status")):
        refused = projctl(*args, "--db", str(mine))
        assert refused.returncode == 5, args
        assert refused.stdout == ""
        assert refused.stderr.startswith("Error: the server found for this database serves ")
    stop = projctl("server", "stop", "--db", str(mine))
    assert stop.returncode == 5
    assert pid_alive(their_state.pid)


def test_poll_until_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "found", "later"])
    assert runtime.poll_until(lambda: next(answers), time.monotonic() + 5, 0.001) == "found"
    assert next(answers) == "later"  # not called once more after it held


def test_poll_until_asks_once_past_its_deadline_and_never_sleeps_past_it() -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(time.monotonic())
        return False

    assert runtime.poll_until(never, time.monotonic() - 1, 10.0) is None
    assert len(calls) == 1
    deadline = time.monotonic() + 0.2
    assert runtime.poll_until(never, deadline, 10.0) is None  # a pause far past the deadline
    assert time.monotonic() - deadline < 5.0  # bounded by the deadline, not by the pause


def test_poll_until_lets_the_condition_give_up() -> None:
    def fails() -> bool:
        raise ServerError("gone")

    with pytest.raises(ServerError, match="gone"):
        runtime.poll_until(fails, time.monotonic() + 5)


def test_the_lazy_names_are_the_functions_whatever_is_imported_first() -> None:
    """``ask`` and ``locate`` are the names of functions and of their modules: importing the
    modules (first through another name, or from a sibling) never shadows the functions."""
    probe = (
        "import types, projctl.runtime as r\n"
        "r.Endpoint, r.StartOptions\n"  # imports .locate and .launch (which imports .ask)
        "assert not isinstance(r.locate, types.ModuleType), r.locate\n"
        "assert not isinstance(r.ask, types.ModuleType), r.ask\n"
        "assert r.locate.__module__ == 'projctl.runtime.locate'\n"
        "assert r.ask.__module__ == 'projctl.runtime.ask'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
