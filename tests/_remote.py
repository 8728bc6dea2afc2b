"""Shared by the test_remote_*.py files: TLS material, a ``projctl serve`` process, a team server
with a token file, commands run from "another machine", and raw requests to its REST API.

Every command is the installed ``projctl`` as a real process: the tests assert exit codes,
stdout and stderr exactly, and compare them with what the local CLI prints for the same thing.
The ``tls`` and ``team`` fixtures (tests/conftest.py) are built from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import os
import re
import secrets
import ssl
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import trustme

from projctl.store import ProjectStore

from .conftest import PROJCTL, run_projctl, wait_until

Completed = subprocess.CompletedProcess[str]

#: Every wait on the server or a client is bounded by this.
SERVER_START_TIMEOUT = 20.0
PROJECT_ID = re.compile(r"proj_\d{8}_\d{6}(?:_\d+)?")
#: The server's log line saying where it serves (the port read from its own socket).
SERVING = re.compile(r" projctl\.server: serving wss?://\S+:(\d+)/ws ")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


@dataclasses.dataclass(frozen=True)
class Tls:
    """A private CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files."""

    authority: trustme.CA
    ca: Path
    cert: Path
    key: Path


def make_tls(tmp_path: Path) -> Tls:
    """The ``tls`` fixture: a fresh CA and its certificate under ``tmp_path/tls``."""
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
    db: Path
    log: Path
    out: Path

    @property
    def port(self) -> int:
        """The port it listens on: it binds the port asked for (0: any free one) and says
        which in its log, as read from its own socket."""
        found = SERVING.search(self.stderr())
        assert found, f"projctl serve has not said where it serves:\n{self.stderr()}"
        return int(found[1])

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def serves(self, ca: Path) -> bool:
        """Whether it has said where it listens and answers ``/healthz`` there, trusting ``ca``."""
        return SERVING.search(self.stderr()) is not None and healthy(self.port, ca)

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
    with log.open("wb") as err, out.open("wb") as stdout:
        process = subprocess.Popen(
            [PROJCTL, "serve", *args, "--db", str(db)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(process, db, log, out)
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


def tls_args(tls: Tls, port: int = 0) -> list[str]:
    """TLS on 127.0.0.1; port 0 (the default): the server binds any free port, no race."""
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
        return run_projctl(*args, timeout=timeout, env=self.client_env(token, **env))

    def local(self, *args: str, timeout: float = 60) -> Completed:
        """``projctl ARGS`` on the server's machine, against the server's database file."""
        return run_local(self.server_db, *args, timeout=timeout)


def run_local(db: Path, *args: str, timeout: float = 60) -> Completed:
    """The local CLI against the database file ``db`` (no broadcasting, as in every test)."""
    return run_projctl(*args, timeout=timeout, env={**os.environ, "PROJCTL_DB": str(db)})


def secret(kind: str) -> str:
    return f"{kind}-{secrets.token_urlsafe(24)}"


@contextlib.contextmanager
def team_server(tmp_path: Path, tls: Tls) -> Iterator[TeamServer]:
    """The ``team`` fixture: a TLS ``projctl serve`` with a token file, until the block ends;
    then no token may be in its log."""
    read, write = secret("read"), secret("write")
    tokens = write_token_file(tmp_path / "tokens", read, write)
    args = [*tls_args(tls), "--token-file", str(tokens)]
    with serving(tmp_path / "server", args, ready=lambda server: server.serves(tls.ca)) as server:
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


def run_async(coroutine: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def api(
    team: TeamServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, Any]:
    """One request to the team server's REST API over TLS, with the write token unless
    another (``""``: none) is given: its status, headers and decoded JSON body."""
    context = ssl.create_default_context(cafile=str(team.ca))
    host, port = team.url.removeprefix("wss://").rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
    sent = dict(headers or {})
    chosen = team.write_token if token is None else token
    if chosen:
        sent["Authorization"] = f"Bearer {chosen}"
    payload = raw
    if body is not None:
        payload = orjson.dumps(body)
        sent.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    decoded = orjson.loads(data) if data else None
    return response.status, response.headers, decoded
