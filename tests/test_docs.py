"""Help and documentation stay true: every command explains itself, the README matches the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from projctl.cli import ExitCode, app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _leaf_commands(group: Any, prefix: str = "") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            names += _leaf_commands(command, path + " ")
        else:
            names.append(path)
    return names


COMMANDS = _leaf_commands(typer.main.get_command(app))


def test_commands() -> None:
    assert COMMANDS == [
        "create",
        "delete",
        "list",
        "serve",
        "server status",
        "server stop",
        "show",
        "update",
        "watch",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_ending_with_an_example(cli, command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0
    assert f"Usage: projctl {command}" in result.stdout
    example = result.stdout.split("Example:", 1)
    assert len(example) == 2, f"{command} --help has no example"
    assert f"projctl {command}" in example[1]
    assert "--db PATH" in result.stdout
    assert "PROJCTL_DB" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"`projctl {command}" in README


def test_readme_exit_code_table_matches_the_enum() -> None:
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|$", README, flags=re.MULTILINE))
    assert sorted(int(code) for code in table) == sorted(code.value for code in ExitCode)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(block) == 2
    install_and_run, test_command = block
    assert "projctl create" in install_and_run
    assert "pytest" in test_command
    assert README.index("```sh") < README.index("\n## ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
