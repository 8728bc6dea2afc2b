"""Fixtures shared by every test: an isolated environment, a store, and two ways to run projctl."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import pytest
from typer.testing import CliRunner, Result

from projctl.backend import Change
from projctl.cli import app
from projctl.config import VARIABLES
from projctl.runtime import ServerState, pid_alive
from projctl.store import ProjectStore

if TYPE_CHECKING:
    from ._nats import Cluster
    from ._remote import TeamServer, Tls

PROJCTL = str(Path(sys.executable).with_name("projctl"))

# A job started in the background by a non-interactive shell (``cmd &``, as some CI runners
# start their steps) inherits SIGINT ignored, and so would every process the tests start:
# the tests that press Ctrl-C would wait for nothing. The suite's children get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_T = TypeVar("_T")
_S = TypeVar("_S", str, bytes)


def _polls(timeout: float, what: str) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout:g}s")


def wait_until(condition: Callable[[], _T], timeout: float = 10.0, what: str = "condition") -> _T:
    """Poll ``condition`` until it returns something true, and return that; fail at ``timeout``.

    The suite's one way to wait: never a bare sleep as synchronisation.
    """
    for _ in _polls(timeout, what):
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("unreachable")


def readline_within(stream: IO[_S], timeout: float = 10.0, what: str = "the process") -> _S:
    """One line from ``stream`` (a child's pipe), failing at ``timeout`` instead of hanging.

    The read runs in a thread: a pipe's buffered reader cannot be polled safely with
    ``select``. After a timeout the thread stays blocked until the caller kills the child.
    """
    lines: list[_S] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        raise AssertionError(f"no line from {what} within {timeout:g}s")
    return lines[0]


async def until(condition: Callable[[], _T], timeout: float = 10.0, what: str = "condition") -> _T:
    """:func:`wait_until` for a test running on an event loop (the loop keeps running)."""
    for _ in _polls(timeout, what):
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class SystemTool:
    """A program some tests drive that pip cannot install, and how to get it."""

    name: str
    used_by: str  # which tests need it, for the reason a test gives
    apt: str  # the Debian/Ubuntu package
    brew: str  # what to `brew install` on macOS
    executables: tuple[str, ...] = ()  # the names to look for on PATH, if not just `name`

    @property
    def missing(self) -> str:
        """The one-line reason a test gives when the tool is not on PATH."""
        return (
            f"{self.name} is not installed ({self.used_by}): "
            f"apt-get install {self.apt} / brew install {self.brew}"
        )


# Every system tool a test may need. `.ci/run` installs those the suite uses today.
SYSTEM_TOOLS = {
    tool.name: tool
    for tool in (
        SystemTool("tmux", "the live watch and zsh completion tests drive it", "tmux", "tmux"),
        SystemTool("bash", "the completion, CI example and subshell tests run it", "bash", "bash"),
        SystemTool("zsh", "the zsh completion tests run it", "zsh", "zsh"),
        SystemTool("fish", "the fish completion tests run it", "fish", "fish"),
        SystemTool("curl", "the README's HTTP API examples run it", "curl", "curl"),
        SystemTool(
            "chromium",
            "the dashboard tests drive it",
            "chromium",
            "--cask chromium",
            executables=("chromium", "chromium-browser"),
        ),
    )
}


def running_in_ci() -> bool:
    """Whether ``CI`` is ``true`` or ``1`` (any case) in the environment, read at each call."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def require_tool(name: str) -> str:
    """The path of the system tool ``name`` (a key of ``SYSTEM_TOOLS``) on PATH.

    A missing tool skips the test with a one-line reason naming the tool and how to get it;
    under CI it fails the test instead, so CI can never go green by skipping.
    """
    tool = SYSTEM_TOOLS[name]
    for executable in tool.executables or (tool.name,):
        path = shutil.which(executable)
        if path:
            return path
    if running_in_ci():
        pytest.fail(f"{tool.missing} (under CI a missing tool fails the run)", pytrace=False)
    pytest.skip(tool.missing)


@pytest.fixture
def bash() -> str:
    """The path of bash, which several tests run; skips (fails under CI) without it."""
    return require_tool("bash")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=20.0,
        help="how long the chaos soak runs (default 20; run longer by hand)",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile projctl's bytecode before any test starts a ``projctl`` process, as an installed
    package has it. Where ``PYTHONDONTWRITEBYTECODE`` is set (some CI runners set it) each of
    the suite's hundreds of processes would otherwise compile every module it imports again:
    about 10 s of the README's test command in a fresh clone."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller compiled it before starting the workers
    import compileall

    import projctl

    compileall.compile_dir(str(Path(projctl.__file__).parent), quiet=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak's per-test timeout grows with ``--soak-seconds``: a long soak by hand is no hang."""
    soak_seconds = float(config.getoption("--soak-seconds"))
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(pytest.mark.timeout(soak_seconds + 180))


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point every path projctl might touch at the test's own folder, never the real home.

    Commands do not broadcast unless a test asks (``broadcasting`` fixture); any
    server a test started is stopped when it ends, so no test leaves a process behind.
    """
    # A developer's own settings must not leak into the tests.
    for variable in VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    # The runtime folder holds Unix sockets, whose paths must stay short: not under tmp_path.
    run = Path(tempfile.mkdtemp(prefix="pjr-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    # An explicit database path's folder must exist (projctl creates only its default one).
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("PROJCTL_DB", str(tmp_path / "data" / "projects.json"))
    monkeypatch.setenv("PROJCTL_OWNER", "tester")
    monkeypatch.setenv("PROJCTL_NO_BROADCAST", "1")
    # Servers bind loopback only, on a free port.
    monkeypatch.setenv("PROJCTL_HOST", "127.0.0.1")
    monkeypatch.setenv("PROJCTL_PORT", "0")
    try:
        yield
    finally:
        reap_servers(run, tmp_path)
        shutil.rmtree(run, ignore_errors=True)


def server_pids(runtime_base: Path, tmp_path: Path) -> set[int]:
    """Servers a test may have started: named by a state file in its runtime folder, or
    running for a database under its ``tmp_path``."""
    pids = set()
    for state_file in runtime_base.rglob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(ServerState.decode(state_file.read_bytes()).pid)
    marker = os.fsencode(str(tmp_path))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"projctl.server" in argv and any(marker in arg for arg in argv):
                    pids.add(int(entry.name))
    return {pid for pid in pids if pid != os.getpid() and pid_alive(pid)}


def server_up(db_path: Path, timeout: float = 20) -> ServerState:
    """The database's server once its state file names it: a command that starts one in the
    background does not wait for it, so a test that needs it running waits here."""
    from projctl.runtime import read_server_state, runtime_paths

    return wait_until(
        lambda: read_server_state(runtime_paths(db_path)), timeout, "the server is up"
    )


def reap_servers(runtime_base: Path, tmp_path: Path) -> list[int]:
    """Kill every server the test left running; return their pids."""
    import signal

    killed = sorted(server_pids(runtime_base, tmp_path))
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in killed:
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"server pid {pid} gone")
    return killed


@pytest.fixture
def broadcasting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let commands forward events (and start servers) as they do outside the tests."""
    monkeypatch.delenv("PROJCTL_NO_BROADCAST")


@pytest.fixture
def db_path() -> Path:
    return Path(os.environ["PROJCTL_DB"])


class OwnedStore(ProjectStore):
    """A store whose creates default to one owner, so tests need not name it each time.

    The test suite's alone: projctl's owner rule (``PROJCTL_OWNER``, else the user's name)
    lives in :class:`projctl.Database`, and :meth:`ProjectStore.create` takes an owner.
    """

    def __init__(self, path: Path | str, *, owner: str = "tester", **options: Any) -> None:
        super().__init__(path, **options)
        self.owner = owner

    def create(self, name: str, *, owner_id: str | None = None, **fields: str) -> Change:  # type: ignore[override]
        return super().create(name, owner_id=self.owner if owner_id is None else owner_id, **fields)


@pytest.fixture
def store(db_path: Path) -> ProjectStore:
    return OwnedStore(db_path)


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run projctl in-process: ``cli("create", "X")``."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, prog_name="projctl")

    return invoke


def run_projctl(
    *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The installed ``projctl ARGS`` as a real process with exactly ``env``: no standard
    input, output captured as text, bounded by ``timeout``."""
    return subprocess.run(
        [PROJCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


@pytest.fixture
def projctl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``projctl`` as a real process, bounded in time."""
    assert shutil.which(PROJCTL), f"{PROJCTL} is not installed"

    def run(
        *args: str, timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_projctl(*args, timeout=timeout, env={**os.environ, **(env or {})})

    return run


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for the test (root only); skips where mounting is refused."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False, timeout=10)


def fake_server_state(pid: int, socket: Path, db: str, port: int = 1) -> ServerState:
    """A state entry naming ``pid`` and ``socket`` as the server of ``db``: what a stale,
    copied or planted entry looks like to the code that reads it."""
    return ServerState(
        pid=pid,
        host="127.0.0.1",
        port=port,
        url=f"ws://127.0.0.1:{port}/ws",
        token="stolen",
        socket=socket,
        db=db,
        database_id="",
        version="0",
        auto=True,
        subscriber_token=None,
        started_at=0.0,
    )


NOBODY = 65534


def as_another_user(work: Callable[[], object], timeout: float = 30) -> object:
    """Run ``work`` in a forked child that has dropped to an unprivileged uid (``nobody``);
    return what it returns (JSON-able), or raise what it raised as an AssertionError.

    Needs root (skips otherwise). The child imports nothing new after dropping: that uid
    may not read the interpreter's own folders.
    """
    import json
    import signal

    if os.geteuid() != 0:
        pytest.skip("dropping to another uid needs root")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                payload = {"result": work()}
            except BaseException as error:
                payload = {"error": f"{type(error).__name__}: {error}"}
                code = 1
            os.write(writer, json.dumps(payload).encode())
        finally:
            os._exit(code)
    os.close(writer)
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the other user's work did not finish in time")
            import select

            ready, _, _ = select.select([reader], [], [], remaining)
            if ready:
                chunk = os.read(reader, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(reader)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks) or b'{"error": "the child wrote nothing"}')
    if "error" in payload:
        raise AssertionError(f"as uid {NOBODY}: {payload['error']}")
    return payload["result"]


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write to, with the sticky bit, like /tmp or a team share.

    Under /tmp itself: pytest's own temp folders are closed to other users.
    """
    folder = Path(tempfile.mkdtemp(prefix="pjshared-", dir="/tmp"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A private CA and a certificate it signed for 127.0.0.1 and localhost (tests/_remote.py)."""
    from ._remote import make_tls

    return make_tls(tmp_path)


@pytest.fixture
def team(tmp_path: Path, tls: Tls) -> Iterator[TeamServer]:
    """A team server: ``projctl serve`` over TLS with a token file, and a way to run commands
    against it from another machine (tests/_remote.py)."""
    from ._remote import team_server

    with team_server(tmp_path, tls) as team:
        yield team


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A three-node NATS JetStream cluster on loopback for the session (each test uses a
    database of its own name); every node is stopped and waited for at the end. Skips
    (fails under CI) without ``nats-server`` or nats-py."""
    from projctl.jetstream import INSTALL_HINT, nats_available

    from ._nats import MISSING, server_binary, start_cluster

    missing = (
        MISSING
        if server_binary() is None
        else None
        if nats_available()
        else f"nats-py is not installed (the JetStream backend needs it): {INSTALL_HINT}"
    )
    if missing is not None:
        if running_in_ci():
            pytest.fail(f"{missing} (under CI a missing tool fails the run)", pytrace=False)
        pytest.skip(missing)
    with start_cluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


def nats_database(cluster: Cluster) -> str:
    """A fresh JetStream database location on ``cluster``: a name no other test uses."""
    import secrets

    return f"{cluster.location}/t{secrets.token_hex(6)}"
