"""Say what is missing: a database not there yet, a mistyped choice, a folder to create."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import Result

from .conftest import PROJCTL

Cli = Callable[..., Result]
Run = Callable[..., subprocess.CompletedProcess[str]]


def create(cli: Cli, *args: str) -> str:
    result = cli("create", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_list_on_a_database_not_there_yet_says_so(cli: Cli, db_path: Path) -> None:
    result = cli("list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"projctl: no database at {db_path} yet\n"
    assert orjson.loads(cli("list", "--json").stdout) == []
    assert not db_path.exists()
    create(cli, "A")
    assert cli("list").stderr == ""


def test_show_on_a_database_not_there_yet_says_so_in_its_error(cli: Cli, db_path: Path) -> None:
    result = cli("show", "x")
    assert result.exit_code == 3
    assert result.stderr == f"Error: no database at {db_path} yet, so no project 'x'\n"


def test_the_default_database_missing_is_no_news(cli: Cli) -> None:
    result = cli("list", env={"PROJCTL_DB": None})  # the default: missing until the first change
    assert result.exit_code == 0
    assert "no database" not in result.stderr


def test_a_mistyped_status_gets_a_suggestion(cli: Cli) -> None:
    result = cli("list", "--status", "inprogress")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "'inprogress' is not one of" in result.stderr
    assert "; did you mean in_progress? (see 'projctl list --help')" in result.stderr
    assert "did you mean" not in cli("list", "--status", "zzz").stderr
    project_id = create(cli, "A")
    assert "did you mean on_hold?" in cli("update", project_id, "-s", "onhold").stderr
    assert "did you mean completed?" in cli("wait", "A", "--for", "status=complete").stderr


def test_show_prints_a_project_given_twice_once(cli: Cli) -> None:
    project_id = create(cli, "A")
    once = cli("show", project_id).stdout
    assert cli("show", project_id, project_id, "A").stdout == once
    assert len(orjson.loads(cli("show", project_id, "A", "--json").stdout)) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["show", "A"],
        ["info"],
        ["server", "status"],
        ["create", "B"],
        ["update", "A", "-s", "on_hold"],
    ],
)
def test_quiet_with_json_is_refused(cli: Cli, command: list[str]) -> None:
    create(cli, "A")
    for args in (["--json", "-q"], ["-o", "json", "--quiet"]):
        result = cli(*command, *args)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "contradict each other" in result.stderr


def test_quiet_works_with_every_command_that_prints(cli: Cli) -> None:
    project_id = create(cli, "A")
    for command in (["show", project_id], ["info"], ["server", "status"]):
        assert cli(*command, "-q").stdout == "", command
    assert cli("show", "nope", "-q").exit_code == 3
    assert cli("server", "status", "-q").exit_code == 3


def test_quiet_before_the_command_works_for_reads(cli: Cli) -> None:
    create(cli, "A")
    assert cli("-q", "info").stdout == ""


def test_an_explicit_folder_that_does_not_exist_is_not_created(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.json"
    result = cli("create", "A", "--db", str(target))
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: folder {target.parent} does not exist (the database's, from --db): create it "
        "first; projctl creates only its default data folder\n"
    )
    assert not (tmp_path / "nonexistent").exists()
    env = {"PROJCTL_DB": str(target)}
    assert cli("create", "A", env=env).exit_code == 4
    assert cli("watch", "--json", "--timeout", "1", env=env).exit_code == 4
    assert not (tmp_path / "nonexistent").exists()
    # Looking still looks: list says there is nothing there, info shows the path.
    assert cli("list", env=env).exit_code == 0
    assert cli("info", env=env).exit_code == 0


def test_the_default_data_folder_is_still_created(cli: Cli, tmp_path: Path) -> None:
    result = cli("create", "A", env={"PROJCTL_DB": None})
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "home" / ".local" / "share" / "projctl" / "projects.json").exists()


def start_watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PROJCTL, "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.usefixtures("broadcasting")
def test_watch_in_a_pipe_does_not_say_connected_and_ctrl_c_is_quiet(projctl: Run) -> None:
    assert projctl("create", "first").returncode == 0
    with start_watch("--json", "--since", "0") as watch:
        assert watch.stdout is not None
        assert orjson.loads(watch.stdout.readline())["data"]["name"] == "first"
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    assert watch.returncode == 130
    assert out == ""
    assert err == ""


@pytest.mark.usefixtures("broadcasting")
def test_watch_quiet_prints_no_events(projctl: Run) -> None:
    assert projctl("create", "first").returncode == 0
    done = projctl("watch", "-q", "--since", "0", "--count", "1", "--timeout", "30")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_watch_says_connected_on_a_terminal() -> None:
    """stderr a terminal, stdout a pipe: the line is there (a pty stands for the terminal)."""
    import pty

    main, secondary = pty.openpty()
    env = {**os.environ}
    env.pop("PROJCTL_NO_BROADCAST", None)
    create_done = subprocess.run(
        [PROJCTL, "create", "A"], env=env, capture_output=True, check=False, timeout=30
    )
    assert create_done.returncode == 0
    watch = subprocess.Popen(
        [PROJCTL, "watch", "--json", "--since", "0", "--count", "1", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"connected to" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(main, 1024)
            except OSError:
                break
        watch.communicate(timeout=30)
    finally:
        os.close(main)
        if watch.poll() is None:
            watch.kill()
    assert b"projctl watch: connected to ws://" in seen
    assert watch.returncode == 0
