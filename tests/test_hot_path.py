"""The commands a shell runs most import what they need and nothing more.

Each case runs the installed command line in a fresh interpreter and reads ``sys.modules`` as it
exits. Our own modules are pinned exactly, third-party packages by name, and the heavy standard
modules (asyncio, logging, sockets, ...) are listed where they must not appear: a lazy import that
leaks to the top of a module fails here, not in a benchmark weeks later.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterable

import pytest

from .conftest import run_projctl

#: What ``projctl --help`` may load of ours: the group, its settings table and the exit codes
#: (not the contexts: a command reads them only when no --db or PROJCTL_DB says where).
#: No command module: ``--help`` lists the commands from their summaries.
HELP = {
    "projctl",
    "projctl._version",
    "projctl.cli",
    "projctl.cli._lazy",
    "projctl.config",
    "projctl.errors",
    "projctl.model",
}
#: A command of ``projctl.cli.projects``, before it touches the database.
COMMAND = HELP | {"projctl.cli._options", "projctl.cli.projects", "projctl.events"}
#: ``list``: the file, and no server.
LIST = COMMAND | {
    "projctl._files",
    "projctl.backend",
    "projctl.local",
    "projctl.store",
    "projctl._storefile",
    "projctl._storetables",
}
#: ``create`` with its server up: the file, then one forward over the local socket.
CREATE = LIST | {
    "projctl.rpc",
    "projctl.runtime",
    "projctl.runtime.ask",
    "projctl.runtime.paths",
    "projctl.runtime.state",
    "projctl.runtime.wait",
}
#: Third-party imports (beyond typer's own) each may make.
STORAGE = ("orjson", "tinydb")
#: Standard modules none of them needs: the event loop, logging, the server's and the
#: team client's networking, argument parsing for a server launch.
NEVER = {
    "asyncio",
    "logging",
    "argparse",
    "ssl",
    "http.client",
    "urllib.request",
    "email",
    "concurrent.futures",
    # Each costs a command a millisecond or more; what it offers is done more cheaply.
    "hashlib",
    "tempfile",
    "getpass",
}
#: ... and what only a command that talks to a server may load.
NO_SERVER = NEVER | {"socket"}

_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + repr(sorted(sys.modules))))\n"
    "sys.argv = ['projctl', *sys.argv[1:]]\n"
    "from projctl.cli import main\n"
    "main()\n"
)


def loaded(*args: str, **popen: object) -> set[str]:
    """The modules ``projctl ARGS`` has loaded when it exits (which must be with 0)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        stdin=subprocess.DEVNULL,
        capture_output="stdout" not in popen,
        text=True,
        timeout=60,
        check=False,
        **popen,  # type: ignore[call-overload]
    )
    errors = done.stderr
    before, _, modules = errors.rpartition("\nMODULES ")
    assert done.returncode == 0, errors
    assert modules, errors
    assert before.strip() == "", before
    return set(ast.literal_eval(modules))


@functools.cache
def _loaded_alone(*imports: str) -> frozenset[str]:
    """The modules a bare interpreter holds after importing ``imports``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys, {', '.join(imports)}; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return frozenset(json.loads(done.stdout))


def _tops(modules: Iterable[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def third_party(modules: set[str], allowed: tuple[str, ...] = ()) -> set[str]:
    """The top-level third-party packages in ``modules`` beyond typer's own.

    What an ``allowed`` import loads of its own accord (rich 14's console loads attrs when it is
    installed; orjson 3.9 loads zoneinfo, and so sysconfig's data) is that package's cost at its
    installed version, not ours: it is left out, and only the allowed packages' names remain.
    """
    typer_loads = _loaded_alone("typer")
    theirs = (
        _loaded_alone("typer", *allowed)
        - typer_loads
        - {name.partition(".")[0] for name in allowed}
    )
    tops = {name.partition(".")[0] for name in modules}
    return {top for top in tops - typer_loads - theirs if top not in sys.stdlib_module_names} - {
        "projctl"
    }


def ours(modules: set[str]) -> set[str]:
    return {name for name in modules if name == "projctl" or name.startswith("projctl.")}


def check(
    modules: set[str], *, projctl: set[str], packages: tuple[str, ...], never: set[str]
) -> None:
    """`modules` hold exactly `projctl` of ours, `packages` beyond typer's, nothing of `never`."""
    assert ours(modules) == projctl
    assert third_party(modules, packages) == _tops(packages)
    # What typer or an allowed package loads itself (rich 14's segment imports logging) is theirs.
    assert sorted(modules & never - _loaded_alone("typer", *packages)) == []


def test_help_loads_no_command_and_no_storage() -> None:
    check(loaded("--help"), projctl=HELP, packages=(), never=NO_SERVER | {"json"})


def test_list_loads_the_store_and_no_server_or_table() -> None:
    loaded("create", "x")  # a database to list (PROJCTL_NO_BROADCAST: no server)
    modules = loaded("list")
    check(modules, projctl=LIST, packages=STORAGE, never=NO_SERVER)


@pytest.fixture
def server_up(broadcasting: None) -> None:
    started = run_projctl("server", "start", env=dict(os.environ))
    assert started.returncode == 0, started.stderr


@pytest.mark.usefixtures("server_up")
def test_create_with_its_server_up_loads_the_forward_and_nothing_of_serving() -> None:
    modules = loaded("create", "forwarded")
    check(modules, projctl=CREATE, packages=STORAGE, never=NEVER)
    done = run_projctl("server", "status", env=dict(os.environ))
    assert "latest seq 1," in done.stdout  # the forward reached it


def test_a_team_server_command_loads_no_data_folder_and_no_hashes() -> None:
    """With ``PROJCTL_URL`` no file here is opened: the settings never ask the platform for the
    data folder, and the team client's idempotency keys need neither ``secrets`` nor OpenSSL's
    hashes (``hmac``)."""
    probe = (
        "import sys\n"
        "from projctl.config import load_settings\n"
        "settings = load_settings({'PROJCTL_URL': 'https://127.0.0.1:1'})\n"
        "import projctl.remote\n"
        "print(settings.db_path, sorted(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    db_path, _, modules = done.stdout.partition(" ")
    assert db_path == os.devnull
    assert set(ast.literal_eval(modules)) & {"platformdirs", "secrets", "hmac", "hashlib"} == set()


def test_a_command_exits_without_collecting_its_heap() -> None:
    """The interpreter's collections at exit cost a command as much as its work: the
    heap is frozen by the time they run (this probe's atexit handler runs after projctl's)."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('FROZEN', gc.get_freeze_count(), file=sys.stderr))\n"
        "sys.argv = ['projctl', '--help']\n"
        "from projctl.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    frozen = int(done.stderr.rpartition("FROZEN ")[2])
    assert frozen > 10_000  # typer's modules alone hold more objects than that


def test_list_on_a_terminal_loads_the_table_and_not_live() -> None:
    """On a terminal ``list`` prints a table, and pays for that table only."""
    assert run_projctl("create", "On a terminal", env=dict(os.environ)).returncode == 0
    leader, follower = os.openpty()
    try:
        modules = loaded(
            "list",
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert {"rich.table", "rich.console"} <= modules
    check(
        modules,
        projctl=LIST | {"projctl.watch", "projctl.watch.table", "projctl.watch.words"},
        packages=(*STORAGE, "rich.console", "rich.table"),
        never=NO_SERVER | {"rich.live"},
    )
