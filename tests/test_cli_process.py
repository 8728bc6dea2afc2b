"""The installed ``projctl`` as real processes: exit codes, stream split, concurrency, crashes."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from projctl.runtime import runtime_paths
from projctl.store import ProjectStore

from .conftest import PROJCTL, mounted_tmpfs, readline_within, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_create_prints_id_on_stdout_only(projctl: Run, store: ProjectStore) -> None:
    done = projctl("create", "My Project", "--type", "api")
    assert done.returncode == 0
    assert done.stderr == ""
    assert store.get(done.stdout.strip()).name == "My Project"


def test_python_dash_m_works(store: ProjectStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "projctl", "create", "Via -m"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert store.get(done.stdout.strip()).name == "Via -m"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("create", ""), 2),
        (("create", "x", "--status", "nope"), 2),
        (("update", "proj_x"), 2),
        (("show", "proj_missing"), 3),
        (("delete", "proj_missing"), 3),
        (("--no-such-flag",), 2),
    ],
)
def test_errors_are_one_line_without_traceback(
    projctl: Run, args: tuple[str, ...], code: int
) -> None:
    done = projctl(*args)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr.startswith("Error: ")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_corrupt_database_exits_4_byte_for_byte_unchanged(projctl: Run, db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b'{"projects": {"a": 1}, "journal": [tru'
    db_path.write_bytes(garbage)
    done = projctl("create", "x")
    assert done.returncode == 4
    assert done.stderr == f"Error: database {db_path} is not valid JSON; it was left untouched\n"
    assert db_path.read_bytes() == garbage


def test_folder_that_is_a_file_exits_4(projctl: Run, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    done = projctl("create", "x", "--db", str(tmp_path / "blocker" / "db.json"))
    assert done.returncode == 4
    assert done.stderr == (
        f"Error: {tmp_path / 'blocker'}, the folder of the database (--db), is not a folder\n"
    )


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no write can go into: a mode bit for ordinary users, a read-only mount for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with mounted_tmpfs(folder, "ro,size=64k"):
        yield folder


def test_unwritable_folder_exits_4(projctl: Run, read_only_folder: Path) -> None:
    done = projctl("create", "x", "--db", str(read_only_folder / "projects.json"))
    assert done.returncode == 4
    assert done.stderr.startswith("Error: cannot open lock file ")
    assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    listing = projctl("list", "--db", str(read_only_folder / "projects.json"))
    assert listing.returncode == 0  # reading needs no lock


def test_pipe_output_is_clean_for_scripts(projctl: Run) -> None:
    ids = [projctl("create", f"p{i}").stdout.strip() for i in range(3)]
    listing = projctl("list")
    assert [line.split("\t")[0] for line in listing.stdout.splitlines()] == ids
    assert "\x1b" not in listing.stdout


def _create_many(worker: int, count: int) -> list[str]:
    ids = []
    for number in range(count):
        done = subprocess.run(
            [PROJCTL, "create", f"w{worker}-{number}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        ids.append(done.stdout.strip())
    return ids


@pytest.mark.slow  # 200 whole processes; test_parallel_updates_... keeps a quick race check
def test_concurrent_creates_lose_nothing(store: ProjectStore) -> None:
    workers, per_worker = 8, 25
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_create_many, range(workers), [per_worker] * workers))
    ids = [project_id for batch in results for project_id in batch]
    assert len(ids) == 200
    assert len(set(ids)) == 200
    stored = store.list_projects()
    assert {p.project_id for p in stored} == set(ids)
    assert len({p.name for p in stored}) == 200
    journal = store.journal()
    assert [event["seq"] for event in journal] == list(range(1, 201))
    assert {event["data"]["project_id"] for event in journal} == set(ids)


def test_parallel_updates_to_different_fields_all_survive(store: ProjectStore) -> None:
    project = store.create("Shared").project
    changes = {
        "--name": [f"name {n}" for n in range(6)],
        "--type": [f"type-{n}" for n in range(6)],
        "--status": ["in_progress", "on_hold", "completed", "archived", "created", "on_hold"],
        "--owner": [f"owner{n}" for n in range(6)],
        "--description": [f"description {n}" for n in range(6)],
    }

    def apply(option: str) -> None:
        for value in changes[option]:
            subprocess.run(
                [PROJCTL, "update", project.project_id, f"{option}={value}"],
                capture_output=True,
                timeout=60,
                check=True,
            )

    with ThreadPoolExecutor(len(changes)) as pool:
        list(pool.map(apply, changes))
    final = store.get(project.project_id)
    assert final.name == "name 5"
    assert final.type == "type-5"
    assert final.status == "on_hold"
    assert final.owner_id == "owner5"
    assert final.description == "description 5"
    updates = [event for event in store.journal() if event["event_type"] == "project_updated"]
    assert len(updates) == 30
    assert [event["seq"] for event in store.journal()] == list(range(1, 32))


_WRITER = """
import sys
from projctl.store import ProjectStore
store = ProjectStore(sys.argv[1])
sys.stdout.write("ready\\n"); sys.stdout.flush()
number = 0
while True:
    project = store.create(
        f"crash {number} " + "x" * 150, owner_id="writer", description="y" * 2000
    ).project
    store.update(project.project_id, {"status": "in_progress"})
    number += 1
"""


@contextlib.contextmanager
def busy_writer(path: Path) -> Iterator[None]:
    """A process rewriting the database as fast as it can, SIGKILLed on exit from the block."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as writer:
        try:
            assert writer.stdout is not None
            assert readline_within(writer.stdout, 30, "the writer") == b"ready\n"
            yield
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)


