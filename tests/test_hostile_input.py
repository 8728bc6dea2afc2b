"""Hostile input: every argument either round-trips exactly or is refused with one Error line.

Property-based (hypothesis) over the CLI in-process, and hand-picked abuse of the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from projctl import rpc, runtime
from projctl.cli import app
from projctl.model import (
    validate_description,
    validate_name,
    validate_owner_id,
    validate_type,
)

from .test_server import receive, run, serving, until, ws_url

RUNNER = CliRunner()

# Text that stresses every rule: any unicode, control characters, very long runs, option lookalikes.
hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=190, max_size=210),
    st.sampled_from(["-x", "--name=-x", "--", "-", "--help", "‮evil", "\x00", " ", "\t\n"]),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "é", "🙂", "\x1b"]), st.integers(0, 12_000)
    ),
)


# Values that pass the rules, so that the success path is exercised as often as refusals.
printable = st.characters(blacklist_categories=("Cc", "Cs"))
plausible_name = st.text(printable, min_size=1, max_size=200).filter(lambda s: s.strip())
plausible_owner = st.text(printable, min_size=1, max_size=100).filter(lambda s: s.strip())
plausible_type = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)
plausible_description = st.text(st.one_of(printable, st.sampled_from("\n\t")), max_size=500)


def invoke(db: Path, command: str, *args: str) -> Result:
    return RUNNER.invoke(app, [command, "--db", str(db), *args], prog_name="projctl")


def refused_cleanly(result: Result) -> bool:
    return (
        result.exit_code == 2
        and result.stdout == ""
        and result.stderr.startswith("Error: ")
        and result.stderr.count("\n") == 1
        and "Traceback" not in result.stderr
    )


def accepts(validate: Callable[[str], str], value: str) -> str | None:
    try:
        return validate(value)
    except ValueError:
        return None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Plausible values twice as likely as hostile ones: all four must pass for a create.
    name=st.one_of(hostile_text, plausible_name, plausible_name),
    description=st.one_of(hostile_text, plausible_description, plausible_description),
    owner=st.one_of(hostile_text, plausible_owner, plausible_owner),
    kind=st.one_of(hostile_text, plausible_type, plausible_type),
)
def test_create_round_trips_or_refuses(
    tmp_path: Path, name: str, description: str, owner: str, kind: str
) -> None:
    db = tmp_path / "hostile.json"
    before = db.read_bytes() if db.exists() else None
    result = invoke(
        db, "create", "--json", f"--description={description}", f"--owner={owner}",
        f"--type={kind}", "--", name,
    )  # fmt: skip
    expected = (
        accepts(validate_name, name),
        accepts(validate_description, description),
        accepts(validate_owner_id, owner),
        accepts(validate_type, kind),
    )
    event("refused" if None in expected else "accepted")
    if None in expected:
        assert refused_cleanly(result), (result.exit_code, result.stdout, result.stderr)
        assert (db.read_bytes() if db.exists() else None) == before
        return
    assert result.exit_code == 0, result.stderr
    printed = orjson.loads(result.stdout)
    shown = orjson.loads(invoke(db, "show", "--json", printed["project_id"]).stdout)
    assert shown == printed
    assert (shown["name"], shown["description"], shown["owner_id"], shown["type"]) == expected


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(hostile_text, plausible_name, plausible_owner, plausible_type),
    option=st.sampled_from(["--name", "--type", "--owner", "--description"]),
)
def test_update_round_trips_or_refuses(tmp_path: Path, value: str, option: str) -> None:
    db = tmp_path / "hostile-update.json"
    if not db.exists():
        assert invoke(db, "create", "target").exit_code == 0
    project_id = orjson.loads(invoke(db, "list", "--json").stdout)[0]["project_id"]
    before = db.read_bytes()
    result = invoke(db, "update", project_id, f"{option}={value}", "--json")
    validate = {
        "--name": validate_name,
        "--type": validate_type,
        "--owner": validate_owner_id,
        "--description": validate_description,
    }[option]
    expected = accepts(validate, value)
    event("refused" if expected is None else "accepted")
    if expected is None:
        assert refused_cleanly(result), (result.exit_code, result.stdout, result.stderr)
        assert db.read_bytes() == before
        return
    assert result.exit_code == 0, result.stderr
    field = {"--owner": "owner_id"}.get(option, option.removeprefix("--"))
    assert orjson.loads(result.stdout)["project"][field] == expected


# -- the server under abuse -----------------------------------------------------------------


def _abandon_handshakes(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections that stop mid-request; return the half left open."""
    left_open = []
    for number in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
        if number % 2:
            raw.close()
        else:
            left_open.append(raw)
    return left_open


