"""Arguments and environment values that are not valid UTF-8: exit 2, one line naming the field.

Python decodes both with ``surrogateescape``, so the bytes arrive as lone surrogates; only a
real process shows what a shell passes, so these run the installed ``projctl``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import PROJCTL

BAD = b"\xff"


def run(*args: bytes, env: dict[bytes, bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [os.fsencode(PROJCTL), *args],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environb, **(env or {})},
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[bytes], field: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    assert result.stderr == f"Error: {field} is not valid UTF-8\n".encode()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((b"create", BAD), "NAME"),
        ((b"create", b"ok", b"--description", b"a" + BAD), "--description"),
        ((b"create", b"ok", b"--owner", BAD), "--owner"),
        ((b"create", b"ok", b"--type", BAD), "--type"),
        ((b"list", b"--owner", BAD), "--owner"),
        ((b"show", BAD), "PROJECT"),
        ((b"watch", b"--owner", BAD, b"--timeout", b"0"), "--owner"),
    ],
)
def test_an_undecodable_argument_is_refused_naming_it(
    args: tuple[bytes, ...], field: str, db_path: Path
) -> None:
    assert_refused(run(*args), field)
    assert not db_path.exists()


def test_update_with_an_undecodable_owner_changes_nothing(db_path: Path) -> None:
    created = run(b"create", b"kept")
    assert created.returncode == 0, created.stderr
    project_id = created.stdout.strip()
    before = db_path.read_bytes()
    assert_refused(run(b"update", project_id, b"--owner", BAD), "--owner")
    assert_refused(run(b"update", project_id, b"--name", BAD), "--name")
    assert db_path.read_bytes() == before


def test_an_undecodable_owner_variable_is_refused(db_path: Path) -> None:
    assert_refused(run(b"create", b"ok", env={b"PROJCTL_OWNER": b"al" + BAD}), "PROJCTL_OWNER")
    assert not db_path.exists()


def test_a_remote_create_refuses_before_contacting_the_server() -> None:
    # Nothing listens on port 1: the value is refused before any connection is tried.
    result = run(b"create", BAD, env={b"PROJCTL_URL": b"ws://127.0.0.1:1"})
    assert_refused(result, "NAME")


def test_an_undecodable_url_option_is_refused() -> None:
    assert_refused(run(b"--url", b"ws://127.0.0.1:1/" + BAD, b"list"), "--url")


def test_a_database_path_that_is_not_utf8_still_works(tmp_path: Path) -> None:
    # A file name is bytes: one that does not decode is still a valid path.
    db = os.fsencode(tmp_path) + b"/db-" + BAD + b".json"
    assert run(b"create", b"ok", b"--db", db).returncode == 0
    listed = run(b"list", b"--db", db)
    assert listed.returncode == 0, listed.stderr
    assert b"\tok\t" in listed.stdout
