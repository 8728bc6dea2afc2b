"""Exit codes through the remote path: each failure a remote command meets exits with the code
and the one ``Error:`` line the local CLI gives for the same thing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

import projctl
from projctl.config import load_settings
from projctl.remote import ERROR_CLASSES, RemoteBackend

from ._remote import (
    TeamServer,
    healthy,
    one_error,
)


def refused_as_locally(team: TeamServer, args: tuple[str, ...], code: int) -> str:
    """Run ``args`` against the team server and, locally, on its own file: the same exit
    ``code``, output and one ``Error:`` line (returned)."""
    remote = team.run(*args)
    line = one_error(remote, code)
    local = team.local(*args)
    assert (remote.returncode, remote.stdout, remote.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    ), args
    return line


#: Each refused for a value that breaks a rule, ``Existing`` being a project.
INVALID_INPUT = [
    ("create", ""),
    ("create", "x", "--type", "Not A Slug"),
    ("create", "x", "--owner", ""),
    ("create", "x" * 201),
    ("create", "x", "--description", "d" * 10_001),
    ("create", "bell\x07"),
    ("update", "Existing", "--type", "Not A Slug"),
    ("update", "Existing", "--name", ""),
]


# The cases of one kind share one team server: a server each would cost more than the cases.
def test_invalid_input_is_exit_2_with_the_local_message(team: TeamServer) -> None:
    assert team.run("create", "Existing").returncode == 0
    before = team.server_db.read_bytes()
    for args in INVALID_INPUT:
        assert refused_as_locally(team, args, 2) != "Error: ", args
        assert team.server_db.read_bytes() == before, args


# Every command with a shared name, remote and local (~11 s): slow run.
@pytest.mark.slow
def test_a_name_two_projects_share_is_exit_2_with_the_local_message(team: TeamServer) -> None:
    for _ in range(2):
        assert team.run("create", "Twin").returncode == 0
    before = team.server_db.read_bytes()
    for args in (("show", "Twin"), ("update", "Twin", "-s", "completed"), ("delete", "Twin")):
        line = refused_as_locally(team, args, 2)
        assert line.startswith("Error: 2 projects are named 'Twin': "), args
    assert team.server_db.read_bytes() == before


#: Each naming a project that does not exist, ``Existing`` being one that does.
MISSING = [
    ("show", "ghost"),
    ("show", "proj_20200101_000000"),
    ("update", "ghost", "--status", "completed"),
    ("delete", "ghost"),
    ("delete", "Existing", "ghost"),
]


def test_a_missing_project_is_exit_3_with_the_local_message(team: TeamServer) -> None:
    assert team.run("create", "Existing").returncode == 0
    before = team.server_db.read_bytes()
    for args in MISSING:
        refused_as_locally(team, args, 3)
        assert team.server_db.read_bytes() == before, args  # nothing deleted: all or none


def test_a_missing_name_with_quotes_is_reported_as_locally(team: TeamServer) -> None:
    # The database exists (a missing one is a different message, locally).
    assert team.run("create", "someone else").returncode == 0
    for name in ("it's", 'say "hi"', "back\\slash", "'quoted'"):
        remote = team.run("show", name)
        one_error(remote, 3)
        local = team.local("show", name)
        assert local.stderr == f"Error: no project with id or name {name!r}\n"
        assert remote.stderr == local.stderr


# Four commands against a garbage file, each compared with the local run (~12 s): slow run.
@pytest.mark.slow
def test_a_broken_server_database_is_exit_4(team: TeamServer) -> None:
    created = team.run("create", "Existing")
    assert created.returncode == 0
    garbage = b"\x00not json at all {{{"
    team.server_db.write_bytes(garbage)
    for args in (
        ("create", "x"),
        ("update", "Existing", "-s", "completed"),
        ("list",),
        ("show", "x"),
    ):
        remote = team.run(*args)
        one_error(remote, 4)
        local = team.local(*args)
        assert (remote.returncode, remote.stderr) == (local.returncode, local.stderr), args
    assert team.server_db.read_bytes() == garbage  # never overwritten
    assert healthy(team.server.port, team.ca)  # the server stays up


def test_an_unreachable_server_is_exit_5(team: TeamServer) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        url = f"wss://127.0.0.1:{port}"
        started = time.monotonic()
        done = team.run("list", PROJCTL_URL=url)
        elapsed = time.monotonic() - started
    assert one_error(done, 5) == f"Error: cannot reach the server at {url}: Connection refused"
    assert elapsed < 15  # a few retries, not a hang


def test_a_remote_watch_with_nothing_to_see_times_out_with_124(team: TeamServer) -> None:
    done = team.run("watch", "--json", "--count", "1", "--timeout", "2")
    assert (done.returncode, done.stdout, done.stderr) == (
        124,
        "",
        "Error: timed out after 2s: 0 of 1 event\n",
    )


def test_each_error_code_raises_what_its_documented_exit_code_reports(team: TeamServer) -> None:
    """``remote.ERROR_CLASSES`` says which error each reply's code raises in the client, and
    ``exit_code_for`` (the one mapping) turns it into the exit code docs/protocol.md gives."""
    from projctl.cli._lazy import exit_code_for
    from projctl.errors import ProjctlError

    def settings(token: str) -> Any:
        return load_settings(
            environ={
                "PROJCTL_URL": team.url,
                "PROJCTL_TOKEN": token,
                "PROJCTL_CA_FILE": str(team.ca),
                "PROJCTL_OWNER": "ann",
            }
        )

    writer, reader = (
        projctl.Database(settings(team.write_token)),
        projctl.Database(settings(team.read_token)),
    )
    client = RemoteBackend(settings(team.write_token))
    existing = writer.create("Existing").project
    writer.create("Twin")
    writer.create("Twin")
    triggers: dict[str, Callable[[], object]] = {
        "invalid_input": lambda: writer.create(""),
        "not_found": lambda: writer.get("ghost"),
        "forbidden": lambda: reader.create("x"),
        "ambiguous": lambda: writer.update("Twin", status="completed"),
        "idempotency_key_reused": lambda: (
            writer.create("a", idempotency_key="k"),
            writer.create("b", idempotency_key="k"),
        ),
        "precondition_failed": lambda: writer.update(
            existing.project_id, if_match="stale", status="completed"
        ),
        "method_not_allowed": lambda: client.request("PUT", "/api/events"),
        "store_error": lambda: (team.server_db.write_bytes(b"garbage"), writer.list()),
    }
    raised: dict[str, tuple[str, int]] = {}
    for code, trigger in triggers.items():
        with pytest.raises(ProjctlError) as error:
            trigger()
        raised[code] = (type(error.value).__name__, int(exit_code_for(error.value)))
    assert {code: kind for code, (kind, _) in raised.items()} == {
        code: ERROR_CLASSES[code].__name__ for code in triggers
    }, raised
    documented = {
        "invalid_input": 2,
        "not_found": 3,
        "forbidden": 5,
        "ambiguous": 2,
        "idempotency_key_reused": 2,
        "precondition_failed": 2,
        "method_not_allowed": 5,
        "store_error": 4,
    }
    assert {code: exit_code for code, (_, exit_code) in raised.items()} == documented, raised


def test_plain_ws_against_a_tls_server_suggests_wss(team: TeamServer) -> None:
    plain = team.url.replace("wss://", "ws://")
    line = one_error(team.run("list", PROJCTL_URL=plain), 5)
    assert line.startswith(f"Error: cannot reach the server at {plain}: ")
    assert line.endswith("; if the server uses TLS, use wss://")
