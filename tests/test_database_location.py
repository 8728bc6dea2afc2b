"""The database location chooses the storage: a path or a ``file:`` URL is a TinyDB file;
``nats://`` and ``tls://`` name a NATS JetStream stream (nats-py, an optional extra, needed);
any other ``scheme://`` is refused. Each through the command line, with nothing created."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from projctl.config import NatsLocation, load_settings, parse_db_location
from projctl.store import ProjectStore

from ._nats import free_ports

NEEDS_NATS = "a NATS JetStream database needs nats-py: pip install 'projctl[nats]'"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder: a relative path resolves here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("location", ["nats://host:4222/x", "tls://nats.example:4222/projects"])
@pytest.mark.parametrize("given", ["--db", "PROJCTL_DB"])
@pytest.mark.parametrize("command", [("create", "X"), ("list",), ("info",)])
def test_a_jetstream_location_without_nats_py_exits_2_and_creates_nothing(
    cli: Callable[..., Result],
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    location: str,
    given: str,
    command: tuple[str, ...],
) -> None:
    monkeypatch.setattr("projctl.jetstream.nats_available", lambda: False)
    if given == "--db":
        result = cli("--db", location, *command)
    else:
        result = cli(*command, env={"PROJCTL_DB": location})
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"Error: {given}={location!r}: {NEEDS_NATS}\n"
    assert list(folder.iterdir()) == []  # no "nats:/host:4222/" folders


@pytest.mark.parametrize("command", [("create", "X"), ("list",), ("info",), ("show", "x")])
def test_an_unreachable_cluster_exits_5_with_one_line_within_its_timeout(
    cli: Callable[..., Result], folder: Path, command: tuple[str, ...]
) -> None:
    first, second = free_ports(2)  # nothing listens there once they are handed out
    location = f"nats://alice:s3cret@127.0.0.1:{first},127.0.0.1:{second}/x?timeout=2"
    began = time.monotonic()
    result = cli("--db", location, *command)
    assert time.monotonic() - began < 4
    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    shown = f"nats://127.0.0.1:{first},127.0.0.1:{second}/x"
    assert result.stderr.startswith(f"Error: cannot reach the NATS cluster at {shown}")
    assert result.stderr.count("\n") == 1
    assert "s3cret" not in result.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("location", "accepted"),
    [
        ("nats://127.0.0.1:4222", "NAME 1-64"),
        ("nats://127.0.0.1:4222/a.b", "NAME 1-64"),
        ("nats://127.0.0.1:4222/", "NAME 1-64"),
        ("nats://127.0.0.1:99999/x", "nats://HOST:PORT"),
        ("nats://127.0.0.1:4222/x?replicas=9", "replicas from 1 to 5"),
        ("nats://127.0.0.1:4222/x?colour=red", "'colour' is not an option"),
        ("nats://bob:hunter2@127.0.0.1:4222/a b", "NAME 1-64"),
    ],
)
def test_a_malformed_jetstream_location_exits_2_without_its_credentials(
    cli: Callable[..., Result], folder: Path, location: str, accepted: str
) -> None:
    result = cli("--db", location, "list")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --db=")
    assert accepted in result.stderr
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("location", ["redis://host/x", "https://example.com/db.json", "s3://b/k"])
def test_another_scheme_exits_2_and_creates_nothing(
    cli: Callable[..., Result], folder: Path, location: str
) -> None:
    result = cli("--db", location, "create", "X")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: --db={location!r} is not accepted: "
        "expected a database file's path or a file: URL\n"
    )
    assert list(folder.iterdir()) == []


def test_a_file_url_is_a_tinydb_file(
    cli: Callable[..., Result], folder: Path, tmp_path: Path
) -> None:
    target = tmp_path / "team dir" / "projects.json"
    target.parent.mkdir()  # an explicit path's folder must exist
    url = "file://" + str(target).replace(" ", "%20")
    created = cli("--db", url, "create", "Billing API")
    assert created.exit_code == 0, created.output
    (project,) = ProjectStore(target).list_projects()
    assert created.stdout == project.project_id + "\n"
    assert project.name == "Billing API"
    listed = cli("list", env={"PROJCTL_DB": url})
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(project.project_id + "\t")
    assert list(folder.iterdir()) == []


def test_a_relative_file_url_and_a_plain_path_name_the_same_file(
    cli: Callable[..., Result], folder: Path
) -> None:
    assert cli("--db", "file:projects.json", "create", "A").exit_code == 0
    assert cli("--db", "projects.json", "create", "B").exit_code == 0
    names = [p.name for p in ProjectStore(folder / "projects.json").list_projects()]
    assert names == ["A", "B"]
    assert sorted(os.listdir(folder)) == ["projects.json", "projects.json.lock"]


@pytest.mark.parametrize("location", ["file://elsewhere/x.json", "file:///x.json?mode=ro"])
def test_a_file_url_for_another_machine_exits_2(
    cli: Callable[..., Result], folder: Path, location: str
) -> None:
    result = cli("--db", location, "list")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: --db={location!r} is not accepted: "
        "expected a file: URL naming a file on this machine\n"
    )


def test_a_parsed_location_never_shows_its_credentials() -> None:
    """Neither the location nor the settings holding it print a password or token, even as
    a debugger or a log line shows them (repr)."""
    location = parse_db_location("nats://alice:s3cret@127.0.0.1:4222/x", "--db")
    assert isinstance(location, NatsLocation)
    assert (location.user, location.password) == ("alice", "s3cret")
    tokened = parse_db_location("tls://t0ken@127.0.0.1/x", "--db")
    assert isinstance(tokened, NatsLocation)
    assert tokened.token == "t0ken"
    settings = load_settings(
        db="nats://alice:s3cret@127.0.0.1:4222/x", environ={"PROJCTL_TOKEN": "t0ken" * 4}
    )
    for shown in (repr(location), repr(tokened), repr(settings), location.display):
        assert "s3cret" not in shown
        assert "t0ken" not in shown
        assert "alice" not in shown
