"""Who may talk to a team server: a client that cannot trust its certificate, a refused token
and a read-only token each exit 5 with one ``Error:`` line and write nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trustme

from ._remote import (
    TeamServer,
    one_error,
)


@pytest.mark.parametrize("trusted", ["system-cas", "another-ca"])
def test_a_tls_failure_is_exit_5(team: TeamServer, tmp_path: Path, trusted: str) -> None:
    env: dict[str, str | None] = {"PROJCTL_CA_FILE": None}
    if trusted == "another-ca":
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        env["PROJCTL_CA_FILE"] = str(other)
    before = team.server_db.read_bytes() if team.server_db.exists() else None
    for args in (("list",), ("create", "x")):
        line = one_error(team.run(*args, **env), 5)
        assert line.startswith(f"Error: TLS with {team.url} failed: ")
        # What failed and how to fix it, as RemoteBackend._call words a failed verification.
        assert line == (
            f"Error: TLS with {team.url} failed: unable to get local issuer certificate; "
            "trust its CA with PROJCTL_CA_FILE"
        )
    assert (team.server_db.read_bytes() if team.server_db.exists() else None) == before


@pytest.mark.parametrize("token", ["wrong", "none"])
def test_a_refused_token_is_exit_5(team: TeamServer, token: str) -> None:
    env: dict[str, str | None] = {"PROJCTL_TOKEN": None} if token == "none" else {}
    given = "x" * 32 if token == "wrong" else None
    for args in (("list",), ("create", "x")):
        done = team.run(*args, token=given, **env)
        # Which token was sent (none, or the one from PROJCTL_TOKEN) and what to do.
        assert one_error(done, 5) == (
            f"Error: the server at {team.url} needs a token and none was sent (HTTP 401): set "
            "PROJCTL_TOKEN, PROJCTL_TOKEN_FILE or a context with --token-file"
            if given is None
            else f"Error: the server at {team.url} does not know the token from PROJCTL_TOKEN "
            "(HTTP 401): check it against the server's token file, or set PROJCTL_TOKEN to "
            "one it holds"
        )
    assert not team.server_db.exists()


def test_a_read_token_may_read_but_not_write(team: TeamServer) -> None:
    created = team.run("create", "Existing")
    project_id = created.stdout.strip()
    before = team.server_db.read_bytes()
    read = team.read_token
    listed = team.run("list", token=read)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.startswith(f"{project_id}\tExisting\t")
    assert team.run("show", "Existing", "--json", token=read).returncode == 0
    for args in (
        ("create", "x"),
        ("update", project_id, "--status", "completed"),
        ("delete", project_id),
    ):
        done = team.run(*args, token=read)
        assert one_error(done, 5) == (
            f"Error: the server at {team.url} refused the token from PROJCTL_TOKEN (HTTP 403): "
            "a read token may only read; a change needs a write token"
        )
    assert team.server_db.read_bytes() == before


def test_a_remote_watch_with_a_refused_token_is_exit_5(team: TeamServer) -> None:
    done = team.run(
        "watch", "--json", "--since", "0", "--count", "1", "--timeout", "10", token="x" * 32
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("Error: ") == 1
    assert "does not know the token" in done.stderr


def test_a_remote_watch_that_cannot_trust_the_server_is_exit_5(team: TeamServer) -> None:
    # As for every other command: a certificate nobody trusts is not a network blip.
    started = time.monotonic()
    done = team.run(
        "watch", "--json", "--since", "0", "--count", "1", "--timeout", "8", PROJCTL_CA_FILE=None
    )
    elapsed = time.monotonic() - started
    assert "Traceback" not in done.stderr
    assert done.returncode == 5, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    assert "TLS" in errors[0] or "certificate" in errors[0], errors
    assert elapsed < 5
