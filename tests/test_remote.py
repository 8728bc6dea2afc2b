"""The team protocol end to end: a TLS ``projctl serve`` in its own process, and commands run
against it from "another machine" (another HOME, no PROJCTL_DB, only PROJCTL_URL, a token and
the CA), through ``/rpc`` as the CLI and its client speaks it, and by hand.

Every command is the installed ``projctl`` as a real process: exit codes, stdout and stderr
are asserted exactly, and compared with what the local CLI prints for the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http.client
import os
import random
import re
import secrets
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import projctl
from projctl.config import load_settings
from projctl.errors import ConfigError
from projctl.remote import ERROR_CODES, MAX_REQUEST, RPC_PATH, RemoteBackend
from projctl.server import read_token_file
from projctl.store import ProjectStore

from .conftest import PROJCTL, as_another_user, wait_until

Completed = subprocess.CompletedProcess[str]

#: Every wait on the server or a client is bounded by this.
SERVER_START_TIMEOUT = 20.0
PROJECT_ID = re.compile(r"proj_\d{8}_\d{6}(?:_\d+)?")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


# -- TLS, tokens, the server process ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tls:
    """A private CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files."""

    authority: trustme.CA
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path / "tls"
    folder.mkdir()
    tls = Tls(authority, folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    authority.cert_pem.write_to_path(str(tls.ca))
    issued.cert_chain_pems[0].write_to_path(str(tls.cert))
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(str(tls.cert), append=True)
    issued.private_key_pem.write_to_path(str(tls.key))
    tls.key.chmod(0o600)
    return tls


def write_token_file(path: Path, read: str, write: str, mode: int = 0o600) -> Path:
    path.write_text(f"# the team's tokens\nread: {read}\nwrite: {write}\n")
    path.chmod(mode)
    return path


def free_port() -> int:
    """A port free right now on 127.0.0.1 (bound, read, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def healthy(port: int, ca: Path) -> bool:
    """Whether ``GET https://127.0.0.1:PORT/healthz`` answers 200, trusting ``ca``."""
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclasses.dataclass
class ServerProcess:
    """A running ``projctl serve``: its stdout and stderr go to files, read at any time."""

    process: subprocess.Popen[bytes]
    port: int
    db: Path
    log: Path
    out: Path

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, then wait (bounded); the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode


@contextlib.contextmanager
def serving(
    folder: Path,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    ready: Callable[[ServerProcess], bool] | None = None,
) -> Iterator[ServerProcess]:
    """Run ``projctl serve ARGS --db <folder>/projects.json`` until the block ends.

    ``ready`` says when it serves (default: it answers nothing until stopped by the block).
    """
    folder.mkdir(parents=True, exist_ok=True)
    db, log, out = folder / "projects.json", folder / "serve.stderr", folder / "serve.stdout"
    port = int(args[list(args).index("--port") + 1]) if "--port" in args else 0
    with log.open("wb") as err, out.open("wb") as stdout:
        process = subprocess.Popen(
            [PROJCTL, "serve", *args, "--db", str(db)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(process, port, db, log, out)
    try:
        if ready is not None:
            wait_until(
                lambda: process.poll() is not None or ready(server),
                timeout=SERVER_START_TIMEOUT,
                what="projctl serve is ready",
            )
            assert process.poll() is None, f"serve exited {process.returncode}: {server.stderr()}"
        yield server
    finally:
        server.stop()


def tls_args(tls: Tls, port: int) -> list[str]:
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--certfile",
        str(tls.cert),
        "--keyfile",
        str(tls.key),
    ]


@dataclasses.dataclass
class TeamServer:
    """A team server over TLS with a token file, and a way to run commands from elsewhere."""

    server: ServerProcess
    tls: Tls
    read_token: str
    write_token: str
    elsewhere: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca(self) -> Path:
        return self.tls.ca

    @property
    def server_db(self) -> Path:
        return self.server.db

    def store(self) -> ProjectStore:
        return ProjectStore(self.server_db)

    def client_env(self, token: str | None = None, **env: str | None) -> dict[str, str]:
        """The environment of another machine: its own HOME, no PROJCTL_DB, the team server."""
        home = self.elsewhere
        chosen: dict[str, str | None] = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "PROJCTL_DB": None,
            "PROJCTL_NO_BROADCAST": None,
            "PROJCTL_URL": self.url,
            "PROJCTL_TOKEN": self.write_token if token is None else token,
            "PROJCTL_CA_FILE": str(self.ca),
            **env,
        }
        return {name: value for name, value in chosen.items() if value is not None}

    def run(
        self, *args: str, token: str | None = None, timeout: float = 60, **env: str | None
    ) -> Completed:
        """``projctl ARGS`` on another machine (write token unless ``token``; ``NAME=None``
        in ``env`` unsets a variable)."""
        return subprocess.run(
            [PROJCTL, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=self.client_env(token, **env),
            check=False,
        )

    def local(self, *args: str, timeout: float = 60) -> Completed:
        """``projctl ARGS`` on the server's machine, against the server's database file."""
        return run_local(self.server_db, *args, timeout=timeout)


def run_local(db: Path, *args: str, timeout: float = 60) -> Completed:
    """The local CLI against the database file ``db`` (no broadcasting, as in every test)."""
    return subprocess.run(
        [PROJCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PROJCTL_DB": str(db)},
        check=False,
    )


def secret(kind: str) -> str:
    return f"{kind}-{secrets.token_urlsafe(24)}"


@pytest.fixture
def team(tmp_path: Path, tls: Tls) -> Iterator[TeamServer]:
    read, write = secret("read"), secret("write")
    tokens = write_token_file(tmp_path / "tokens", read, write)
    port = free_port()
    args = [*tls_args(tls, port), "--token-file", str(tokens)]
    with serving(tmp_path / "server", args, ready=lambda _: healthy(port, tls.ca)) as server:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        yield TeamServer(server, tls, read, write, elsewhere)
        log = server.stderr()
    assert read not in log, "a token reached the server's log"
    assert write not in log, "a token reached the server's log"


def one_error(done: Completed, code: int) -> str:
    """The one ``Error:`` line a failed command printed (nothing on stdout, no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# -- 1. the commands from another machine ----------------------------------------------------

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
        "database": {"url": team.url, "source": "PROJCTL_URL", "id": store.database_id()},
        "projects": 1,
        "latest_seq": 3,
        "journal": {"events": 3, "limit": 1000},
        "server": {"running": True, "url": team.url},
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
    assert watched.stderr == f"projctl watch: connected to {team.url}/ws\n"
    assert [orjson.loads(line) for line in watched.stdout.splitlines()] == journal


# -- 2. exit codes through the remote path ---------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("create", ""),
        ("create", "x", "--type", "Not A Slug"),
        ("create", "x", "--owner", ""),
        ("create", "x" * 201),
        ("create", "x", "--description", "d" * 10_001),
        ("create", "bell\x07"),
        ("update", "Existing", "--type", "Not A Slug"),
        ("update", "Existing", "--name", ""),
    ],
    ids=[
        "empty-name",
        "bad-type",
        "empty-owner",
        "long-name",
        "long-description",
        "control-character",
        "update-bad-type",
        "update-empty-name",
    ],
)
def test_invalid_input_is_exit_2_with_the_local_message(
    team: TeamServer, args: tuple[str, ...]
) -> None:
    assert team.run("create", "Existing").returncode == 0
    before = team.server_db.read_bytes()
    remote = team.run(*args)
    line = one_error(remote, 2)
    local = team.local(*args)  # the same check, made locally on the same file
    assert (remote.returncode, remote.stdout, remote.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    )
    assert line != "Error: "
    assert team.server_db.read_bytes() == before


def test_a_name_two_projects_share_is_exit_2_with_the_local_message(team: TeamServer) -> None:
    for _ in range(2):
        assert team.run("create", "Twin").returncode == 0
    before = team.server_db.read_bytes()
    for args in (("show", "Twin"), ("update", "Twin", "-s", "completed"), ("delete", "Twin")):
        remote = team.run(*args)
        assert one_error(remote, 2).startswith("Error: 2 projects are named 'Twin': ")
        local = team.local(*args)
        assert (remote.returncode, remote.stdout, remote.stderr) == (
            local.returncode,
            local.stdout,
            local.stderr,
        ), args
    assert team.server_db.read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ("show", "ghost"),
        ("show", "proj_20200101_000000"),
        ("update", "ghost", "--status", "completed"),
        ("delete", "ghost"),
        ("delete", "Existing", "ghost"),
    ],
    ids=["show", "show-id", "update", "delete", "delete-one-of-two"],
)
def test_a_missing_project_is_exit_3_with_the_local_message(
    team: TeamServer, args: tuple[str, ...]
) -> None:
    assert team.run("create", "Existing").returncode == 0
    before = team.server_db.read_bytes()
    remote = team.run(*args)
    one_error(remote, 3)
    local = team.local(*args)
    assert (remote.returncode, remote.stdout, remote.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    )
    assert team.server_db.read_bytes() == before  # nothing deleted: all or none


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "back\\slash", "'quoted'"])
def test_a_missing_name_with_quotes_is_reported_as_locally(team: TeamServer, name: str) -> None:
    remote = team.run("show", name)
    one_error(remote, 3)
    local = team.local("show", name)
    assert local.stderr == f"Error: no project with id or name {name!r}\n"
    assert remote.stderr == local.stderr


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
    assert one_error(done, 5) == (
        f"Error: cannot reach the server at {url}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})"
    )
    assert elapsed < 15  # a few retries, not a hang


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
        assert one_error(done, 5) == (
            f"Error: the server at {team.url} refused the token (HTTP 401); set PROJCTL_TOKEN"
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
        assert (
            one_error(done, 5) == "Error: the server refused: this token may only read (forbidden)"
        )
    assert team.server_db.read_bytes() == before


def test_a_remote_watch_with_a_refused_token_is_exit_5(team: TeamServer) -> None:
    done = team.run(
        "watch", "--json", "--since", "0", "--count", "1", "--timeout", "10", token="x" * 32
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("Error: ") == 1
    assert "refused the token" in done.stderr


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


def test_a_remote_watch_with_nothing_to_see_times_out_with_124(team: TeamServer) -> None:
    done = team.run("watch", "--json", "--count", "1", "--timeout", "2")
    assert (done.returncode, done.stdout, done.stderr) == (
        124,
        "",
        f"projctl watch: connected to {team.url}/ws\n"
        "Error: timed out after 2s waiting for events\n",
    )


def test_each_error_code_raises_what_its_documented_exit_code_reports(team: TeamServer) -> None:
    """``remote.ERROR_CODES`` says which exit code each reply's code means for projctl: the
    client raises the error that ``exit_code_for`` turns into that code."""
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
    writer.create("Existing")
    triggers: dict[str, Callable[[], object]] = {
        "invalid_input": lambda: writer.create(""),
        "not_found": lambda: writer.get("ghost"),
        "forbidden": lambda: reader.create("x"),
        "unknown_op": lambda: client.call("archive", {}),
        "bad_request": lambda: client.call("list", [1]),  # type: ignore[arg-type]
        "store_error": lambda: (team.server_db.write_bytes(b"garbage"), writer.list()),
    }
    raised: dict[str, tuple[str, int]] = {}
    for code, trigger in triggers.items():
        with pytest.raises(ProjctlError) as error:
            trigger()
        raised[code] = (type(error.value).__name__, int(exit_code_for(error.value)))
    assert {code: exit_code for code, (_, exit_code) in raised.items()} == {
        code: ERROR_CODES[code] for code in triggers
    }, raised


# -- 3. what serve refuses, and the tokens it makes -------------------------------------------


def test_serve_refuses_a_token_file_others_may_read(tmp_path: Path, tls: Tls) -> None:
    tokens = write_token_file(tmp_path / "tokens", secret("read"), secret("write"), mode=0o644)
    args = [*tls_args(tls, 0), "--token-file", str(tokens)]
    with serving(tmp_path / "server", args) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        f"Error: the token file {tokens} may be read by others (mode 0644); chmod 600 it\n"
    )
    assert server.out.read_text() == ""


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_serve_refuses_a_key_file_others_may_read(tmp_path: Path, tls: Tls, mode: int) -> None:
    tls.key.chmod(mode)
    with serving(tmp_path / "server", tls_args(tls, 0)) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        f"Error: the key file {tls.key} may be read by others (mode {mode:04o}); chmod 600 it\n"
    )
    assert server.out.read_text() == ""
    assert not server.db.exists()


@pytest.mark.parametrize("token", ["a" * 16 + " b", "a" * 16 + "\u00e9", "a" * 16 + "\x7f"])
def test_a_token_file_holds_only_tokens_a_header_can_carry(tmp_path: Path, token: str) -> None:
    path = write_token_file(tmp_path / "tokens", secret("read"), token)
    with pytest.raises(ConfigError) as refused:
        read_token_file(path)
    assert str(refused.value) == (
        f"{path}, line 3: expected 'read: TOKEN' or 'write: TOKEN' "
        "(a token of 16 or more visible ASCII characters)"
    )
    assert token not in str(refused.value)


def test_serve_refuses_plain_ws_beyond_loopback(tmp_path: Path) -> None:
    args = ["--host", "0.0.0.0", "--port", "0"]
    with serving(tmp_path / "server", args) as server:
        assert server.process.wait(timeout=30) == 2
    assert server.stderr() == (
        "Error: listening beyond loopback (0.0.0.0) without TLS sends tokens and data in the "
        "clear: give --certfile and --keyfile, or --insecure\n"
    )
    assert not server.db.exists()


def test_serve_insecure_beyond_loopback_warns_once(tmp_path: Path) -> None:
    # It listens on every address; this test connects to none of them.
    args = ["--host", "0.0.0.0", "--port", "0", "--insecure"]
    with serving(
        tmp_path / "server", args, ready=lambda server: FRESH_TOKENS in server.stderr()
    ) as server:
        pass
    assert server.process.returncode == 0
    lines = server.stderr().splitlines()
    assert lines[0] == (
        "Warning: serving plain ws:// beyond loopback: tokens and data cross the network "
        "unencrypted"
    )
    assert sum(line.startswith("Warning: ") for line in lines) == 1
    assert any(
        re.fullmatch(r".* INFO projctl\.server: serving ws://0\.0\.0\.0:\d+/ws .*", line)
        for line in lines
    )


FRESH_TOKENS = "projctl: fresh tokens are in "


def _announced(server: ServerProcess) -> tuple[Path, dict[str, list[str]]]:
    """The tokens ``serve`` made: stderr names their file (mode 0600), never a token."""
    match = re.search(rf"^{FRESH_TOKENS}(.+) \(mode 0600\)$", server.stderr(), re.MULTILINE)
    assert match, server.stderr()
    path = Path(match[1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read, write = read_token_file(path)  # the --token-file format: reusable as is
    return path, {"read": sorted(read), "write": sorted(write)}


def test_serve_writes_fresh_tokens_to_a_private_file_and_never_prints_them(
    tmp_path: Path, tls: Tls
) -> None:
    port = free_port()
    args = [*tls_args(tls, port), "--require-token"]
    with serving(
        tmp_path / "server",
        args,
        ready=lambda server: FRESH_TOKENS in server.stderr() and healthy(port, tls.ca),
    ) as server:
        token_path, announced = _announced(server)
        assert [len(announced["read"]), len(announced["write"])] == [1, 1], server.stderr()
        (read,), (write,) = announced["read"], announced["write"]
        team = TeamServer(server, tls, read, write, tmp_path / "elsewhere")
        created = team.run("create", "With a fresh token")
        assert created.returncode == 0, created.stderr
        assert team.run("list", token=read).stdout.startswith(created.stdout.strip())
        assert one_error(team.run("create", "x", token=read), 5).endswith("(forbidden)")
        assert one_error(team.run("list", token="y" * 32), 5).endswith("set PROJCTL_TOKEN")
        watched = team.run(
            "watch", "--json", "--since", "0", "--count", "1", "--timeout", "20", token=read
        )
        assert watched.returncode == 0, watched.stderr
        assert team.run("delete", "With a fresh token").returncode == 0
        log = server.stderr()
    assert server.process.returncode == 0
    # No line of stderr (the log; under systemd, the journal) holds a token.
    assert [line for line in log.splitlines() if read in line or write in line] == []
    assert server.out.read_text() == ""
    assert not token_path.exists()  # the tokens ended with the server


def test_serve_on_loopback_makes_only_a_write_token(tmp_path: Path, tls: Tls) -> None:
    port = free_port()
    with serving(
        tmp_path / "server",
        tls_args(tls, port),
        ready=lambda server: FRESH_TOKENS in server.stderr() and healthy(port, tls.ca),
    ) as server:
        _, announced = _announced(server)
        assert [len(announced["read"]), len(announced["write"])] == [0, 1], server.stderr()
        team = TeamServer(server, tls, "", announced["write"][0], tmp_path / "elsewhere")
        assert team.run("create", "x").returncode == 0
        assert one_error(team.run("list", PROJCTL_TOKEN=None), 5).endswith("set PROJCTL_TOKEN")


# -- 4. a client running as another user -----------------------------------------------------


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


# -- 5. hostile input on /rpc ----------------------------------------------------------------


def run_async(coroutine: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@contextlib.asynccontextmanager
async def rpc_connection(team: TeamServer, token: str | None = None) -> Any:
    context = ssl.create_default_context(cafile=str(team.ca))
    async with connect(
        team.url + RPC_PATH,
        ssl=context,
        additional_headers={"Authorization": f"Bearer {token or team.write_token}"},
        open_timeout=10,
        max_size=None,
    ) as ws:
        yield ws


async def ask(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    await ws.send(message)
    reply = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(reply, str), "replies are text frames"
    return orjson.loads(reply)  # type: ignore[no-any-return]


def _error(request_id: str | None, code: str, message: str, **details: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message, **details}}


NEEDS_AN_ID = "every request needs an id: a string of 1-128 characters"


def test_hostile_requests_get_error_replies_and_write_nothing(team: TeamServer) -> None:
    def request(request_id: str, op: str, **args: Any) -> str:
        return orjson.dumps({"id": request_id, "op": op, "args": args}).decode()

    async def scenario() -> None:
        async with rpc_connection(team) as ws:
            created = await ask(ws, request("seed", "create", name="Existing", owner_id="ann"))
            assert created["ok"] is True, created
            project_id = created["result"]["project"]["project_id"]
            before = team.server_db.read_bytes()
            cases: list[tuple[str | bytes, dict[str, Any]]] = [
                ("not json", _error(None, "bad_request", "a request is one JSON object")),
                ("", _error(None, "bad_request", "a request is one JSON object")),
                (b"\xff\xfe binary", _error(None, "bad_request", "a request is one JSON object")),
                (
                    "[" * 5000 + "]" * 5000,
                    _error(None, "bad_request", "a request is one JSON object"),
                ),
                (
                    '{"id": "a", "op": NaN}',
                    _error(None, "bad_request", "a request is one JSON object"),
                ),
                ("[1, 2]", _error(None, "bad_request", NEEDS_AN_ID)),
                ('"a string"', _error(None, "bad_request", NEEDS_AN_ID)),
                ("null", _error(None, "bad_request", NEEDS_AN_ID)),
                ('{"op": "list", "args": {}}', _error(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": 5, "op": "list"}', _error(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": ["x"], "op": "list"}', _error(None, "bad_request", NEEDS_AN_ID)),
                ('{"id": "", "op": "list"}', _error(None, "bad_request", NEEDS_AN_ID)),
                (request("i" * 129, "list"), _error(None, "bad_request", NEEDS_AN_ID)),
                (
                    request("h1", "drop_database"),
                    _error("h1", "unknown_op", "unknown op 'drop_database'"),
                ),
                ('{"id": "h2", "args": {}}', _error("h2", "unknown_op", "unknown op 'None'")),
                (
                    '{"id": "h3", "op": ["create"]}',
                    _error("h3", "unknown_op", "unknown op \"['create']\""),
                ),
                (
                    '{"id": "h4", "op": "create", "args": [1]}',
                    _error("h4", "bad_request", "args must be a JSON object"),
                ),
                (
                    '{"id": "h5", "op": "create", "args": null}',
                    _error("h5", "bad_request", "args must be a JSON object"),
                ),
                (
                    request("h6", "create", name=5, owner_id="ann"),
                    _error("h6", "invalid_input", "name must be a string"),
                ),
                (
                    request("h7", "create", name="x"),
                    _error("h7", "invalid_input", "owner_id must be a string"),
                ),
                (
                    request("h8", "create", name="", owner_id="ann"),
                    _error("h8", "invalid_input", "name must not be empty"),
                ),
                (
                    request("h9", "create", name="x", owner_id="ann", status="done!"),
                    _error(
                        "h9",
                        "invalid_input",
                        "status 'done!' is not one of created, in_progress, on_hold, completed, "
                        "archived",
                    ),
                ),
                (
                    request("h10", "create", name="x", owner_id="ann", description=["d"]),
                    _error("h10", "invalid_input", "description must be a string"),
                ),
                (
                    request("h11", "update", project=project_id, changes={"name": 5}),
                    _error(
                        "h11",
                        "invalid_input",
                        "changes must be an object of field names to strings",
                    ),
                ),
                (
                    request("h12", "update", project=project_id, changes="name=x"),
                    _error(
                        "h12",
                        "invalid_input",
                        "changes must be an object of field names to strings",
                    ),
                ),
                (
                    request("h13", "update", project=project_id, changes={"project_id": "p"}),
                    _error("h13", "invalid_input", "unknown project field(s): project_id"),
                ),
                (
                    request("h14", "update", project=project_id, changes={}),
                    _error(
                        "h14",
                        "invalid_input",
                        "nothing to update: give at least one field to change",
                    ),
                ),
                (
                    request("h15", "update", project=5, changes={"name": "y"}),
                    _error("h15", "invalid_input", "project must be a string"),
                ),
                (
                    request("h16", "delete", projects="all"),
                    _error("h16", "invalid_input", "projects must be a list of ids or names"),
                ),
                (
                    request("h17", "delete", projects=[project_id, 5]),
                    _error("h17", "invalid_input", "projects must be a list of ids or names"),
                ),
                (
                    request("h18", "delete", projects=[project_id, "ghost"], missing_ok="yes"),
                    _error(
                        "h18", "not_found", "no project with id or name 'ghost'", project="ghost"
                    ),
                ),
                (
                    request("h19", "get", project=None),
                    _error("h19", "invalid_input", "project must be a string"),
                ),
                (
                    request("h20", "list", status=5),
                    _error("h20", "invalid_input", "status must be a string"),
                ),
                (
                    request("h21", "get", project="ghost"),
                    _error(
                        "h21", "not_found", "no project with id or name 'ghost'", project="ghost"
                    ),
                ),
            ]
            replies = [(message, await ask(ws, message)) for message, _ in cases]
            assert replies == cases
            # The connection and the server are still fine, and nothing was written.
            listed = await ask(ws, request("after", "list"))
            assert listed["ok"] is True
            assert [p["project_id"] for p in listed["result"]["projects"]] == [project_id]
            assert team.server_db.read_bytes() == before

    run_async(scenario())
    assert healthy(team.server.port, team.ca)


def test_an_oversized_request_is_closed_with_1009(team: TeamServer) -> None:
    async def scenario() -> None:
        async with rpc_connection(team) as ws:
            seeded = await ask(
                ws,
                orjson.dumps({"id": "s", "op": "create", "args": {"name": "x", "owner_id": "a"}}),
            )
            assert seeded["ok"] is True
        before = team.server_db.read_bytes()
        huge = orjson.dumps(
            {
                "id": "big",
                "op": "create",
                "args": {"name": "big", "owner_id": "a", "description": "d" * 300_000},
            }
        )
        assert len(huge) > MAX_REQUEST
        async with rpc_connection(team) as ws:
            await ws.send(huge.decode())
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        assert team.server_db.read_bytes() == before
        # A request just under the limit is still answered (refused for its description).
        async with rpc_connection(team) as ws:
            fitting = orjson.dumps(
                {
                    "id": "fits",
                    "op": "create",
                    "args": {"name": "x", "owner_id": "a", "description": "d" * 200_000},
                }
            )
            assert len(fitting) < MAX_REQUEST
            reply = await ask(ws, fitting.decode())
            assert reply["ok"] is False
            assert reply["error"]["code"] == "invalid_input"

    run_async(scenario())
    assert healthy(team.server.port, team.ca)
    assert len(team.store().journal()) == 1


# -- 6. idempotency by request id -------------------------------------------------------------


def test_a_retried_write_is_applied_once(team: TeamServer) -> None:
    message = orjson.dumps(
        {"id": "retry-1", "op": "create", "args": {"name": "Once", "owner_id": "ann"}}
    ).decode()

    async def scenario() -> tuple[str, str]:
        async with rpc_connection(team) as first:
            await first.send(message)
            one = await asyncio.wait_for(first.recv(), 10)
        async with rpc_connection(team) as second:  # another connection, as a retry is
            await second.send(message)
            two = await asyncio.wait_for(second.recv(), 10)
        return str(one), str(two)

    first, second = run_async(scenario())
    assert second == first
    reply = orjson.loads(first)
    assert reply["ok"] is True
    store = team.store()
    assert [p.name for p in store.list_projects()] == ["Once"]
    assert len(store.journal()) == 1
    assert reply["result"]["project"] == store.list_projects()[0].to_dict()
    assert reply["result"]["event"] == store.journal()[0]


def test_concurrent_retries_are_applied_once(team: TeamServer) -> None:
    def create(request_id: str, name: str) -> str:
        args = {"name": name, "owner_id": "ann", "description": "d" * 5000}
        return orjson.dumps({"id": request_id, "op": "create", "args": args}).decode()

    async def send_on(ws: ClientConnection, message: str) -> str:
        await ws.send(message)
        return str(await asyncio.wait_for(ws.recv(), 10))

    async def scenario() -> list[list[str]]:
        rounds = []
        for number in range(5):
            async with contextlib.AsyncExitStack() as stack:
                connections = [
                    await stack.enter_async_context(rpc_connection(team)) for _ in range(3)
                ]
                message = create(f"together-{number}", f"Together {number}")
                rounds.append(
                    list(await asyncio.gather(*(send_on(ws, message) for ws in connections)))
                )
        return rounds

    rounds = run_async(scenario())
    for replies in rounds:
        assert replies[1:] == replies[:1] * 2
        assert orjson.loads(replies[0])["ok"] is True
    store = team.store()
    assert sorted(p.name for p in store.list_projects()) == [f"Together {n}" for n in range(5)]
    assert [event["seq"] for event in store.journal()] == [1, 2, 3, 4, 5]


def test_an_id_is_the_key_of_one_request_only(team: TeamServer) -> None:
    def request(request_id: str, op: str, **args: Any) -> str:
        return orjson.dumps({"id": request_id, "op": op, "args": args}).decode()

    async def scenario() -> None:
        first = request("reused", "create", name="First", owner_id="ann")
        async with rpc_connection(team) as ws:
            answered = await ask(ws, first)
            assert answered["ok"] is True
            # The same id for another request is refused, and applies nothing.
            for other in (
                request("reused", "create", name="Other", owner_id="ann"),
                request("reused", "delete", projects=["First"]),
            ):
                assert await ask(ws, other) == _error(
                    "reused", "bad_request", "this id was already used for another request"
                )
            assert await ask(ws, first) == answered  # the request itself still gets its answer
            # A write that failed is not remembered: its retry is carried out afresh.
            delete_later = request("freed", "delete", projects=["Later"])
            assert await ask(ws, delete_later) == _error(
                "freed", "not_found", "no project with id or name 'Later'", project="Later"
            )
            created = await ask(ws, request("later", "create", name="Later", owner_id="ann"))
            assert created["ok"] is True
            deleted = await ask(ws, delete_later)
            assert deleted["ok"] is True
            assert deleted["result"]["deleted"][0]["project"]["name"] == "Later"

    run_async(scenario())
    store = team.store()
    assert [project.name for project in store.list_projects()] == ["First"]
    assert [event["event_type"] for event in store.journal()] == [
        "project_created",
        "project_created",
        "project_deleted",
    ]


# -- 7. load, through a proxy that cuts connections -------------------------------------------


class TlsRecords:
    """Counts the TLS application-data records in one direction of a connection (their
    5-byte headers only: the content stays encrypted)."""

    def __init__(self) -> None:
        self.pending = b""
        self.application = 0

    def feed(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= 5:
            length = int.from_bytes(self.pending[3:5], "big")
            if len(self.pending) < 5 + length:
                return
            if self.pending[0] == 0x17:
                self.application += 1
            self.pending = self.pending[5 + length :]


class _Cut(Exception):
    pass


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a TLS server, one listening port per client, that
    cuts connections as a flaky network does (seeded):

    - ``lost_reply``: the client's request reaches the server, and the connection is cut
      when the reply comes back (TLS 1.3: the client's third application-data record,
      after its Finished and the HTTP upgrade, is the request frame);
    - ``lost_handshake``: cut when the server's first bytes come back.

    At most ``most_in_a_row`` connections of one port are cut in a row, so a client that
    retries a bounded number of times always gets through.
    """

    def __init__(
        self,
        upstream: int,
        clients: int,
        *,
        seed: int,
        lost_reply: float = 0.2,
        lost_handshake: float = 0.05,
        most_in_a_row: int = 2,
    ) -> None:
        self.upstream = upstream
        self.clients = clients
        self.rng = random.Random(seed)
        self.lost_reply = lost_reply
        self.lost_handshake = lost_handshake
        self.most_in_a_row = most_in_a_row
        self.ports: list[int] = []
        self.connections = 0
        self.cuts: Counter[str] = Counter()
        #: The size of what the server sent that a ``lost_reply`` cut kept from the client.
        self.lost_replies: list[int] = []
        self._in_a_row = [0] * clients
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=20)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _listen(self) -> None:
        for client in range(self.clients):
            server = await asyncio.start_server(
                functools.partial(self._relay, client), "127.0.0.1", 0
            )
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        # Connections the clients are still closing end by themselves; cut what is left.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def _plan(self, client: int) -> str | None:
        self.connections += 1
        roll = self.rng.random()
        if self._in_a_row[client] >= self.most_in_a_row:
            plan = None
        elif roll < self.lost_reply:
            plan = "lost_reply"
        elif roll < self.lost_reply + self.lost_handshake:
            plan = "lost_handshake"
        else:
            plan = None
        self._in_a_row[client] = self._in_a_row[client] + 1 if plan else 0
        return plan

    async def _relay(
        self, client: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        plan = self._plan(client)
        sent = TlsRecords()
        upstream_writer: asyncio.StreamWriter | None = None
        pumps: list[asyncio.Future[None]] = []
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream
            )
            up_writer = upstream_writer

            async def to_server() -> None:
                while data := await reader.read(65536):
                    sent.feed(data)  # counted before the server can have seen it
                    up_writer.write(data)
                    await up_writer.drain()
                if up_writer.can_write_eof():
                    up_writer.write_eof()

            async def to_client() -> None:
                while data := await upstream_reader.read(65536):
                    if plan == "lost_handshake" or (plan == "lost_reply" and sent.application >= 3):
                        self.cuts[plan] += 1
                        if plan == "lost_reply":
                            self.lost_replies.append(len(data))
                        raise _Cut
                    writer.write(data)
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()

            pumps = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        except (OSError, asyncio.CancelledError):
            pass  # the proxy is closing: the relay ends here, not as a cancelled task
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.transport.abort()
            if upstream_writer is not None:
                upstream_writer.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]


CLIENTS = 20
CREATES_EACH = 50


@pytest.mark.slow
def test_many_clients_through_a_cutting_proxy_create_each_project_once(
    tmp_path: Path, tls: Tls
) -> None:
    read, write = secret("read"), secret("write")
    tokens = write_token_file(tmp_path / "tokens", read, write)
    port = free_port()
    total = CLIENTS * CREATES_EACH
    with serving(
        tmp_path / "server",
        [*tls_args(tls, port), "--token-file", str(tokens)],
        env={"PROJCTL_JOURNAL_LIMIT": "2000"},
        ready=lambda _: healthy(port, tls.ca),
    ) as server:
        team = TeamServer(server, tls, read, write, tmp_path / "elsewhere")
        started = time.monotonic()
        with CuttingProxy(port, CLIENTS, seed=20240501) as proxy:

            def client(number: int) -> int:
                settings = load_settings(
                    environ={
                        "PROJCTL_URL": f"wss://127.0.0.1:{proxy.ports[number]}",
                        "PROJCTL_TOKEN": write,
                        "PROJCTL_CA_FILE": str(tls.ca),
                        "PROJCTL_OWNER": f"client-{number:02d}",
                        "PROJCTL_DB": str(tmp_path / "unused.json"),
                    }
                )
                database = projctl.Database(settings)
                for index in range(CREATES_EACH):
                    database.create(f"load-{number:02d}-{index:02d}")
                return number

            with ThreadPoolExecutor(CLIENTS) as pool:
                futures = [pool.submit(client, number) for number in range(CLIENTS)]
                deadline = time.monotonic() + 240
                done = [f.result(timeout=max(1, deadline - time.monotonic())) for f in futures]
            assert done == list(range(CLIENTS))
            cuts, connections = dict(proxy.cuts), proxy.connections
            lost_replies = list(proxy.lost_replies)
        elapsed = time.monotonic() - started
        # The proxy really cut replies (so retries were answered from the server's memory).
        assert cuts.get("lost_reply", 0) >= total * 0.1, (cuts, connections)
        assert cuts.get("lost_handshake", 0) > 0, (cuts, connections)
        # What a lost_reply cut kept from the client was the reply to the create (about 600
        # bytes with TLS), never the ~200-byte answer to the upgrade: the server had applied it.
        assert min(lost_replies) > 400, sorted(lost_replies)[:10]

        store = team.store()
        projects = store.list_projects()
        names = [project.name for project in projects]
        assert len(projects) == total
        assert len(set(names)) == total
        assert set(names) == {f"load-{c:02d}-{i:02d}" for c in range(CLIENTS) for i in range(50)}
        journal = store.journal()
        assert [event["seq"] for event in journal] == list(range(1, total + 1))
        assert store.latest_seq() == total

        watched = team.run(
            "watch", "--json", "--since", "0", "--count", str(total), "--timeout", "60", timeout=90
        )
        assert watched.returncode == 0, watched.stderr[-2000:]
        lines = watched.stdout.splitlines()
        assert len(lines) == total
        assert [orjson.loads(line) for line in lines] == journal
    assert elapsed < 180, f"{total} creates took {elapsed:.1f}s"
