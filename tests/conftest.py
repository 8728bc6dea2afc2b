"""Fixtures shared by every test: an isolated environment, a store, and two ways to run projctl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from projctl.cli import app
from projctl.store import ProjectStore

PROJCTL = str(Path(sys.executable).with_name("projctl"))

# Variables projctl reads; a developer's own settings must not leak into the tests.
_PROJCTL_VARIABLES = (
    "PROJCTL_DB",
    "PROJCTL_OWNER",
    "PROJCTL_JOURNAL_LIMIT",
    "PROJCTL_DEBUG",
    "NO_COLOR",
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every path projctl might touch at the test's own folder, never the real home."""
    for name in _PROJCTL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setenv("PROJCTL_DB", str(tmp_path / "data" / "projects.json"))
    monkeypatch.setenv("PROJCTL_OWNER", "tester")


@pytest.fixture
def db_path() -> Path:
    return Path(os.environ["PROJCTL_DB"])


@pytest.fixture
def store(db_path: Path) -> ProjectStore:
    return ProjectStore(db_path)


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run projctl in-process: ``cli("create", "X")``."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, prog_name="projctl")

    return invoke


@pytest.fixture
def projctl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``projctl`` as a real process, bounded in time."""
    assert shutil.which(PROJCTL), f"{PROJCTL} is not installed"

    def run(
        *args: str, timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROJCTL, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            check=False,
        )

    return run
