"""A host shared with other programs and other users: what crosses the boundary is checked.

The database may have been written by another program; files beside it and paths to it
may be planted; another local user may try to read, block or feed what we do.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from projctl.store import ProjectStore
from projctl.watch import WatchState, render_projects_table, render_screen

from .conftest import as_another_user, fake_server_state, wait_until
from .test_cli_process import _run_on_a_terminal

Run = Callable[..., subprocess.CompletedProcess[str]]

HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[2J\u202egnp.exe"
SHOWN_NAME = "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202egnp.exe"


def _plant_control_characters(store: ProjectStore) -> str:
    """A project whose name and description another program filled with control characters."""
    project = store.create("placeholder", description="line one").project
    data = orjson.loads(store.path.read_bytes())
    record = data["projects"][project.project_id]
    record["name"] = HOSTILE_NAME
    record["description"] = "line one\nline two\x1b[31m"
    store.path.write_bytes(orjson.dumps(data))
    return project.project_id


def test_show_and_list_make_control_characters_visible(projctl: Run, store: ProjectStore) -> None:
    project_id = _plant_control_characters(store)
    shown = projctl("show", project_id)
    assert shown.returncode == 0
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert f"name         {SHOWN_NAME}\n" in shown.stdout
    assert "description  line one\nline two\\x1b[31m\n" in shown.stdout  # lines kept
    piped = projctl("list")
    assert piped.stdout.split("\t")[1] == SHOWN_NAME
    on_a_terminal = _run_on_a_terminal("list", env={"NO_COLOR": "1"})
    assert "\x1b]0;" not in on_a_terminal
    assert "\u202e" not in on_a_terminal
    assert "\\x1b]0;pwned" in on_a_terminal


def test_json_output_stays_exact(projctl: Run, store: ProjectStore) -> None:
    project_id = _plant_control_characters(store)
    assert orjson.loads(projctl("show", project_id, "--json").stdout)["name"] == HOSTILE_NAME
    assert orjson.loads(projctl("list", "--json").stdout)[0]["name"] == HOSTILE_NAME


def test_watch_screen_makes_control_characters_visible(store: ProjectStore) -> None:
    from projctl.subscribe import Message

    project_id = _plant_control_characters(store)
    record = store.get(project_id).to_dict()
    state = WatchState()
    snapshot = {"event_type": "snapshot", "seq": 1, "data": {"projects": [record]}}
    state.apply(Message(orjson.dumps(snapshot).decode(), snapshot), time.time())
    updated = {
        "event_type": "project_updated",
        "seq": 2,
        "timestamp": record["updated_at"],
        "data": {**record, "updated_fields": ["name\x1b[5m"]},
    }
    state.apply(Message(orjson.dumps(updated).decode(), updated), time.time())
    for renderable in (
        render_screen(state, time.time(), width=200, height=30),
        render_projects_table([record]),
    ):
        out = io.StringIO()
        Console(file=out, width=200, color_system=None).print(renderable)
        text = out.getvalue()
        for control in ("\x1b", "\u202e", "\x07"):
            assert control not in text
        assert "\\x1b]0;pwned" in text


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_database_that_is_not_a_regular_file_is_refused(
    projctl: Run, tmp_path: Path, kind: str
) -> None:
    import os

    if kind == "fifo":
        path = tmp_path / "db.fifo"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path / "db.dir"
        path.mkdir()
    else:
        path = Path("/dev/null")
    before = sorted(p.name for p in path.parent.iterdir()) if kind != "device" else []
    for args in (("create", "x"), ("list",), ("show", "p"), ("update", "p", "-n", "y")):
        done = projctl(*args, "--db", str(path), timeout=20)
        assert done.returncode == 4, (args, done.stderr)
        assert done.stderr == (
            f"Error: database {path} is not a regular file; it was left untouched\n"
        )
    if kind == "device":
        assert Path("/dev/null").is_char_device()
        assert not Path("/dev/null.lock").exists()
    else:
        assert sorted(p.name for p in path.parent.iterdir()) == before  # no lock, no temp file


# -- another user on the same host ------------------------------------------------------------


def _listen_as_stranger(
    socket_path: Path, ready_file: Path, seconds: float
) -> Callable[[], object]:
    """Work for the other user: listen on ``socket_path`` and count who connects, until
    ``<ready_file>.done`` appears (or ``seconds`` pass).

    A client's ``connect`` returns once its connection is queued, before this side accepts
    it: the queue is drained after ``.done`` appears, so a connection made before that is
    always counted, however late this side gets to run.
    """
    import socket as socket_module

    def work() -> object:
        connections = 0
        with socket_module.socket(socket_module.AF_UNIX) as listener:
            listener.bind(str(socket_path))
            socket_path.chmod(0o777)
            listener.listen()
            listener.settimeout(0.1)
            ready_file.write_text("ready")
            deadline = time.monotonic() + seconds
            done = ready_file.with_name(ready_file.name + ".done")
            while time.monotonic() < deadline and not done.exists():
                try:
                    peer, _ = listener.accept()
                except TimeoutError:
                    continue
                connections += 1
                peer.close()
            listener.setblocking(False)
            while True:
                try:
                    peer, _ = listener.accept()
                except BlockingIOError:
                    break
                connections += 1
                peer.close()
        return connections

    return work


@pytest.mark.usefixtures("broadcasting")
def test_a_planted_runtime_folder_beside_the_database_is_ignored(
    projctl: Run, shared_folder: Path
) -> None:
    """Another user plants the old layout's `.<db>.projctl/server.json` in a shared folder,
    naming their own socket and a pid: nothing of ours is forwarded to it, no pid is
    signalled, and a CI gate waiting for `completed` does not pass on their say-so."""
    import threading

    db = shared_folder / "team.json"
    planted = shared_folder / ".team.json.projctl"
    fake_socket = shared_folder / "fake.sock"
    ready = shared_folder / "ready"

    def plant() -> object:
        planted.mkdir(mode=0o777)
        fake_server_state(1, fake_socket, str(db)).write(planted / "server.json")
        return True

    assert as_another_user(plant) is True
    outcome: dict[str, object] = {}
    stranger = threading.Thread(
        target=lambda: outcome.update(
            connections=as_another_user(_listen_as_stranger(fake_socket, ready, 20))
        )
    )
    stranger.start()
    try:
        wait_until(ready.exists, what="the stranger listening")
        project_id = projctl("create", "secret plans", "--db", str(db)).stdout.strip()
        done = projctl("update", project_id, "--status", "in_progress", "--db", str(db))
        assert done.returncode == 0
        assert done.stderr == ""
        gate = projctl(
            "watch",
            "--json",
            "--event",
            "project_updated",
            "--status",
            "completed",
            "--count",
            "1",
            "--timeout",
            "2",
            "--db",
            str(db),
        )
        assert gate.returncode == 124
        stop = projctl("server", "stop", "--db", str(db))
        assert stop.returncode == 0
    finally:
        (shared_folder / "ready.done").touch()
        stranger.join(timeout=30)
    assert outcome["connections"] == 0
    assert sorted(p.name for p in planted.iterdir()) == ["server.json"]


@pytest.mark.usefixtures("broadcasting")
def test_a_runtime_folder_another_user_made_is_refused(
    projctl: Run, shared_folder: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_RUNTIME_DIR the runtime is `projctl-<uid>` in the temp folder: another
    user may create it first. It is refused, never chmod-ed or written into."""
    import os

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(shared_folder))
    squatted = shared_folder / f"projctl-{os.getuid()}"
    as_another_user(lambda: squatted.mkdir(mode=0o777) or True)
    before = squatted.stat()
    done = projctl("create", "still committed")
    assert done.returncode == 0
    assert done.stderr == (
        "Warning: event 1 is committed but was not broadcast: the runtime folder "
        f"{squatted} belongs to uid 65534, not 0; refusing to use it (remove it, or set "
        "XDG_RUNTIME_DIR to a folder of your own); subscribers resuming with ?since= will "
        "still receive it\n"
    )
    for args in (("watch", "--json", "--timeout", "5"), ("server", "status"), ("server", "stop")):
        refused = projctl(*args)
        assert refused.returncode == 5, args
        assert refused.stderr.startswith(f"Error: the runtime folder {squatted} belongs to uid")
        assert refused.stderr.count("\n") == 1
    after = squatted.stat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    assert list(squatted.iterdir()) == []
    assert ProjectStore(db_path).list_projects()[0].name == "still committed"