# Forty writer processes killed mid-write (~7 s of both cores): slow run.
@pytest.mark.slow
def test_writer_killed_at_random_moments_never_corrupts(store: ProjectStore) -> None:
    rng = random.Random(1234)
    store.create("Before the storm")
    kills = 40
    for _ in range(kills):
        with busy_writer(store.path):
            time.sleep(rng.uniform(0, 0.05))
        # The file always loads, and the change and its event landed together or not at all.
        data = orjson.loads(store.path.read_bytes())
        projects = store.list_projects()
        journal = store.journal()
        assert data["meta"]["1"]["last_seq"] == journal[-1]["seq"] == len(journal)
        created = {e["data"]["project_id"] for e in journal if e["event_type"] == "project_created"}
        assert {p.project_id for p in projects} == created
    # The next command is not blocked by the dead writers' lock (it would wait for the 10 s
    # lock timeout and fail with exit 4).
    done = subprocess.run(
        [PROJCTL, "create", "After the storm"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    leftovers = [p.name for p in store.path.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def _run_on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """Run projctl with stdout on a pseudo-terminal; return what it wrote there."""
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [PROJCTL, *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", **env},
            timeout=30,
            check=True,
        )
        assert done.stderr == b""
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            output += chunk
        return output.decode()
    finally:
        os.close(leader)


def test_list_on_a_terminal_has_colour_unless_no_color(projctl: Run) -> None:
    assert projctl("create", "Coloured", "--status", "in_progress").returncode == 0
    # An SGR sequence that sets a foreground colour (30-38, 90-97); bold or italic are not colour.
    colour = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")
    coloured = _run_on_a_terminal("list", env={})
    assert "Coloured" in coloured
    assert colour.search(coloured)  # in_progress is yellow
    assert "┃" in coloured  # a boxed table, not tab-separated lines
    plain = _run_on_a_terminal("list", env={"NO_COLOR": "1"})
    assert "Coloured" in plain
    assert not colour.search(plain)
    assert "┃" in plain


# Three seconds of reads against a writer in a loop: slow run.
@pytest.mark.slow
def test_readers_never_see_a_half_written_file(store: ProjectStore) -> None:
    store.create("seed")
    reads = 0
    with busy_writer(store.path):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            store.list_projects()  # raises CorruptDatabaseError on a torn file
            reads += 1
    assert reads > 50
    assert len(store.list_projects()) > 1  # the writer really wrote meanwhile


def test_a_wait_for_the_lock_is_announced_and_ctrl_c_ends_it(projctl: Run, db_path: Path) -> None:
    import fcntl

    assert projctl("create", "first").returncode == 0
    lock = db_path.with_name(db_path.name + ".lock")
    with open(lock, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with subprocess.Popen(
            [PROJCTL, "create", "second"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as waiting:
            assert waiting.stderr is not None
            line = readline_within(waiting.stderr, 20, "the waiting create")
            assert line == (
                f"projctl: waiting for the database lock {lock} (held by pid {os.getpid()})...\n"
            )
            waiting.send_signal(signal.SIGINT)
            out, err = waiting.communicate(timeout=15)
    assert waiting.returncode == 130
    assert (out, err) == ("", "Error: interrupted\n")
    assert [p.name for p in ProjectStore(db_path).list_projects()] == ["first"]


def test_list_with_filters_that_match_nothing_says_so(projctl: Run) -> None:
    for name in ("a", "b"):
        assert projctl("create", name).returncode == 0
    screen = _run_on_a_terminal_with_stderr("list", "--owner", "nobody")
    assert screen == "No projects match --owner nobody (2 in all).\n"


def _run_on_a_terminal_with_stderr(*args: str) -> str:
    """Run projctl with stdout on a pseudo-terminal; return its stderr."""
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [PROJCTL, *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
            timeout=30,
            check=True,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return done.stderr.decode()


@pytest.mark.usefixtures("broadcasting")
def test_server_start_status_and_logs(projctl: Run) -> None:
    none = projctl("server", "logs")
    assert none.returncode == 3
    assert none.stderr.startswith("Error: no server log yet: no background server has run ")
    started = projctl("server", "start")
    assert started.returncode == 0
    url = started.stdout.strip()
    assert url.startswith("ws://127.0.0.1:")
    status = projctl("server", "status", "--json")
    assert status.returncode == 0
    assert orjson.loads(status.stdout)["url"] == url
    assert projctl("server", "start").stdout.strip() == url  # already running: the same one
    logs = projctl("server", "logs", "--tail", "1")
    log_file = runtime_paths(Path(os.environ["PROJCTL_DB"])).log_file
    assert logs.returncode == 0
    assert f"serving {url} for " in logs.stdout
    assert logs.stdout.count("\n") == 1
    with subprocess.Popen(
        [PROJCTL, "server", "logs", "-f", "--tail", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            # It must be following before the stop writes, or it starts after the last line.
            wait_until(lambda: _has_open(follower.pid, log_file), what="the follower reading")
            assert projctl("server", "stop").returncode == 0
            assert follower.stdout is not None
            line = readline_within(follower.stdout, 10, "the follower")
            assert "INFO projctl.server: stopping (pid " in line
        finally:
            follower.send_signal(signal.SIGINT)
            follower.communicate(timeout=10)
    assert follower.returncode == 130


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has the file ``path`` open."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(path):
                    return True
    return False
