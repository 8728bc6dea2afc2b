"""Docs that run: every code block of README.md and docs/*.md runs verbatim, or says why not.

``sh`` and ``bash`` blocks run under bash, ``python`` blocks with this interpreter, each in a
fresh folder with the test's own HOME, database and runtime folder, commands broadcasting as
they do for a user, and a bounded time. ``json`` blocks must parse. A comment on the line
before a block changes how it runs:

- ``<!-- doc-test: team-server -->``: against a team server the test starts (TLS, a token
  file): ``projctl.example:8443`` names it, ``ca.pem`` and ``team-ca.pem`` are its CA, and
  ``PROJCTL_TOKEN`` holds its write token.
- ``<!-- doc-test: team-server-start -->``: the block starts a team server in the
  foreground, with ``cert.pem`` and ``key.pem`` at hand; it runs on 127.0.0.1 and a free port
  instead of ``--host 0.0.0.0 --port 8443``, is checked to serve, then stopped.
- ``<!-- doc-test: nats-cluster -->``: against the tests' three-node NATS cluster: the
  block's ``nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224/`` and
  ``nats://127.0.0.1:4222/`` name it, with a database name of the test's own.
- ``<!-- doc-test: skip: REASON -->``: not run, for the reason given.

Blocks in other languages are not programs to run here (:data:`NOT_RUN` says why).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from .conftest import PROJCTL, require_tool, server_pids, wait_until

# Many whole processes each (~10 s of the suite): in the slow run, which CI runs every
# time too; the README's command stays fast.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Every block is bounded by this.
BLOCK_TIMEOUT = 60
RUN = {"sh": "bash", "bash": "bash", "python": "python"}
NOT_RUN = {
    "text": "what a terminal shows, not a program",
    "ini": "a systemd unit file, for a service manager",
    "nginx": "a reverse proxy's configuration",
    "conf": "a nats-server configuration file, for its own process",
    "javascript": "browser code for ws://localhost:8000; the dashboard tests run the same "
    "contract in Chromium",
}
_MARKER = re.compile(r"<!-- doc-test: ([a-z-]+)(?:: (.+?))? -->")


@dataclasses.dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    code: str
    mode: str | None  # team-server, team-server-start, skip
    reason: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker before each."""
    found = []
    lines = document.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\w*)", lines[index])
        if opening is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _MARKER.fullmatch(before.strip())
        found.append(
            Block(
                document,
                index + 1,
                opening[1],
                "\n".join(lines[index + 1 : end]) + "\n",
                marker[1] if marker else None,
                marker[2] if marker else None,
            )
        )
        index = end + 1
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]


def test_every_block_has_a_known_language_and_mode() -> None:
    assert len(ALL_BLOCKS) >= 15
    for block in ALL_BLOCKS:
        assert block.language in {*RUN, *NOT_RUN, "json"}, block.name
        assert block.mode in (
            None,
            "team-server",
            "team-server-start",
            "nats-cluster",
            "skip",
        ), block.name
        if block.mode == "skip":
            assert block.reason, f"{block.name}: a skipped block says why"


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.language == "json"], ids=lambda b: b.name
)
def test_json_blocks_parse(block: Block) -> None:
    """A block holds one JSON value, or several one after another (a request and its reply)."""
    decoder, text, position = json.JSONDecoder(), block.code.strip(), 0
    while position < len(text):
        _, position = decoder.raw_decode(text, position)
        while position < len(text) and text[position].isspace():
            position += 1


