"""Names people trust: a shared name is said, --unique refuses it, id prefixes resolve, aliases."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import Result

import projctl
from projctl.backend import Create, Update, write_fingerprint
from projctl.errors import InvalidInputError, NameTakenError, ProjectNotFoundError
from projctl.model import Project, resolve_reference
from projctl.store import ProjectStore

from .conftest import PROJCTL, readline_within

Cli = Callable[..., Result]


def create(cli: Cli, *args: str) -> str:
    result = cli("create", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def project(project_id: str, name: str) -> Project:
    return Project(project_id, name, "api", "created", "ann", "", "t", "t")


def test_resolve_reference_order() -> None:
    projects = [
        project("proj_20240101_000000", "proj_20240101_000000_2"),
        project("proj_20240101_000000_2", "Alpha"),
        project("proj_20240102_000000", "Beta"),
        project("proj_20240103_000000", "Beta"),
    ]
    # An exact id wins over a name, a name over a prefix.
    assert resolve_reference("proj_20240101_000000_2", projects) == "proj_20240101_000000_2"
    assert resolve_reference("Alpha", projects) == "proj_20240101_000000_2"
    assert resolve_reference("proj_20240102", projects) == "proj_20240102_000000"
    with pytest.raises(InvalidInputError, match="2 projects are named 'Beta'"):
        resolve_reference("Beta", projects)
    with pytest.raises(InvalidInputError) as ambiguous:
        resolve_reference("proj_2024010", projects)
    assert str(ambiguous.value) == (
        "4 project ids begin with 'proj_2024010': proj_20240101_000000, "
        "proj_20240101_000000_2, proj_20240102_000000, proj_20240103_000000; give more of the id"
    )
    # A whole id names one project: deleted, it is not the beginning of its successor's.
    with pytest.raises(ProjectNotFoundError):
        resolve_reference("proj_20240102_000000", projects[:1] + projects[2:1])
    assert resolve_reference("proj_20240101_00000", projects[1:]) == "proj_20240101_000000_2"
    with pytest.raises(ProjectNotFoundError):
        resolve_reference("proj_20240101_000000", projects[1:])
    for missing in ("", "nope", "proj_2025"):
        with pytest.raises(ProjectNotFoundError):
            resolve_reference(missing, projects)


def test_a_unique_id_prefix_works_wherever_a_project_is_taken(
    cli: Cli, store: ProjectStore
) -> None:
    first = create(cli, "A")
    prefix = first[: len("proj_20")]
    assert cli("show", prefix, "-o", "name").stdout == first + "\n"
    assert cli("update", prefix, "-s", "on_hold").stdout == f"{first}: updated status\n"
    second = create(cli, "B")
    result = cli("show", prefix)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: 2 project ids begin with {prefix!r}: {first}, {second}; give more of the id\n"
    )
    assert cli("delete", second).exit_code == 0
    assert cli("delete", prefix).stdout == f"{first}: deleted\n"
    assert store.list_projects() == []


def test_create_with_a_taken_name_warns_naming_the_other(cli: Cli, store: ProjectStore) -> None:
    first = create(cli, "Billing")
    result = cli("create", " Billing ")
    assert result.exit_code == 0
    assert result.stderr == f"Warning: another project is named 'Billing' too: {first}\n"
    assert len(store.list_projects()) == 2


@pytest.mark.parametrize("how", ["--unique", "PROJCTL_UNIQUE_NAMES"])
def test_unique_refuses_a_taken_name(cli: Cli, store: ProjectStore, how: str) -> None:
    first = create(cli, "Billing")
    args, env = (["--unique"], None) if how == "--unique" else ([], {how: "1"})
    result = cli("create", "Billing", *args, env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: another project is named 'Billing' ({first}); names are unique "
        "(--unique or PROJCTL_UNIQUE_NAMES)\n"
    )
    assert len(store.list_projects()) == 1
    other = create(cli, "Other")
    assert cli("update", other, "--name", "Billing", *args, env=env).exit_code == 2
    assert store.get(other).name == "Other"


def test_two_unique_creates_racing_with_one_name_cannot_both_pass(store: ProjectStore) -> None:
    """The name is checked in the write's own transaction: two writers that start together
    (both waiting for the lock) cannot both find the name free."""
    store.create("Seed")
    racers = []
    with open(store.lock_path, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        for _ in range(2):
            racers.append(
                subprocess.Popen(
                    [PROJCTL, "create", "Billing", "--unique"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PROJCTL_NO_BROADCAST": "1"},
                )
            )
        for racer in racers:  # each has done all it does before the commit's lock
            assert racer.stderr is not None
            line = readline_within(racer.stderr, 30, "a racer")
            assert line.startswith("projctl: waiting for the database lock"), line
    finished = [racer.communicate(timeout=30) for racer in racers]
    codes = sorted(racer.returncode for racer in racers)
    assert codes == [0, 2], finished
    (billing,) = [p.project_id for p in store.list_projects() if p.name == "Billing"]
    loser = next(err for out, err in finished if not out)
    assert loser.endswith(
        f"Error: another project is named 'Billing' ({billing}); names are unique "
        "(--unique or PROJCTL_UNIQUE_NAMES)\n"
    )


def test_the_name_check_is_the_commits(store: ProjectStore) -> None:
    """A write reports the other projects with its name, or refuses them, in one commit."""
    first = store.create("Billing", owner_id="ann").project.project_id
    (change,) = store.commit(Create(" Billing ", "ann"))
    assert change.same_name == (first,)
    second = change.project.project_id
    with pytest.raises(
        NameTakenError, match=f"another project is named 'Billing' \\({first}, {second}\\)"
    ):
        store.commit(Create("Billing", "ann", unique=True))
    other = store.create("Other", owner_id="ann").project.project_id
    with pytest.raises(NameTakenError):
        store.commit(Update(other, {"name": "Billing"}, unique=True))
    assert store.get(other).name == "Other"
    # Keeping its own name is no rename: neither refused nor reported.
    (kept,) = store.commit(Update(first, {"name": "Billing", "status": "on_hold"}, unique=True))
    assert kept.same_name == ()
    assert kept.updated_fields == ("status",)
    (renamed,) = store.commit(Update(other, {"name": "Billing"}), idempotency_key="k")
    assert renamed.same_name == (first, second)
    (replayed,) = store.commit(Update(other, {"name": "Billing"}), idempotency_key="k")
    assert replayed.replayed
    assert replayed.same_name == (first, second)


def test_a_key_recorded_before_unique_existed_keeps_its_fingerprint() -> None:
    """A write without ``unique`` is fingerprinted as before the field was added, so a retry
    after an upgrade is still the same request; with it, it is another request."""
    plain = Create("Billing", "ann")
    assert write_fingerprint(plain) == (
        "467b8138a8ea0ecf5f626f53a206d84a0c6ac2b92d32595edd5c56d566ef528e"
    )
    assert write_fingerprint(Create("Billing", "ann", unique=True)) != write_fingerprint(plain)


def test_the_python_api_takes_unique(db_path: Path) -> None:
    database = projctl.open_database(db_path, broadcast=False)
    first = database.create("Billing").project.project_id
    assert database.create("Billing").same_name == (first,)
    with pytest.raises(NameTakenError):
        database.create("Billing", unique=True)


def test_renaming_to_a_taken_name_warns_once(cli: Cli) -> None:
    first = create(cli, "Billing")
    second = create(cli, "Other")
    result = cli("update", second, "--name", "Billing")
    assert result.exit_code == 0
    assert result.stdout == f"{second}: updated name\n"
    assert result.stderr == f"Warning: another project is named 'Billing' too: {first}\n"
    again = cli("update", second, "--name", "Billing")  # unchanged: nothing to warn about
    assert again.stderr == ""
    # Its own name, unchanged: nothing was renamed, so nothing is said.
    assert cli("update", first, "--name", "Billing", "-d", "x").stderr == ""


def test_update_takes_several_projects(cli: Cli, store: ProjectStore) -> None:
    ids = [create(cli, name) for name in ("A", "B")]
    result = cli("update", *ids, "--status", "completed")
    assert result.exit_code == 0
    assert result.stdout == "".join(f"{i}: updated status\n" for i in ids)
    assert {p.status for p in store.list_projects()} == {"completed"}
    printed = orjson.loads(cli("update", *ids, "-s", "archived", "--json").stdout)
    assert [entry["updated_fields"] for entry in printed] == [["status"], ["status"]]


def test_update_of_several_changes_nothing_when_one_is_missing(
    cli: Cli, store: ProjectStore
) -> None:
    project_id = create(cli, "A")
    result = cli("update", project_id, "missing", "--status", "completed")
    assert result.exit_code == 3
    assert store.get(project_id).status == "created"
    renamed = cli("update", project_id, create(cli, "B"), "--name", "C")
    assert renamed.exit_code == 2
    assert renamed.stderr == "Error: --name would give 2 projects one name: update one\n"


def test_list_quiet_prints_ids_only(cli: Cli) -> None:
    ids = [create(cli, name) for name in ("A", "B")]
    assert cli("list", "-q").stdout == "".join(i + "\n" for i in ids)
    assert cli("list", "--quiet", "--json").exit_code == 2


@pytest.mark.parametrize(("alias", "command"), [("ls", "list"), ("rm", "delete"), ("get", "show")])
def test_aliases_run_their_command_and_show_in_help(cli: Cli, alias: str, command: str) -> None:
    project_id = create(cli, "A")
    args = [] if alias == "ls" else [project_id]
    assert cli(alias, *args, "-o", "name").stdout == project_id + "\n"
    assert f"{command}, {alias} " in cli("--help").stdout