def test_a_symlinked_runtime_folder_is_refused(projctl: Run, tmp_path: Path) -> None:
    import os

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    runtime_base = Path(os.environ["XDG_RUNTIME_DIR"])
    (runtime_base / "projctl").symlink_to(elsewhere)
    refused = projctl("server", "status")
    assert refused.returncode == 5
    assert refused.stderr == (
        f"Error: the runtime folder {runtime_base / 'projctl'} is a symbolic link; refusing to "
        "use it (remove it, or set XDG_RUNTIME_DIR to a folder of your own)\n"
    )
    assert elsewhere.stat().st_mode & 0o777 == 0o755
    assert list(elsewhere.iterdir()) == []


def test_a_private_runtime_folder_opened_to_others_is_refused(projctl: Run) -> None:
    import os

    folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "projctl"
    folder.mkdir(mode=0o700)
    folder.chmod(0o755)
    refused = projctl("server", "status")
    assert refused.returncode == 5
    assert "has mode 0755, not 0700; refusing to use it" in refused.stderr
    assert folder.stat().st_mode & 0o777 == 0o755  # refused, not repaired


def test_files_beside_a_database_in_a_shared_folder(projctl: Run, shared_folder: Path) -> None:
    """The database is private by default; the lock cannot be taken by another user; planted
    temp-file symlinks are never followed."""
    import os

    db = shared_folder / "db.json"
    victim = shared_folder / "victim.txt"
    victim.write_text("mine")
    victim.chmod(0o600)
    # The other user plants links at every name the old code would have used.
    pids = list(range(os.getpid(), os.getpid() + 3000))

    def plant() -> object:
        for pid in pids:
            (shared_folder / f".db.json.tmp-{pid}").symlink_to(victim)
        return True

    assert as_another_user(plant) is True
    for number in range(5):
        assert projctl("create", f"p{number}", "--db", str(db)).returncode == 0
    assert victim.read_text() == "mine"
    assert db.stat().st_mode & 0o777 == 0o600
    lock = shared_folder / "db.json.lock"
    assert lock.stat().st_mode & 0o007 == 0

    def try_the_lock() -> object:
        try:
            os.open(lock, os.O_RDONLY)
        except PermissionError:
            return "refused"
        return "opened"

    assert as_another_user(try_the_lock) == "refused"

    def read_the_database() -> object:
        try:
            db.read_bytes()
        except PermissionError:
            return "refused"
        return "read"

    assert as_another_user(read_the_database) == "refused"