def _environment(work: Path, **more: str) -> dict[str, str]:
    """The test's isolated environment (conftest), broadcasting as a user's commands do, with
    the installed projctl and this python first on PATH."""
    env = {name: value for name, value in os.environ.items() if name != "PROJCTL_NO_BROADCAST"}
    folders = [str(Path(PROJCTL).parent), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*folders, env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return {**env, **more}


def run_block(block: Block, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    work.mkdir(parents=True, exist_ok=True)
    if RUN[block.language] == "bash":
        command = [require_tool("bash"), "-e", "-o", "pipefail", "-c", block.code]
    else:
        command = [sys.executable, "-c", block.code]
    return subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


LOCAL = [b for b in ALL_BLOCKS if b.language in RUN and b.mode is None]
TEAM = [b for b in ALL_BLOCKS if b.language in RUN and b.mode == "team-server"]
STARTS = [b for b in ALL_BLOCKS if b.language in RUN and b.mode == "team-server-start"]
SKIPPED = [b for b in ALL_BLOCKS if b.mode == "skip"]
CLUSTER = [b for b in ALL_BLOCKS if b.language in RUN and b.mode == "nats-cluster"]


@pytest.mark.parametrize("block", CLUSTER, ids=lambda b: b.name)
def test_cluster_blocks_run_against_the_test_cluster(
    block: Block, tmp_path: Path, nats_cluster: Any
) -> None:
    import secrets

    prefix = f"{nats_cluster.location}/d{secrets.token_hex(4)}"
    code = block.code.replace("nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224/", prefix)
    code = code.replace("nats://127.0.0.1:4222/", prefix)
    assert code != block.code, f"{block.name} names no nats://127.0.0.1:4222 location"
    done = run_block(
        dataclasses.replace(block, code=code), tmp_path / "work", _environment(tmp_path / "work")
    )
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("block", LOCAL, ids=lambda b: b.name)
def test_local_blocks_run_verbatim(block: Block, tmp_path: Path) -> None:
    done = run_block(block, tmp_path / "work", _environment(tmp_path / "work"))
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


def test_the_python_api_block_ends_and_stops_its_server(tmp_path: Path) -> None:
    """The README's Python block follows the feed to its end, then stops the server the
    changes started: nothing is left running."""
    (block,) = [b for b in LOCAL if "db.subscribe(since=0)" in b.code and "README" in b.name]
    done = run_block(block, tmp_path / "work", _environment(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    kinds = [line.split()[1] for line in done.stdout.splitlines()[1:]]
    assert kinds == ["project_created", "project_updated", "tests_run", "project_deleted"]
    run_folder = Path(os.environ["XDG_RUNTIME_DIR"])
    assert server_pids(run_folder, tmp_path) == set()


@pytest.mark.parametrize("block", TEAM, ids=lambda b: b.name)
def test_team_server_blocks_run_against_a_team_server(
    block: Block, tmp_path: Path, team: Any
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("ca.pem", "team-ca.pem"):
        shutil.copy(team.ca, work / name)
    code = block.code.replace("projctl.example:8443", f"127.0.0.1:{team.server.port}")
    code = code.replace('"projctl.example", 8443', f'"127.0.0.1", {team.server.port}')
    assert code != block.code, f"{block.name} does not name projctl.example:8443"
    env = _environment(work, PROJCTL_TOKEN=team.write_token)
    env.pop("PROJCTL_DB")  # another machine: the team server's database only
    done = run_block(dataclasses.replace(block, code=code), work, env)
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip(), f"{block.name} printed nothing"
    if "get failed:" in block.code:  # the Python client met the error it shows
        assert "get failed: not_found" in done.stdout


@pytest.mark.parametrize("block", STARTS, ids=lambda b: b.name)
def test_team_server_start_blocks_serve(block: Block, tmp_path: Path, tls: Any) -> None:
    from ._remote import SERVING, healthy

    require_tool("bash")
    if shutil.which("openssl") is None and "openssl" in block.code:
        pytest.skip("openssl is not installed (the block makes tokens with it)")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(tls.cert, work / "cert.pem")
    shutil.copy(tls.key, work / "key.pem")
    code = block.code.replace("--host 0.0.0.0 --port 8443", "--host 127.0.0.1 --port 0")
    assert code != block.code, f"{block.name} does not serve on --host 0.0.0.0 --port 8443"
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [require_tool("bash"), "-e", "-c", code],
            cwd=work,
            env=_environment(work),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        found = wait_until(
            lambda: process.poll() is not None or SERVING.search(log.read_text()),
            timeout=20,
            what="the block's server serves",
        )
        assert process.poll() is None, log.read_text()
        port = int(found[1])  # type: ignore[index]
        assert healthy(port, tls.ca)
        assert (work / "tokens").stat().st_mode & 0o077 == 0
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_skipped_blocks_say_why() -> None:
    """Only the README's opening lines are not run: they install projctl and run this very
    suite, which .ci/run does (tests/test_docs.py checks it runs exactly them)."""
    assert [block.name for block in SKIPPED] == ["README.md:4"]


def test_the_readme_http_requests_broadcast_the_contract(tmp_path: Path) -> None:
    """The README's HTTP block, run with curl against a local server on a free port, makes
    the original backend's three requests; a subscriber gets the three events."""
    require_tool("curl")
    (block,) = [b for b in LOCAL if "project_type" in b.code and "README" in b.name]
    work = tmp_path / "work"
    env = _environment(work)
    started = subprocess.run(
        [PROJCTL, "server", "start"], env=env, capture_output=True, text=True, timeout=30
    )
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()

    async def scenario() -> list[dict[str, Any]]:
        async with connect(url) as ws:
            done = await asyncio.to_thread(run_block, block, work, env)
            assert done.returncode == 0, done.stderr
            return [
                orjson.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
                for _ in range(3)
            ]

    events = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [event["event_type"] for event in events] == [
        "project_created",
        "project_updated",
        "project_deleted",
    ]
    created, updated, deleted = (event["data"] for event in events)
    assert (created["name"], created["type"], created["status"]) == ("My Project", "api", "created")
    assert updated["status"] == "in_progress"
    assert updated["updated_fields"] == ["status"]
    assert deleted == {"project_id": created["project_id"], "name": "My Project"}
    for event in events:
        assert set(event) == {"event_type", "timestamp", "seq", "data"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", event["timestamp"])
