"""The broadcast server in-process: fan-out, replay, gap fill, security, slow subscribers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from projctl import rpc, runtime
from projctl.errors import ServerError
from projctl.events import Event, project_updated
from projctl.runtime import is_loopback, runtime_paths
from projctl.server import BroadcastServer, ServerConfig
from projctl.store import Change, ProjectStore

from .conftest import OwnedStore, until

RECEIVE_TIMEOUT = 5.0


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run one test's coroutine with an overall bound."""
    asyncio.run(asyncio.wait_for(coroutine, 60))


@contextlib.asynccontextmanager
async def serving(store: ProjectStore, **overrides: Any) -> AsyncIterator[BroadcastServer]:
    paths = runtime_paths(store.path, for_a_server=True)
    config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **overrides})
    server = BroadcastServer(store, paths, config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def ws_url(server: BroadcastServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws{query}"


async def receive(ws: ClientConnection, timeout: float = RECEIVE_TIMEOUT) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), "events travel as text frames"
    return orjson.loads(message)  # type: ignore[no-any-return]


async def commit(store: ProjectStore, change: Callable[[], Change]) -> Event:
    """Commit a change off the event loop and forward it the way a command does."""

    def work() -> Event:
        result = change()
        assert result.event is not None
        state = runtime.read_server_state(runtime_paths(store.path))
        assert state is not None
        rpc.request(state.socket, rpc.OP_FORWARD, event=result.event, version=result.version)
        return result.event

    return await asyncio.to_thread(work)


def test_each_event_type_reaches_a_subscriber_exactly(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            created = await commit(store, lambda: store.create("Alpha", description="d"))
            project_id = created["data"]["project_id"]
            updated = await commit(
                store, lambda: store.update(project_id, {"status": "in_progress"})
            )
            deleted = await commit(store, lambda: store.delete(project_id))
            assert await receive(ws) == created
            assert await receive(ws) == updated
            assert updated["data"]["updated_fields"] == ["status"]
            assert await receive(ws) == deleted
            assert deleted["data"] == {"project_id": project_id, "name": "Alpha"}

    run(scenario())


def test_minimal_project_has_every_field(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            await commit(store, lambda: store.create("Only a name"))
            event = await receive(ws)
            data = event["data"]
            assert event["event_type"] == "project_created"
            assert (data["name"], data["type"], data["status"], data["description"]) == (
                "Only a name",
                "api",
                "created",
                "",
            )
            assert data["owner_id"] == "tester"
            assert set(event) == {"event_type", "timestamp", "seq", "data"}

    run(scenario())


def test_several_clients_receive_every_event_in_order(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            subscribers = [await connect(ws_url(server)) for _ in range(5)]
            await until(lambda: len(server.feed.subscribers) == 5)
            sent = [await commit(store, lambda i=i: store.create(f"p{i}")) for i in range(10)]
            for ws in subscribers:
                assert [await receive(ws) for _ in sent] == sent
                await ws.close()

    run(scenario())


def test_no_subscribers_is_fine(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            for number in range(3):
                await commit(store, lambda n=number: store.create(f"p{n}"))
            assert server.last_seq == 3
            assert server.sequencer.stats.events == 3

    run(scenario())


def test_resume_with_since_after_a_disconnect(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            first = [await commit(store, lambda i=i: store.create(f"a{i}")) for i in range(3)]
            seen = [await receive(ws) for _ in first]
            missed = [await commit(store, lambda i=i: store.create(f"b{i}")) for i in range(2)]
            async with connect(ws_url(server, f"?since={seen[-1]['seq']}")) as ws:
                assert [await receive(ws), await receive(ws)] == missed
                live = await commit(store, lambda: store.create("live"))
                assert await receive(ws) == live
                with pytest.raises(asyncio.TimeoutError):
                    await receive(ws, timeout=0.3)  # nothing twice

    run(scenario())


def test_since_zero_replays_the_whole_journal(store: ProjectStore) -> None:
    for number in range(4):
        store.create(f"before {number}")  # committed before the server existed

    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server, "?since=0")) as ws:
            replay = [await receive(ws) for _ in range(4)]
            assert replay == store.journal()

    run(scenario())


def test_seam_between_replay_and_live_has_no_gap_or_duplicate(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            for number in range(20):
                await commit(store, lambda n=number: store.create(f"p{n}"))

            async def writer() -> None:
                for number in range(30):
                    await commit(store, lambda n=number: store.create(f"q{n}"))

            task = asyncio.ensure_future(writer())
            connections = []
            for since in (0, 5, 10, 15, 19):
                connections.append((since, await connect(ws_url(server, f"?since={since}"))))
                await asyncio.sleep(0.01)
            await task
            for since, ws in connections:
                seqs = [(await receive(ws))["seq"] for _ in range(50 - since)]
                assert seqs == list(range(since + 1, 51))
                await ws.close()

    run(scenario())


def test_since_older_than_the_journal_gets_a_resync(tmp_path: Path) -> None:
    store = OwnedStore(tmp_path / "db.json", journal_limit=3)
    kept = store.create("kept").project
    for number in range(5):
        store.update(kept.project_id, {"description": str(number)})

    async def scenario() -> None:
        async with serving(store, journal_window=3) as server:
            async with connect(ws_url(server, "?since=1")) as ws:
                resync = await receive(ws)
                assert resync["event_type"] == "resync"
                assert resync["seq"] == 6
                assert resync["data"]["projects"] == [store.get(kept.project_id).to_dict()]
                live = await commit(store, lambda: store.create("after"))
                assert await receive(ws) == live
            async with connect(ws_url(server, "?since=99")) as ws:
                assert (await receive(ws))["event_type"] == "resync"

    run(scenario())


def test_snapshot_then_live(store: ProjectStore) -> None:
    alpha = store.create("alpha").project
    beta = store.create("beta").project
    store.delete(beta.project_id)

    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server, "?snapshot=1")) as ws:
            snapshot = await receive(ws)
            assert snapshot["event_type"] == "snapshot"
            assert snapshot["seq"] == 3
            assert snapshot["data"]["projects"] == [alpha.to_dict()]
            live = await commit(store, lambda: store.create("gamma"))
            assert await receive(ws) == live

    run(scenario())


def test_snapshot_includes_events_the_file_read_missed(store: ProjectStore) -> None:
    """A snapshot built from an older read of the file is brought up to the broadcast seq."""
    from projctl.store import StoreState

    async def scenario() -> None:
        async with serving(store) as server:
            stale = store.read_state()
            created = await commit(store, lambda: store.create("late"))
            assert isinstance(stale, StoreState)
            records = server.sequencer.projects_at_last_seq(stale)
            assert records == [created["data"]]

    run(scenario())


def test_crashed_forward_is_filled_from_the_journal(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with (
            serving(store, poll_interval=0.05, gap_grace=0.1) as server,
            connect(ws_url(server)) as ws,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            # Committed, never forwarded: as if the command died right after its commit.
            silent = (await asyncio.to_thread(store.create, "silent")).event
            assert await receive(ws, timeout=3) == silent
            forwarded = await commit(store, lambda: store.create("loud"))
            assert await receive(ws) == forwarded
            assert server.sequencer.stats.gap_fills >= 1

    run(scenario())


def test_early_forward_waits_for_the_one_before_it(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, gap_grace=5) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            first = (await asyncio.to_thread(store.create, "first")).event
            second = (await asyncio.to_thread(store.create, "second")).event
            server.accept(second)
            with pytest.raises(asyncio.TimeoutError):
                await receive(ws, timeout=0.2)
            server.accept(first)
            assert [await receive(ws), await receive(ws)] == [first, second]
            server.accept(first)  # a duplicate forward is ignored
            with pytest.raises(asyncio.TimeoutError):
                await receive(ws, timeout=0.2)

    run(scenario())


def test_missing_forward_behind_an_early_one_is_filled(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with (
            serving(store, gap_grace=0.1, poll_interval=10) as server,
            connect(ws_url(server)) as ws,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            lost = (await asyncio.to_thread(store.create, "lost")).event
            second = (await asyncio.to_thread(store.create, "second")).event
            server.accept(second)
            assert [await receive(ws), await receive(ws)] == [lost, second]

    run(scenario())


def test_healthz(store: ProjectStore) -> None:
    store.create("x")

    async def scenario() -> None:
        async with serving(store) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), RECEIVE_TIMEOUT)
            writer.close()
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"Content-Type: application/json" in head
            health = orjson.loads(body)
            assert health["status"] == "ok"
            assert health["latest_seq"] == 1
            assert health["subscribers"] == 0
            assert health["database"]["path"] == str(store.path.resolve())
            assert len(health["database"]["id"]) == 16
            assert "version" in health

    run(scenario())


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", "9" * 40, ""])
def test_invalid_since_is_refused(store: ProjectStore, since: str) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(server, f"?since={since}"))
            assert refused.value.response.status_code == 400

    run(scenario())


def test_unknown_path_is_404(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{server.port}/elsewhere")
            assert refused.value.response.status_code == 404

    run(scenario())


def forward_frame(event: Event) -> str:
    return orjson.dumps({"event": event}).decode()


def test_only_a_forward_broadcasts_and_there_is_no_publish_route(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with (
            serving(store, gap_grace=60, poll_interval=60) as server,
            connect(ws_url(server)) as ws,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            event = (await asyncio.to_thread(store.create, "real")).event
            assert event is not None
            for headers in ({}, {"Authorization": "Bearer anything"}):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(
                        f"ws://127.0.0.1:{server.port}/publish", additional_headers=headers
                    )
                assert refused.value.response.status_code == 404
            # Publishing on a subscriber connection is ignored.
            await ws.send(forward_frame(event))
            with pytest.raises(asyncio.TimeoutError):
                await receive(ws, timeout=0.3)
            assert server.last_seq == 0  # nothing was broadcast
            state = runtime.read_server_state(runtime_paths(store.path))
            assert state is not None
            reply = await asyncio.to_thread(rpc.request, state.socket, rpc.OP_FORWARD, event=event)
            assert reply["seq"] == 1
            assert await receive(ws) == event

    run(scenario())


def test_foreign_origin_is_refused(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, allow_origins=("https://dash.example",)) as server:
            for origin in ("http://localhost:3000", "http://127.0.0.1", "http://[::1]:8080"):
                async with connect(ws_url(server), origin=origin):  # type: ignore[arg-type]
                    pass
            async with connect(ws_url(server), origin="https://dash.example"):  # type: ignore[arg-type]
                pass
            for origin in ("https://evil.example", "http://localhost.evil.example"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(ws_url(server), origin=origin)  # type: ignore[arg-type]
                assert refused.value.response.status_code == 403

    run(scenario())


def test_subscriber_token_when_beyond_loopback(store: ProjectStore) -> None:
    assert is_loopback("localhost")
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.1")

    async def scenario() -> None:
        async with serving(store, subscriber_token="s3cret") as server:
            for query in ("", "?token=wrong"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(ws_url(server, query))
                assert refused.value.response.status_code == 401
            async with connect(ws_url(server, "?token=s3cret")):
                pass

    run(scenario())


def test_oversized_subscriber_message_closes_with_1009(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            await ws.send("x" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
            await until(lambda: not server.feed.subscribers)

    run(scenario())


def _raw_subscriber(port: int, path: str = "/ws") -> socket.socket:
    """A WebSocket subscriber that completes the handshake and then never reads."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(RECEIVE_TIMEOUT)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return raw


def _close_code(raw: socket.socket) -> int | None:
    """Read server frames until the close frame; return its code."""
    raw.settimeout(RECEIVE_TIMEOUT)
    buffer = b""

    def take(count: int) -> bytes:
        nonlocal buffer
        while len(buffer) < count:
            chunk = raw.recv(1 << 20)
            if not chunk:
                raise EOFError
            buffer += chunk
        data, buffer = buffer[:count], buffer[count:]
        return data

    for _ in range(1_000_000):
        first, second = take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", take(8))
        payload = take(length)
        if first & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0] if payload else None
    return None


def test_subscriber_that_stops_reading_is_cut_off_and_others_get_everything(
    store: ProjectStore,
) -> None:
    async def scenario() -> None:
        async with serving(store, poll_interval=60) as server:
            raw = await asyncio.to_thread(_raw_subscriber, server.port)
            async with connect(ws_url(server), max_queue=4096) as ws:  # all 3,000, unread
                await until(lambda: len(server.feed.subscribers) == 2)
                record = {"project_id": "proj_big", "name": "big", "description": "x" * 4000}
                sent = []
                # 12 MB: more than the kernel's socket buffers and the 1 MiB limit together.
                for seq in range(1, 3001):
                    event = project_updated(
                        record, ["description"], seq=seq, timestamp="2023-11-19T12:00:00.000000"
                    )
                    server.accept(event)
                    sent.append(event)
                    if seq % 10 == 0:
                        await asyncio.sleep(0.001)  # let the healthy subscriber drain
                assert server.feed.slow_closed == 1
                assert len(server.feed.subscribers) == 1
                received = [await receive(ws) for _ in sent]
                assert received == sent
            assert await asyncio.to_thread(_close_code, raw) == 1013
            raw.close()

    run(scenario())


def test_state_file_is_private_and_removed_on_close(store: ProjectStore) -> None:
    async def scenario() -> None:
        paths = runtime_paths(store.path, for_a_server=True)
        async with serving(store) as server:
            state = orjson.loads(paths.state_file.read_bytes())
            assert state["pid"] == os.getpid()
            assert state["port"] == server.port
            assert state["socket"] == str(paths.socket)
            assert paths.state_file.stat().st_mode & 0o777 == 0o600
            assert paths.folder.stat().st_mode & 0o777 == 0o700
        assert not paths.state_file.exists()

    run(scenario())


def test_replaced_database_triggers_resync(store: ProjectStore, db_path: Path) -> None:
    store.create("old")

    async def scenario() -> None:
        async with (
            serving(store, poll_interval=0.05, gap_grace=0.1) as server,
            connect(ws_url(server)) as ws,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            await asyncio.to_thread(db_path.unlink)
            await asyncio.to_thread(store.create, "new world")
            message = await receive(ws, timeout=3)
            assert message["event_type"] == "resync"
            assert [p["name"] for p in message["data"]["projects"]] == ["new world"]

    run(scenario())


def test_keepalive_drops_a_dead_peer(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, ping_interval=0.2, close_timeout=0.5) as server:
            raw = await asyncio.to_thread(_raw_subscriber, server.port)  # never answers pings
            try:
                await until(lambda: len(server.feed.subscribers) == 1)
                # Unanswered pings close it: broadcasts skip it at once, and it is gone
                # from the subscribers once the closing handshake times out.
                await until(lambda: all(c.state is not State.OPEN for c in server.feed.subscribers))
                await until(lambda: not server.feed.subscribers, timeout=10)
            finally:
                raw.close()

    run(scenario())


def test_frames_are_not_compressed(store: ProjectStore) -> None:
    async def scenario() -> None:
        # websockets' client offers permessage-deflate by default, as browsers do.
        async with serving(store) as server, connect(ws_url(server)) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers

    run(scenario())


def test_a_stale_journal_read_neither_rewinds_nor_resyncs(store: ProjectStore) -> None:
    """A read that finished after newer forwards arrived must not be taken for a new database."""

    async def scenario() -> None:
        async with serving(store, poll_interval=60) as server, connect(ws_url(server)) as ws:
            await until(lambda: len(server.feed.subscribers) == 1)
            first = await commit(store, lambda: store.create("first"))
            stale = await asyncio.to_thread(store.read_state)
            second = await commit(store, lambda: store.create("second"))
            assert server.sequencer.catch_up(stale) == []
            assert server.last_seq == 2
            assert [await receive(ws), await receive(ws)] == [first, second]
            with pytest.raises(asyncio.TimeoutError):
                await receive(ws, timeout=0.3)  # no resync, no repeat

    run(scenario())


def _replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` as a careful program does, by rename: the watcher polls every 20 ms
    here, and a write in place could be read half done (an empty file is a new database)."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(content)
    os.replace(temp, path)


def test_a_malformed_journal_entry_is_logged_once_and_delivery_resumes_when_fixed(
    store: ProjectStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.create("before")

    async def scenario() -> None:
        async with (
            serving(store, poll_interval=0.02, gap_grace=0.02) as server,
            connect(ws_url(server)) as ws,
        ):
            await until(lambda: len(server.feed.subscribers) == 1)
            # Committed, never forwarded; then another program mangles a journal entry.
            unsent = (await asyncio.to_thread(store.create, "unsent")).event
            good = db_path.read_bytes()
            data = orjson.loads(good)
            del data["journal"]["1"]["seq"]
            _replace_file(db_path, orjson.dumps(data))
            await until(lambda: server.watcher.read_failures >= 3)
            with pytest.raises(asyncio.TimeoutError):
                await receive(ws, timeout=0.2)
            _replace_file(db_path, good)  # fixed: the watcher delivers what it missed
            assert await receive(ws, timeout=5) == unsent
            assert server.health()["journal_read_failures"] >= 3

    with caplog.at_level("INFO", logger="projctl.server"):
        run(scenario())
    errors = [r.getMessage() for r in caplog.records if "cannot read the journal" in r.getMessage()]
    assert len(errors) == 1
    assert "malformed journal entry" in errors[0]
    assert any("readable again" in r.getMessage() for r in caplog.records)


def _http_get(port: int, path: str, host: str, *headers: str) -> tuple[int, bytes]:
    """One raw HTTP/1.1 GET with the given Host header (and ``Name: value`` headers);
    returns the status and body."""
    extra = "".join(f"{header}\r\n" for header in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := raw.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:{port}", 200),
        ("127.0.0.1:{port}", 200),
        ("[::1]:{port}", 200),
        ("localhost", 200),
        ("evil.example:{port}", 421),
        ("evil.example", 421),
        ("127.0.0.1.evil.example", 421),
        ("", 421),
        # Parsed strictly: a name, IPv4 or bracketed IPv6, then only ":" and digits.
        ("127.0.0.1:{port}@evil", 421),
        ("[::1]evil", 421),
        ("[::1]evil:{port}", 421),
        ("localhost:{port}x", 421),
        ("localhost:99999", 421),
        ("[::1", 421),
        ("[nonsense]:{port}", 421),
        ("local host", 421),
    ],
)
def test_every_response_checks_the_host_header(store: ProjectStore, host: str, status: int) -> None:
    async def scenario() -> None:
        async with serving(store) as server:
            for path in ("/healthz", "/ws", "/nowhere"):
                got, _ = await asyncio.to_thread(
                    _http_get, server.port, path, host.format(port=server.port)
                )
                if status == 421:
                    assert got == 421, path
                else:
                    assert got != 421, path
                    assert got == 200 or path != "/healthz"

    run(scenario())


def test_healthz_shows_detail_only_to_token_holders_when_tokens_are_configured(
    store: ProjectStore,
) -> None:
    """Behind a reverse proxy every client arrives from loopback: with tokens configured,
    loopback alone shows no pid, path, URL or uptime."""

    class Peer:
        def __init__(self, address: str) -> None:
            self.remote_address = (address, 50000)

    public = {"status", "version", "latest_seq"}

    async def scenario() -> None:
        async with serving(store) as server:  # no read token: loopback sees the detail
            status, body = await asyncio.to_thread(
                _http_get, server.port, "/healthz", f"127.0.0.1:{server.port}"
            )
            assert status == 200
            assert orjson.loads(body)["database"]["path"] == str(store.path)
            request = type("R", (), {"headers": {}, "path": "/healthz"})()
            assert server.routes.is_trusted(Peer("127.0.0.1"), request)  # type: ignore[arg-type]
            assert server.routes.is_trusted(Peer("::1"), request)  # type: ignore[arg-type]
            assert not server.routes.is_trusted(Peer("192.0.2.7"), request)  # type: ignore[arg-type]
        async with serving(store, subscriber_token="s3cret") as server:
            host = f"127.0.0.1:{server.port}"
            for headers in ((), ("Authorization: Bearer wrong",)):
                status, body = await asyncio.to_thread(
                    _http_get, server.port, "/healthz", host, *headers
                )
                assert (status, set(orjson.loads(body))) == (200, public)
            status, body = await asyncio.to_thread(
                _http_get, server.port, "/healthz", host, "Authorization: Bearer s3cret"
            )
            health = orjson.loads(body)
            assert (status, health["database"]["path"]) == (200, str(store.path))
            assert {"pid", "url", "uptime_seconds"} <= set(health)
            bare = type("R", (), {"headers": {}, "path": "/healthz"})()
            holder = type("R", (), {"headers": {"Authorization": "Bearer s3cret"}, "path": "/"})()
            assert not server.routes.is_trusted(Peer("127.0.0.1"), bare)  # type: ignore[arg-type]
            assert server.routes.is_trusted(Peer("127.0.0.1"), holder)  # type: ignore[arg-type]
            assert server.routes.is_trusted(Peer("192.0.2.7"), holder)  # type: ignore[arg-type]
            assert server.public_health() == {
                "status": "ok",
                "version": server.health()["version"],
                "latest_seq": 0,
            }

    run(scenario())


def test_every_route_has_one_origin_rule(store: ProjectStore) -> None:
    write = "w" * 24
    evil, local = "https://evil.example", "http://localhost:5173"

    async def scenario() -> None:
        async with serving(store, write_tokens=frozenset({write})) as server:
            base = f"ws://127.0.0.1:{server.port}"
            bearer = {"Authorization": f"Bearer {write}"}
            with pytest.raises(InvalidStatus) as refused:
                await connect(base + "/ws", origin=evil, additional_headers=bearer)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
            for path in ("/healthz", "/", "/nowhere", "/api/projects"):
                status, _ = await asyncio.to_thread(
                    _http_get, server.port, path, f"127.0.0.1:{server.port}", f"Origin: {evil}"
                )
                assert status == 403, path
            status, _ = await asyncio.to_thread(
                _http_get,
                server.port,
                "/api/projects",
                f"127.0.0.1:{server.port}",
                f"Origin: {local}",
            )
            assert status == 200  # a page on loopback
            async with connect(base + "/ws", origin=f"http://127.0.0.1:{server.port}"):
                pass  # the server's own page

    run(scenario())


def test_host_headers_are_parsed_strictly_on_a_server_listening_everywhere(
    store: ProjectStore,
) -> None:
    """On 0.0.0.0 every name is ours, but only a well-formed one: nothing else can reach
    the page's Content-Security-Policy. (Built, not started: nothing listens.)"""
    paths = runtime_paths(store.path)
    server = BroadcastServer(store, paths, ServerConfig(host="0.0.0.0", port=0))
    injected = "a; script-src * 'unsafe-inline'"
    for bad in (injected, "127.0.0.1:8443@evil", "[::1]evil", "a b", "", "x:1:2"):
        assert not server.access.host_allowed(bad), bad
    for good in ("a", "projctl.example:8443", "192.0.2.7", "[2001:db8::1]:8443", "A.EXAMPLE."):
        assert server.access.host_allowed(good), good


def test_connections_beyond_the_cap_get_503(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, max_connections=3) as server:
            held = [await connect(ws_url(server)) for _ in range(3)]
            await until(lambda: len(server.feed.subscribers) == 3)
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(server))
            assert refused.value.response.status_code == 503
            await held.pop().close()
            await until(lambda: len(server.feed.subscribers) == 2)
            async with connect(ws_url(server)):  # room again
                await until(lambda: len(server.feed.subscribers) == 3)
            for ws in held:
                await ws.close()

    run(scenario())


def _large_database(store: ProjectStore, projects: int, description_bytes: int) -> None:
    """Fill the store fast: one transaction per project is slow, so write the file whole."""
    store.create("seed")
    data = orjson.loads(store.path.read_bytes())
    template = data["projects"].popitem()[1]
    for number in range(projects):
        project_id = f"proj_20240101_000000_{number}"
        data["projects"][project_id] = {
            **template,
            "project_id": project_id,
            "name": f"project {number}",
            "description": "d" * description_bytes,
        }
    store.path.write_bytes(orjson.dumps(data))


def test_never_reading_snapshot_subscribers_cost_a_bounded_buffer_each(
    store: ProjectStore,
) -> None:
    """A snapshot is streamed with backpressure: a subscriber that never reads holds at most
    websockets' write limit in the server, not the whole encoded database (here ~6 MB)."""
    _large_database(store, 3000, 2000)

    async def scenario() -> None:
        async with serving(store) as server:
            stalled = [
                await asyncio.to_thread(_raw_subscriber, server.port, "/ws?snapshot=1")
                for _ in range(8)
            ]
            try:
                await until(lambda: len(server.feed.joining) == 8)
                # Each has filled its socket and stopped: the rest of its snapshot is
                # not encoded, let alone queued.
                await until(lambda: all(c.unsent_bytes() > 0 for c in server.feed.joining))
                for connection in server.feed.joining:
                    assert connection.unsent_bytes() <= 256 * 1024
                # Everyone else is served as before, snapshot and live events alike.
                async with connect(ws_url(server, "?snapshot=1"), max_size=None) as ws:
                    snapshot = await receive(ws)
                    assert len(snapshot["data"]["projects"]) == 3000
                    live = await commit(store, lambda: store.create("live"))
                    assert await receive(ws) == live
            finally:
                for raw in stalled:
                    raw.close()
            await until(lambda: not server.feed.joining)

    run(scenario())


def test_a_subscriber_stalled_in_its_snapshot_is_closed_when_its_backlog_passes_the_bound(
    store: ProjectStore,
) -> None:
    _large_database(store, 3000, 2000)  # more than the socket buffers hold: it stalls

    async def scenario() -> None:
        async with serving(store, slow_subscriber_limit=64 * 1024) as server:
            raw = await asyncio.to_thread(_raw_subscriber, server.port, "/ws?snapshot=1")
            try:
                await until(lambda: len(server.feed.joining) == 1)
                big = "x" * 9000
                for number in range(12):  # ~110 KB of live events wait behind its snapshot
                    await commit(store, lambda n=number: store.create(f"e{n}", description=big))
                await until(lambda: server.feed.slow_closed == 1)
                assert not server.feed.joining
            finally:
                raw.close()

    run(scenario())


def test_a_preferred_port_that_is_taken_falls_back_to_a_free_one(store: ProjectStore) -> None:
    async def scenario() -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            async with serving(store, port=taken, port_fallback=True) as server:
                assert server.port not in (taken, 0)
                async with connect(ws_url(server)):
                    pass
            with pytest.raises(ServerError, match="Address already in use"):
                async with serving(store, port=taken):
                    pass

    run(scenario())


def test_require_token_on_loopback(store: ProjectStore, db_path: Path) -> None:
    import projctl

    async def scenario() -> None:
        database = projctl.open_database(db_path, broadcast=False)
        async with database.serving(host="127.0.0.1", port=0, require_token=True) as server:
            token = server.config.subscriber_token
            assert token
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(server))
            assert refused.value.response.status_code == 401
            # The Python API (and so watch) finds the token in the private state file.
            feed = database.subscribe(since=0, start_server=False)
            created = await asyncio.to_thread(store.create, "for token holders")
            assert await asyncio.wait_for(anext(feed), 10) == created.event
            await feed.aclose()

    run(scenario())


def test_all_subscribers_together_stay_within_the_send_budget(store: ProjectStore) -> None:
    """The decision alone, with stand-in connections: past the budget the subscribers
    furthest behind their fair share are closed (1013), and closed ones still holding their
    buffers are dropped at once, largest first, until the total fits."""

    class Connection:
        def __init__(self, size: int) -> None:
            self.size = size
            self.aborted = False
            self.id = f"size {size}"
            self.closed_with: int | None = None

        def unsent_bytes(self) -> int:
            return self.size

        def abort(self) -> None:
            self.aborted = True

        async def close(self, code: int, reason: str) -> None:
            self.closed_with = code

    async def scenario() -> None:
        async with serving(store, slow_subscriber_limit=45, send_budget=100) as server:
            connections = {size: Connection(size) for size in (10, 20, 30, 40, 50)}
            server.feed.subscribers = set(connections.values())  # type: ignore[arg-type]
            server.feed.cut_off_slow_subscribers()
            assert server.feed.slow_closed == 3
            await until(lambda: sum(c.closed_with == 1013 for c in connections.values()) == 3)
            assert {size for size, c in connections.items() if c.closed_with == 1013} == {
                30,
                40,
                50,
            }
            assert {size for size, c in connections.items() if c.aborted} == {50}
            assert server.feed.subscribers == {connections[10], connections[20]}
            server.feed.subscribers = set()

    run(scenario())