def test_a_request_never_reaches_another_users_socket(shared_folder: Path) -> None:
    """The kernel's word on the peer is checked before a byte is sent."""
    import threading

    from projctl import rpc
    from projctl.errors import ServerError

    fake_socket = shared_folder / "server.sock"
    ready = shared_folder / "ready"
    outcome: dict[str, object] = {}
    stranger = threading.Thread(
        target=lambda: outcome.update(
            connections=as_another_user(_listen_as_stranger(fake_socket, ready, 20))
        )
    )
    stranger.start()
    try:
        wait_until(ready.exists, what="the stranger listening")
        with pytest.raises(ServerError, match="is not this user's server"):
            rpc.request(fake_socket, rpc.OP_STATUS)
    finally:
        (shared_folder / "ready.done").touch()
        stranger.join(timeout=30)
    assert outcome["connections"] == 1  # it connected, checked, and sent nothing


def test_server_stop_never_signals_a_pid_it_has_not_verified(projctl: Run, db_path: Path) -> None:
    from projctl import runtime

    paths = runtime.runtime_paths(db_path)
    runtime.check_private_folder(paths.folder, create=True)
    with subprocess.Popen(["sleep", "60"]) as bystander:
        try:
            fake_server_state(bystander.pid, paths.socket, str(paths.db_path)).write(
                paths.state_file
            )
            stopped = projctl("server", "stop")
            assert stopped.returncode == 0
            assert stopped.stderr == (
                f"no server is running for {db_path}: its state entry named pid "
                f"{bystander.pid}, which is not that server (any more); removed the entry, "
                "signalled nothing\n"
            )
            assert bystander.poll() is None  # alive: never signalled
        finally:
            bystander.kill()
