"""Help and documentation stay true: every command explains itself, the README matches the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from projctl.cli import ExitCode, app

from .conftest import SYSTEM_TOOLS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _leaf_commands(group: Any, prefix: str = "") -> list[str]:
    names = []
    for name in sorted(group.list_commands(None)):
        command = group.get_command(None, name)
        path = f"{prefix}{name}"
        if hasattr(command, "list_commands"):
            names += _leaf_commands(command, path + " ")
        else:
            names.append(path)
    return names


COMMANDS = _leaf_commands(typer.main.get_command(app))


def test_commands() -> None:
    assert COMMANDS == [
        "context add",
        "context list",
        "context remove",
        "context show",
        "context use",
        "create",
        "delete",
        "emit",
        "info",
        "list",
        "migrate",
        "open",
        "serve",
        "server logs",
        "server start",
        "server status",
        "server stop",
        "server token",
        "server url",
        "show",
        "update",
        "wait",
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
    # The contexts manage no database; migrate names both of its own (--from, --to).
    if not command.startswith("context ") and command != "migrate":
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


def test_every_environment_variable_is_in_the_readme_and_in_help(cli) -> None:
    """config.VARIABLES is the one list: the README's table and --help show exactly it."""
    from projctl.config import VARIABLES

    section = README.split("## Environment", 1)[1].split("\n## ", 1)[0]
    variables = re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE)
    assert variables == [variable.name for variable in VARIABLES]
    help_text = cli("--help").stdout
    for variable in VARIABLES:
        assert variable.name in help_text, variable.name


def test_readme_documents_the_python_api() -> None:
    import projctl

    section = README.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    assert "examples/api.py" in section
    methods = ("create", "update", "delete", "emit", "get", "list", "subscribe", "serve", "serving")
    for method in methods:
        assert f"db.{method}(" in section, method
        assert getattr(projctl.Database, method).__doc__, method


def test_readme_has_browser_and_ci_sections() -> None:
    browser = README.split("## Use from the browser", 1)[1].split("\n## ", 1)[0]
    assert "new WebSocket('ws://localhost:8000/ws')" in browser
    assert "JSON.parse(event.data)" in browser
    ci = README.split("## Use from CI", 1)[1].split("\n## ", 1)[0]
    assert "examples/ci.sh" in ci
    assert "watch --json" in ci
    for shell in ("bash", "zsh", "fish"):
        assert f"completions/projctl.{shell}" in README


def test_readme_says_which_system_tools_the_suite_uses_and_how_to_install_them() -> None:
    section = README.split("## Development", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| (\w+) \| [^|]+ \| `sudo apt-get install (\S+)` \| `brew install ([^`]+)` \|$",
        section,
        flags=re.MULTILINE,
    )
    # the same install hints as the reason a test gives when its tool is missing
    assert {name: (apt, brew) for name, apt, brew in rows} == {
        name: (SYSTEM_TOOLS[name].apt, SYSTEM_TOOLS[name].brew) for name, _, _ in rows
    }
    assert SYSTEM_TOOLS["tmux"].missing in section
    ci = (ROOT / ".ci" / "run").read_text()
    installed = re.search(r"^for tool in ([\w ]+); do$", ci, flags=re.MULTILINE)
    assert installed is not None
    assert {*installed.group(1).split(), "bash"} == {name for name, _, _ in rows}  # bash runs it
    assert "\nexport CI=true\n" in ci  # so a missing tool fails the check instead of skipping
