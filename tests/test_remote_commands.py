"""The team protocol's commands from another machine (another HOME, no PROJCTL_DB, only
PROJCTL_URL, a token and the CA): each prints what the local CLI prints, and every change
lands in the server's file. The server and the clients are real processes (tests/_remote.py).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import orjson
import pytest

import projctl
from projctl.config import load_settings
from projctl.store import ProjectStore

from ._remote import (
    PROJECT_ID,
    TIMESTAMP,
    TeamServer,
    run_local,
)
from .conftest import as_another_user

#: One session of commands; run locally and remotely, they must print the same thing.
SESSION: list[tuple[str, ...]] = [
    ("create", "Billing API", "--type", "api", "--owner", "alice", "--description", "first"),
    ("create", "Search", "--json"),
    ("update", "Billing API", "--status", "in_progress"),
    ("update", "Billing API", "-s", "in_progress"),
    ("update", "Search", "--name", "Search v2", "--description", "line one\nline two", "--json"),
    ("list",),
    ("list", "--json"),
    ("list", "--status", "in_progress"),
    ("list", "--owner", "alice", "--sort", "name", "--json"),
    ("show", "Billing API"),
    ("show", "Billing API", "--json"),
    ("show", "Billing API", "Search v2"),
    ("show", "Billing API", "Search v2", "--json"),
    ("show", "Billing API", "ghost"),
    ("delete", "Search v2", "--json"),
    ("create", "Third", "-q"),
    ("create", "Fourth", "--type", "web", "--status", "on_hold"),
    ("delete", "Billing API", "ghost", "Third", "--missing-ok"),
    ("delete", "Fourth", "--json"),
    ("list", "--json"),
    ("list",),
]


def normalized(text: str, ids: dict[str, str]) -> str:
    """``text`` with project ids numbered in order of first appearance and timestamps masked:
    what two runs of the same session share."""

    def number(match: re.Match[str]) -> str:
        return ids.setdefault(match.group(), f"<id{len(ids) + 1}>")

    return TIMESTAMP.sub("<time>", PROJECT_ID.sub(number, text))


@pytest.mark.slow  # 21 commands twice; test_every_change_lands_in_the_servers_file is quick
def test_commands_from_another_machine_print_what_local_ones_print(
    team: TeamServer, tmp_path: Path
) -> None:
    local_db = tmp_path / "local" / "projects.json"
    local_db.parent.mkdir()
    local_ids: dict[str, str] = {}
    remote_ids: dict[str, str] = {}
    for args in SESSION:
        local = run_local(local_db, *args)
        remote = team.run(*args)
        assert "Traceback" not in remote.stderr
        assert (
            remote.returncode,
            normalized(remote.stdout, remote_ids),
            normalized(remote.stderr, remote_ids),
        ) == (
            local.returncode,
            normalized(local.stdout, local_ids),
            normalized(local.stderr, local_ids),
        ), args
        if args[0] in ("list", "show"):
            # A read prints exactly what the local CLI prints for the server's own file.
            on_the_server = team.local(*args)
            assert (remote.returncode, remote.stdout, remote.stderr) == (
                on_the_server.returncode,
                on_the_server.stdout,
                on_the_server.stderr,
            ), args
    # The server's file holds the session's changes and journal, as a local run journals them.
    store, local_store = team.store(), ProjectStore(local_db)
    assert store.list_projects() == []
    journal = store.journal()
    assert [event["event_type"] for event in journal] == [
        "project_created",
        "project_created",
        "project_updated",
        "project_updated",
        "project_deleted",
        "project_created",
        "project_created",
        "project_deleted",
        "project_deleted",
        "project_deleted",
    ]
    assert [event["seq"] for event in journal] == list(range(1, 11))
    remote_ids.clear()
    local_ids.clear()
    assert normalized(orjson.dumps(journal).decode(), remote_ids) == normalized(
        orjson.dumps(local_store.journal()).decode(), local_ids
    )
    # Nothing was written on the other machine.
    assert sorted(team.elsewhere.rglob("*")) == []


def test_every_change_lands_in_the_servers_file(team: TeamServer) -> None:
    created = team.run("create", "Billing API", "--owner", "alice", "-d", "first")
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""
    project_id = created.stdout.strip()
    assert created.stdout == f"{project_id}\n"
    assert PROJECT_ID.fullmatch(project_id)
    record = team.store().get(project_id).to_dict()
    assert (record["name"], record["owner_id"], record["description"]) == (
        "Billing API",
        "alice",
        "first",
    )

    updated = team.run("update", project_id, "--status", "in_progress", "--type", "web")
    assert (updated.returncode, updated.stdout, updated.stderr) == (
        0,
        f"{project_id}: updated type, status\n",
        "",
    )
    record = team.store().get(project_id).to_dict()
    assert (record["status"], record["type"]) == ("in_progress", "web")

    as_json = team.run("update", project_id, "--owner", "bob", "--json")
    record = team.store().get(project_id).to_dict()
    assert (
        as_json.stdout
        == orjson.dumps({"project": record, "updated_fields": ["owner_id"]}).decode() + "\n"
    )

    listed = team.run("list")
    assert listed.stdout == (
        f"{project_id}\tBilling API\tweb\tin_progress\tbob\t{record['updated_at']}\n"
    )
    assert team.run("list", "--json").stdout == orjson.dumps([record]).decode() + "\n"
    shown = team.run("show", project_id)
    assert shown.stdout == "".join(f"{field:<11}  {value}\n" for field, value in record.items())
    assert team.run("show", "Billing API", "--json").stdout == orjson.dumps(record).decode() + "\n"

    # info: where the database is (the server), and what it holds.
    store = team.store()
    info = team.run("info")
    assert (info.returncode, info.stderr) == (0, "")
    assert info.stdout == (
        f"database  {team.url} (a team server, from PROJCTL_URL)\n"
        "projects  1\n"
        "last seq  3\n"
        "journal   3 events kept (limit 1000)\n"
        f"server    running at {team.url}\n"
    )
    assert orjson.loads(team.run("info", "--json").stdout) == {
        "database": {
            "url": team.url,
            "source": "PROJCTL_URL",
            "id": store.database_id(),
            "name": store.path.name,  # the file's name, never its folder
        },
        "projects": 1,
        "latest_seq": 3,
        "journal": {"events": 3, "limit": 1000},
        "server": {"running": True, "url": team.url},
        "context": None,  # none in force: PROJCTL_URL says where
    }
    # --url before the command, instead of PROJCTL_URL.
    with_option = team.run("--url", team.url, "info", PROJCTL_URL=None)
    assert with_option.stdout == info.stdout.replace("from PROJCTL_URL", "from --url")

    deleted = team.run("delete", project_id)
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (
        0,
        f"{project_id}: deleted\n",
        "",
    )
    store = team.store()
    assert store.list_projects() == []
    assert [event["event_type"] for event in store.journal()] == [
        "project_created",
        "project_updated",
        "project_updated",
        "project_deleted",
    ]

    # A remote watch replays the journal, each event exactly as journaled.
    journal = store.journal()
    watched = team.run(
        "watch", "--json", "--since", "0", "--count", str(len(journal)), "--timeout", "20"
    )
    assert watched.returncode == 0, watched.stderr
    assert watched.stderr == ""  # "connected to" is said only on a terminal
    assert [orjson.loads(line) for line in watched.stdout.splitlines()] == journal


def test_a_client_running_as_another_user(team: TeamServer, shared_folder: Path) -> None:
    ca = shared_folder / "ca.pem"
    shutil.copyfile(team.ca, ca)
    ca.chmod(0o644)
    environ = {
        "PROJCTL_URL": team.url,
        "PROJCTL_TOKEN": team.write_token,
        "PROJCTL_CA_FILE": str(ca),
        "PROJCTL_OWNER": "nobody-team",
    }
    # Everything the child needs is imported here: that uid may not read our folders.
    projctl.Database(load_settings(environ=environ)).info()

    def create_as_nobody() -> object:
        database = projctl.Database(load_settings(environ=environ))
        change = database.create("Made by nobody", description="over TLS")
        return [change.project.project_id, os.getuid()]

    result = as_another_user(create_as_nobody)
    assert isinstance(result, list)
    project_id, uid = result
    assert uid != 0
    record = team.store().get(project_id).to_dict()
    assert (record["name"], record["owner_id"], record["description"]) == (
        "Made by nobody",
        "nobody-team",
        "over TLS",
    )
    assert [event["data"]["project_id"] for event in team.store().journal()] == [project_id]
