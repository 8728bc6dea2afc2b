"""``-o/--output``: kubectl's output formats on every command that prints data."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from typer.testing import Result

from projctl.store import ProjectStore

Cli = Callable[..., Result]


def create(cli: Cli, *args: str) -> str:
    result = cli("create", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_o_is_the_output_format_and_no_longer_the_owner(cli: Cli, store: ProjectStore) -> None:
    create(cli, "A", "--owner", "json")
    result = cli("list", "-o", "json")
    assert result.exit_code == 0
    assert [p["name"] for p in orjson.loads(result.stdout)] == ["A"]
    assert cli("list", "--output", "json").stdout == result.stdout


@pytest.mark.parametrize("command", [["list"], ["create", "X"], ["update", "X", "-s", "on_hold"]])
def test_o_with_an_owner_names_the_owner_option(cli: Cli, command: list[str]) -> None:
    create(cli, "X")
    result = cli(*command, "-o", "alice")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: -o is the output format (json, jsonl, tsv, table, wide, name); "
        "for the owner use --owner\n"
    )


def test_o_with_a_format_the_command_does_not_print(cli: Cli) -> None:
    result = cli("info", "-o", "table")
    assert result.exit_code == 2
    assert result.stderr == "Error: -o is the output format (json, jsonl), not 'table'\n"


def test_json_is_an_alias_of_o_json_and_may_come_first(cli: Cli) -> None:
    project_id = create(cli, "A")
    assert cli("--json", "show", project_id).stdout == cli("show", project_id, "-o", "json").stdout
    assert orjson.loads(cli("--json", "show", project_id).stdout)["name"] == "A"


def test_json_and_another_format_contradict(cli: Cli) -> None:
    result = cli("list", "--json", "-o", "tsv")
    assert result.exit_code == 2
    assert result.stderr == "Error: --json and -o tsv contradict each other: give one\n"


def test_list_formats(cli: Cli, store: ProjectStore) -> None:
    first = create(cli, "Alpha", "-d", "line one\nline two")
    second = create(cli, "Beta")
    assert cli("list", "-o", "name").stdout == f"{first}\n{second}\n"
    lines = cli("list", "-o", "jsonl").stdout.splitlines()
    assert [orjson.loads(line) for line in lines] == [p.to_dict() for p in store.list_projects()]
    tsv = cli("list", "-o", "tsv").stdout
    assert tsv == cli("list").stdout  # piped, list prints tsv by itself
    assert tsv.splitlines()[0].split("\t")[:4] == [first, "Alpha", "api", "created"]
    table = cli("list", "-o", "table").stdout
    assert "Alpha" in table
    assert "Updated" in table
    assert "Created" not in table
    wide = cli("list", "-o", "wide").stdout
    assert "Created" in wide
    assert "Description" in wide
    assert "line one…" in wide


def test_show_formats(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "Alpha")
    record = store.get(project_id).to_dict()
    assert cli("show", project_id, "-o", "name").stdout == project_id + "\n"
    assert orjson.loads(cli("show", project_id, "-o", "jsonl").stdout) == record
    assert cli("show", project_id, "-o", "tsv").stdout.split("\t")[0] == project_id
    assert "Alpha" in cli("show", project_id, "-o", "table").stdout


def test_create_formats(cli: Cli, store: ProjectStore) -> None:
    assert cli("create", "A", "-o", "name").stdout.startswith("proj_")
    printed = orjson.loads(cli("create", "B", "-o", "jsonl").stdout)
    assert printed == store.get(printed["project_id"]).to_dict()
    line = cli("create", "C", "-o", "tsv").stdout
    assert line.split("\t")[1] == "C"


def test_update_formats(cli: Cli) -> None:
    project_id = create(cli, "A")
    assert cli("update", project_id, "-s", "on_hold", "-o", "name").stdout == project_id + "\n"
    printed = orjson.loads(cli("update", project_id, "-s", "completed", "-o", "jsonl").stdout)
    assert printed["updated_fields"] == ["status"]
    assert cli("update", project_id, "-n", "B", "-o", "tsv").stdout.split("\t")[1] == "B"


def test_delete_formats(cli: Cli) -> None:
    ids = [create(cli, name) for name in ("A", "B", "C")]
    assert cli("delete", ids[0], "-o", "name").stdout == ids[0] + "\n"
    result = cli("delete", ids[1], ids[2], "missing", "--missing-ok", "-o", "jsonl")
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == [
        {"project_id": ids[1], "name": "B", "deleted": True},
        {"project_id": ids[2], "name": "C", "deleted": True},
        {"project_id": "missing", "deleted": False},
    ]


def test_report_commands_take_o_json(cli: Cli) -> None:
    assert orjson.loads(cli("info", "-o", "json").stdout)["projects"] == 0
    assert orjson.loads(cli("info", "-o", "jsonl").stdout)["projects"] == 0
    result = cli("server", "status", "-o", "json")
    assert result.exit_code == 3
    assert orjson.loads(result.stdout) == {"running": False}


def test_watch_takes_o_but_not_the_owner(cli: Cli) -> None:
    result = cli("watch", "-o", "bob")
    assert result.exit_code == 2
    assert "for the owner use --owner" in result.stderr
    result = cli("watch", "-o", "table")  # the test's stdout is no terminal
    assert result.exit_code == 2
    assert result.stderr == "Error: watch -o table needs a terminal; use -o json in a pipe\n"
