"""Tests that need a system tool skip without it, saying how to get it, and fail under CI.

So the README's test command ends green on a machine with only Python and pip, and CI, which
must run every test, can never go green by skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import SYSTEM_TOOLS, require_tool

ROOT = Path(__file__).resolve().parent.parent

# One test per tool. Each asks for its tool in a fixture, so it skips before doing any work.
NEEDS_TOOL = {
    "tests/test_watch_live.py::test_live_table_follows_create_update_delete": "tmux",
    "tests/test_completions.py::test_zsh_completes_commands_ids_and_statuses": "zsh",
    "tests/test_completions.py::test_fish_completes_commands_ids_and_statuses": "fish",
    "tests/test_completions.py::test_bash_completes_commands": "bash",
}


@pytest.fixture
def bare_path(tmp_path: Path) -> str:
    """A PATH on which no program is found, tmux, bash, zsh, fish and chromium included.

    A real, empty folder: an unset PATH would fall back to the system's default folders. The
    child pytest needs nothing from it, since it is started by the interpreter's absolute path.
    """
    folder = tmp_path / "bin"
    folder.mkdir()
    return str(folder)


def run_child_pytest(
    tmp_path: Path, path: str, ci: str | None
) -> tuple[subprocess.CompletedProcess[str], dict[str, ET.Element]]:
    """Run the tests of ``NEEDS_TOOL`` in a child pytest; its result and each test's report."""
    environment = {**os.environ, "PATH": path}
    environment.pop("CI", None)
    if ci is not None:
        environment["CI"] = ci
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", *NEEDS_TOOL, "-m", "",  # slow ones too
            "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'child'}", f"--junitxml={report}",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    cases = {case.attrib["name"]: case for case in ET.parse(report).iter("testcase")}
    return done, cases


def name_of(node_id: str) -> str:
    return node_id.rsplit("::", 1)[1]


# Each runs every test that needs a system tool again, on a bare PATH (~25 s): in the slow
# run, which CI runs every time too.
@pytest.mark.slow
def test_without_the_tools_they_skip_with_how_to_get_them(tmp_path: Path, bare_path: str) -> None:
    done, cases = run_child_pytest(tmp_path, bare_path, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(cases) == sorted(name_of(node_id) for node_id in NEEDS_TOOL)
    for node_id, tool in NEEDS_TOOL.items():
        skipped = cases[name_of(node_id)].find("skipped")
        assert skipped is not None, node_id
        assert skipped.attrib["message"] == SYSTEM_TOOLS[tool].missing
        # the short summary tells the person at the terminal what was skipped and why
        assert f": {SYSTEM_TOOLS[tool].missing}" in done.stdout
    assert f"{len(NEEDS_TOOL)} skipped" in done.stdout


@pytest.mark.slow
def test_without_the_tools_under_ci_they_fail(tmp_path: Path, bare_path: str) -> None:
    done, cases = run_child_pytest(tmp_path, bare_path, ci="true")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert sorted(cases) == sorted(name_of(node_id) for node_id in NEEDS_TOOL)
    for node_id, tool in NEEDS_TOOL.items():
        case = cases[name_of(node_id)]
        assert case.find("skipped") is None, node_id
        failed = case.find("error")
        if failed is None:
            failed = case.find("failure")
        assert failed is not None, node_id
        assert SYSTEM_TOOLS[tool].missing in failed.attrib["message"]
    assert "skipped" not in done.stdout.splitlines()[-1]


# -- the helper itself, in process -----------------------------------------------------------


@pytest.fixture
def tool_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that is the whole PATH, to put fake tools in."""
    folder = tmp_path / "tools"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def fake_tool(folder: Path, name: str) -> Path:
    tool = folder / name
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("name", sorted(SYSTEM_TOOLS))
@pytest.mark.parametrize("ci", [None, "", "false", "0", "no"])
def test_a_missing_tool_skips_naming_it_and_how_to_install_it(
    tool_folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_tool(name)
    reason = str(skipped.value)
    assert reason == SYSTEM_TOOLS[name].missing
    assert reason.startswith(f"{name} is not installed (")
    assert "\n" not in reason
    assert f"apt-get install {SYSTEM_TOOLS[name].apt} / brew install " in reason


@pytest.mark.parametrize("ci", ["true", "TRUE", "True", "1", " true "])
def test_a_missing_tool_fails_under_ci(
    tool_folder: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        require_tool("tmux")
    assert SYSTEM_TOOLS["tmux"].missing in str(failed.value)


def test_a_present_tool_is_found_on_path(tool_folder: Path) -> None:
    fish = fake_tool(tool_folder, "fish")
    assert require_tool("fish") == str(fish)


def test_chromium_is_found_under_either_of_its_names(tool_folder: Path) -> None:
    chromium_browser = fake_tool(tool_folder, "chromium-browser")  # Ubuntu's name
    assert require_tool("chromium") == str(chromium_browser)
    chromium = fake_tool(tool_folder, "chromium")
    assert require_tool("chromium") == str(chromium)
