"""``projctl wait PROJECT --for CONDITION``: at once when met, else follow the feed until it is."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import orjson
import pytest
from typer.testing import Result

from projctl.errors import InvalidInputError
from projctl.model import WaitCondition

from .conftest import PROJCTL

Run = Callable[..., subprocess.CompletedProcess[str]]
Cli = Callable[..., Result]


def create(cli: Cli, *args: str) -> str:
    result = cli("create", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_condition_parses_like_kubectl() -> None:
    assert WaitCondition.parse("status=completed") == WaitCondition("status", "completed")
    assert WaitCondition.parse("owner=ann") == WaitCondition("owner_id", "ann")
    assert WaitCondition.parse("name=Billing API") == WaitCondition("name", "Billing API")
    assert WaitCondition.parse("delete").deletion
    assert WaitCondition.parse("status=completed").met_by({"status": "completed"})
    assert not WaitCondition.parse("status=completed").met_by({"status": "created"})
    assert not WaitCondition.parse("status=completed").met_by(None)
    assert WaitCondition.parse("delete").met_by(None)
    for bad in ("status", "colour=red", "status=done", "=x", "", "type=Not A Slug"):
        with pytest.raises(InvalidInputError):
            WaitCondition.parse(bad)


def test_returns_at_once_when_already_met(cli: Cli) -> None:
    project_id = create(cli, "A", "--status", "completed")
    result = cli("wait", project_id, "--for", "status=completed")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{project_id}: status=completed\n"
    printed = orjson.loads(cli("wait", "A", "--for", "name=A", "-o", "json").stdout)
    assert printed["project_id"] == project_id


def test_a_missing_project_exits_3(cli: Cli) -> None:
    result = cli("wait", "nope", "--for", "status=completed")
    assert result.exit_code == 3
    assert result.stderr == "Error: no project with id or name 'nope'\n"
    assert cli("wait", "nope", "--for", "delete").exit_code == 3


def test_delete_already_done_is_met_from_the_journal(cli: Cli) -> None:
    project_id = create(cli, "Gone")
    assert cli("delete", project_id).exit_code == 0
    result = cli("wait", project_id, "--for", "delete")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{project_id}: deleted\n"
    assert cli("wait", "Gone", "--for", "delete", "-o", "name").stdout == project_id + "\n"


@pytest.mark.parametrize("condition", ["colour=red", "status=inprogress", "status"])
def test_a_bad_condition_exits_2(cli: Cli, condition: str) -> None:
    create(cli, "A")
    result = cli("wait", "A", "--for", condition)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1


def test_a_bad_timeout_exits_2(cli: Cli) -> None:
    create(cli, "A")
    result = cli("wait", "A", "--for", "status=completed", "--timeout", "5 min")
    assert result.exit_code == 2
    assert "--timeout='5 min' is not accepted" in result.stderr


def start_wait(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PROJCTL, "wait", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.usefixtures("broadcasting")
def test_follows_the_feed_until_met(projctl: Run) -> None:
    project_id = projctl("create", "A").stdout.strip()
    with start_wait(project_id, "--for", "status=completed", "--timeout", "1m") as waiting:
        assert projctl("update", project_id, "--status", "in_progress").returncode == 0
        assert projctl("update", project_id, "--status", "completed").returncode == 0
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out == f"{project_id}: status=completed\n"


@pytest.mark.usefixtures("broadcasting")
def test_waits_for_deletion(projctl: Run) -> None:
    project_id = projctl("create", "A").stdout.strip()
    with start_wait(project_id, "--for", "delete", "-o", "json", "--timeout", "1m") as waiting:
        assert projctl("delete", project_id).returncode == 0
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert orjson.loads(out)["name"] == "A"


@pytest.mark.usefixtures("broadcasting")
def test_deleted_while_waiting_exits_3(projctl: Run) -> None:
    project_id = projctl("create", "A").stdout.strip()
    with start_wait(project_id, "--for", "status=completed", "--timeout", "1m") as waiting:
        assert projctl("delete", project_id).returncode == 0
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 3
    assert out == ""
    # Deleted before wait looked (not found) or while it followed the feed (deleted):
    # both exit 3 with one line.
    assert err.splitlines()[-1] in (
        f"Error: project {project_id!r} was deleted while waiting for status=completed",
        f"Error: no project with id or name {project_id!r}",
    )


@pytest.mark.usefixtures("broadcasting")
def test_timeout_exits_124(projctl: Run) -> None:
    project_id = projctl("create", "A").stdout.strip()
    done = projctl("wait", project_id, "--for", "status=completed", "--timeout", "500ms")
    assert done.returncode == 124
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        f"Error: timed out after 500ms waiting for {project_id} to meet status=completed"
    )


def test_watch_project_with_a_shared_name_says_so(cli: Cli) -> None:
    first = create(cli, "Same")
    second = create(cli, "Same")
    result = cli("watch", "--project", "Same", "--json", "--timeout", "1")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: 2 projects are named 'Same': {first}, {second}; give one of these ids\n"
    )