def _raw_request(path: Path, line: bytes) -> dict[str, Any]:
    """Send one raw line on the server's private socket and return its decoded reply."""
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(5)
        raw.connect(str(path))
        raw.sendall(line)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = raw.recv(65536)
            assert chunk, "the server hung up without answering"
            reply += chunk
    return orjson.loads(reply)  # type: ignore[no-any-return]


def test_server_shrugs_off_abuse_and_broadcasts_only_commits(store: Any) -> None:
    async def scenario() -> None:
        async with serving(store, gap_grace=60, poll_interval=60) as server:
            well_behaved = await connect(ws_url(server, "?since=0"))
            await until(lambda: len(server.feed.subscribers) == 1)
            # 500 connections abandoned mid-handshake: half a request, then silence or close.
            # (Opened from a thread: the server runs on this event loop and must keep accepting.)
            abandoned = await asyncio.to_thread(_abandon_handshakes, server.port, 500)
            # A subscriber that tries to publish: text, binary, junk, a forged event.
            forged = {
                "event_type": "project_deleted",
                "timestamp": "2023-11-19T12:00:00.000000",
                "seq": 1,
                "data": {"project_id": "proj_forged", "name": "forged"},
            }
            async with connect(ws_url(server)) as rogue:
                await rogue.send(orjson.dumps({"event": forged}).decode())
                await rogue.send(orjson.dumps(forged))
                await rogue.send("not json at all")
                await rogue.send(b"\x00\xff binary")
            # Garbage on the private socket is answered, never broadcast.
            info = runtime.read_server_state(runtime.runtime_paths(store.path))
            assert info is not None
            for line in (
                b'{"op": "forward", "event": {"nope": 1}}\n',
                b'{"op": "explode"}\n',
                b"[]\n",
                b"\xff\xfe not even text\n",
            ):
                reply = await asyncio.to_thread(_raw_request, info.socket, line)
                assert reply["ok"] is False
            with pytest.raises(asyncio.TimeoutError):
                await receive(well_behaved, timeout=0.5)  # nothing uncommitted went out
            # A real commit still reaches the well-behaved subscriber.
            event = (await asyncio.to_thread(store.create, "real")).event
            await asyncio.to_thread(rpc.request, info.socket, rpc.OP_FORWARD, event=event)
            assert await receive(well_behaved) == event
            status = await asyncio.to_thread(rpc.request, info.socket, rpc.OP_STATUS)
            assert status["latest_seq"] == 1
            for raw in abandoned:
                raw.close()
            await well_behaved.close()

    run(scenario())


def test_oversized_frames_close_the_connection(store: Any) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            big = "x" * (2 << 20)
            async with connect(ws_url(server), max_size=None) as subscriber:
                await subscriber.send(big)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(subscriber.recv(), 5)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1009
            assert server.last_seq == 0

    run(scenario())


def test_huge_line_on_the_private_socket_is_dropped(store: Any) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            path = str(runtime.runtime_paths(store.path).socket)

            def flood() -> bytes:
                with socket.socket(socket.AF_UNIX) as raw:
                    raw.settimeout(5)
                    raw.connect(path)
                    try:
                        raw.sendall(b"{" + b"x" * (4 << 20))
                    except OSError:
                        return b""  # the server hung up: fine
                    raw.shutdown(socket.SHUT_WR)
                    return raw.recv(100)

            assert await asyncio.to_thread(flood) == b""
            info = runtime.read_server_state(runtime.runtime_paths(store.path))
            assert info is not None
            reply = await asyncio.to_thread(rpc.request, info.socket, rpc.OP_STATUS)
            assert reply["latest_seq"] == 0
            assert server.last_seq == 0

    run(scenario())


def test_environment_is_untouched(tmp_path: Path) -> None:
    """Hypothesis examples write only below tmp_path (the autouse fixture's promise)."""
    assert Path(os.environ["HOME"]).is_relative_to(tmp_path)
