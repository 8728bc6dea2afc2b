"""Names people trust: a shared name is said, --unique refuses it, id prefixes resolve, aliases."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from typer.testing import Result

from projctl.errors import InvalidInputError, ProjectNotFoundError
from projctl.model import Project, resolve_reference
from projctl.store import ProjectStore

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
