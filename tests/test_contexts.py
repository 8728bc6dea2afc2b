"""Contexts: named databases and team servers, the current one, --context, and what wins."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

from projctl._contexts import contexts_path
from projctl.config import load_settings

from ._remote import TeamServer

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def no_db_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing else says where the database is: the current context may."""
    monkeypatch.delenv("PROJCTL_DB")


@pytest.mark.usefixtures("no_db_variable")
def test_add_use_list_show_and_remove(projctl: Run, tmp_path: Path) -> None:
    laptop, other = tmp_path / "data" / "laptop.json", tmp_path / "data" / "other.json"
    added = projctl("context", "add", "laptop", "--db", str(laptop))
    assert (added.returncode, added.stderr) == (0, "")
    assert added.stdout.endswith("(current)\n")  # the first one added
    assert projctl("context", "add", "other", "--db", str(other)).returncode == 0
    path = contexts_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Commands use the current context.
    assert projctl("create", "On the laptop").returncode == 0
    assert laptop.exists()
    assert not other.exists()
    listed = projctl("context", "list")
    assert listed.stdout.splitlines() == [f"* laptop\t{laptop}", f"  other\t{other}"]
    assert projctl("context", "use", "other").stdout == "now using context other\n"
    assert [p["name"] for p in orjson.loads(projctl("list", "--json").stdout)] == []
    # --context picks another for one command, and info says which and why.
    shown = projctl("--context", "laptop", "list", "-o", "json")
    assert [p["name"] for p in orjson.loads(shown.stdout)] == ["On the laptop"]
    info = orjson.loads(projctl("--context", "laptop", "info", "--json").stdout)
    assert info["context"] == {"name": "laptop", "source": "--context"}
    assert info["database"]["source"] == "context"
    assert "context   other (from current)" in projctl("info").stdout
    show = orjson.loads(projctl("context", "show", "--json").stdout)
    assert show == {"name": "other", "source": "current", "db": str(other)}
    assert projctl("context", "remove", "other").returncode == 0
    assert projctl("context", "show").returncode == 3  # no current one now
    missing = projctl("--context", "gone", "list")
    assert (missing.returncode, missing.stderr) == (
        2,
        "Error: --context: no context named 'gone' (projctl context list shows them)\n",
    )


def test_an_explicit_db_or_variable_wins_over_the_current_context(
    projctl: Run, tmp_path: Path
) -> None:
    laptop = tmp_path / "data" / "laptop.json"
    assert projctl("context", "add", "laptop", "--db", str(laptop)).returncode == 0
    # PROJCTL_DB (set by the test fixture) wins over the stored current context: a CI job's
    # variable is never overridden by a developer's habit.
    settings = load_settings()
    assert (settings.db_source, settings.context) == ("PROJCTL_DB", None)
    # --context wins over PROJCTL_DB; --db wins over everything.
    assert load_settings(context="laptop").db_path == laptop
    assert load_settings(context="laptop", db=str(tmp_path / "x.json")).db_source == "--db"


def test_a_team_context_keeps_its_token_in_a_file_read_at_use(
    projctl: Run, tmp_path: Path, team: TeamServer
) -> None:
    token_file = tmp_path / "team-token"
    token_file.write_text(team.write_token + "\n")
    token_file.chmod(0o600)
    added = projctl(
        "context",
        "add",
        "team",
        "--url",
        team.url,
        "--token-file",
        str(token_file),
        "--ca-file",
        str(team.ca),
    )
    assert added.returncode == 0, added.stderr
    assert team.write_token not in contexts_path().read_text()
    created = projctl("--context", "team", "create", "Remote one")
    assert created.returncode == 0, created.stderr
    assert [p.name for p in team.store().list_projects()] == ["Remote one"]
    # A token file others may read is refused, naming the fix.
    token_file.chmod(0o644)
    refused = projctl("--context", "team", "list")
    assert refused.returncode == 2
    assert "may be read by others (mode 0644); chmod 600 it" in refused.stderr
    assert team.write_token not in refused.stderr


def test_the_token_file_option_instead_of_a_token_in_the_command_line(
    projctl: Run, tmp_path: Path, team: TeamServer
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(team.write_token)
    token_file.chmod(0o600)
    env = {"PROJCTL_URL": team.url, "PROJCTL_CA_FILE": str(team.ca)}
    created = projctl("--token-file", str(token_file), "create", "x", env=env)
    assert created.returncode == 0, created.stderr
    by_variable = projctl("create", "y", env={**env, "PROJCTL_TOKEN_FILE": str(token_file)})
    assert by_variable.returncode == 0, by_variable.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not json", "is not valid JSON"),
        (b"[]", "is not one projctl wrote"),
        (b'{"contexts": {"a": {"db": "x", "url": "wss://h:1"}}}', "malformed context 'a'"),
        (b'{"contexts": {"../x": {"db": "x"}}}', "malformed context '../x'"),
        (b'{"contexts": {"a": {"db": 7}}}', "malformed context 'a'"),
    ],
)
@pytest.mark.usefixtures("no_db_variable")
def test_a_contexts_file_another_program_wrote_is_refused(
    projctl: Run, content: bytes, says: str
) -> None:
    path = contexts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o600)
    done = projctl("list")
    assert done.returncode == 2
    assert says in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.usefixtures("no_db_variable")
def test_a_contexts_file_others_may_read_is_refused(projctl: Run, tmp_path: Path) -> None:
    assert (
        projctl("context", "add", "laptop", "--db", str(tmp_path / "data" / "a.json")).returncode
        == 0
    )
    os.chmod(contexts_path(), 0o644)
    done = projctl("list")
    assert done.returncode == 2
    assert "chmod 600 it" in done.stderr
