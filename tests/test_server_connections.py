"""How the server accepts connections: counted from their accept, TLS handshakes bounded."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from projctl.server import BroadcastServer
from projctl.store import ProjectStore

from .conftest import until
from .test_server import run, serving

CAP = 20
#: Sockets a full server may hold past its cap (to answer a 503, and for /healthz).
SPARE = 2
FLOOD = 200


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting it."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


def half_a_client_hello() -> bytes:
    """The first half of a real TLS ClientHello: a handshake that never completes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello
    return hello[: len(hello) // 2]


def server_side_sockets(port: int) -> set[str]:
    """The sockets (by inode) this process holds open that a server on ``port`` accepted.

    The server runs in the test's process, beside the clients: its side of a connection is
    the socket whose local port is ``port`` (not the listening one), found by inode in /proc.
    """
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] != "0":
                inodes.add(fields[9])
    held = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held.add(target[8:-1])
    return held


@contextlib.contextmanager
def flood(port: int, count: int, payload: bytes) -> Iterator[threading.Event]:
    """``count`` connections that send ``payload`` and then nothing, opened from a thread
    (the server runs on the test's event loop); the event is set once all are opened.
    Every socket is closed on the way out."""
    opened: list[socket.socket] = []
    done = threading.Event()

    def work() -> None:
        try:
            for _ in range(count):
                try:
                    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    continue  # the backlog is full for a moment: that one is refused
                opened.append(raw)
                with contextlib.suppress(OSError):  # closed at accept: reset
                    raw.sendall(payload)
        finally:
            done.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        thread.join(30)
        for raw in opened:
            raw.close()


async def sample_while(done: threading.Event, server: BroadcastServer) -> int:
    """The most sockets the server held at once while the flood was opening, and just after.

    Held means open in two samples ~50 ms apart: asyncio accepts a batch of sockets in one
    step and the server closes those it refuses a few loop turns later, so a refused socket
    lives for a moment only, and is not counted.
    """
    peak = 0
    before = server_side_sockets(server.port)
    for number in range(600):  # 30 s at most
        await asyncio.sleep(0.05)
        now = server_side_sockets(server.port)
        peak = max(peak, len(before & now))
        before = now
        if done.is_set() and number > 4:
            break
    return peak


async def try_once(url: str, **options: Any) -> int | None:
    """Connect, close, and say how: 101 served, an HTTP refusal's status, or ``None`` for a
    connection closed at once. Never hangs."""

    async def attempt() -> int:
        async with connect(url, open_timeout=5, **options):
            return 101

    try:
        return await asyncio.wait_for(attempt(), 10)
    except InvalidStatus as refused:
        return refused.response.status_code
    except (OSError, ssl.SSLError, WebSocketException, EOFError):
        return None


def test_half_open_tls_handshakes_are_capped_and_time_out(
    store: ProjectStore, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = contexts

    async def scenario() -> None:
        async with serving(
            store, ssl_context=server_context, max_connections=CAP, handshake_timeout=1.5
        ) as server:
            url = f"wss://127.0.0.1:{server.port}/ws"
            with flood(server.port, FLOOD, half_a_client_hello()) as done:
                peak = await sample_while(done, server)
                assert peak <= CAP + SPARE, f"{peak} sockets held with a cap of {CAP}"
                # A normal client is refused at once or served (a stalled one may have timed
                # out meanwhile), never left hanging.
                assert await try_once(url, ssl=client_context) in (None, 503, 101)
                # The stalled handshakes are closed after the handshake timeout.
                await until(lambda: not server_side_sockets(server.port), timeout=10)
                # A socket closed by its handshake's timeout is released a loop turn later.
                await until(lambda: server.health()["connections"] == 0, timeout=5)
            assert server.stats.refused_at_accept >= FLOOD // 2
            assert await try_once(url, ssl=client_context) == 101

    run(scenario())


def test_silent_plain_connections_are_capped_at_accept(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, max_connections=CAP, handshake_timeout=1.5) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            with flood(server.port, FLOOD, b"") as done:
                peak = await sample_while(done, server)
                assert peak <= CAP + SPARE, f"{peak} sockets held with a cap of {CAP}"
                assert await try_once(url) in (None, 503, 101)
                await until(lambda: not server_side_sockets(server.port), timeout=10)
            assert await try_once(url) == 101

    run(scenario())


def test_tls_subscribers_are_served_and_counted(
    store: ProjectStore, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A request that arrives with the end of the TLS handshake is not lost, and a closed
    connection gives its slot back."""
    server_context, client_context = contexts

    async def scenario() -> None:
        async with serving(store, ssl_context=server_context, max_connections=3) as server:
            url = f"wss://127.0.0.1:{server.port}/ws?since=0"
            held = [await connect(url, ssl=client_context) for _ in range(3)]
            await until(lambda: len(server.feed.subscribers) == 3)
            assert await try_once(url, ssl=client_context) == 503
            created = await asyncio.to_thread(store.create, "over TLS")
            await server.reconcile()
            for ws in held:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == created.event
            await held.pop().close()
            await until(lambda: server.health()["connections"] == 2)
            assert await try_once(url, ssl=client_context) == 101
            for ws in held:
                await ws.close()
            await until(lambda: server.health()["connections"] == 0)

    run(scenario())


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One plain HTTP GET to the server on loopback: its status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_healthz_answers_when_the_connection_cap_is_reached(store: ProjectStore) -> None:
    async def scenario() -> None:
        async with serving(store, max_connections=2) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            held = [await connect(url) for _ in range(2)]
            await until(lambda: len(server.feed.subscribers) == 2)
            assert await try_once(url) == 503
            status, _body = await asyncio.to_thread(http_get, server.port, "/api/projects")
            assert status == 503
            status, body = await asyncio.to_thread(http_get, server.port, "/healthz")
            assert status == 200
            health = orjson.loads(body)
            assert (health["status"], health["subscribers"]) == ("ok", 2)
            for ws in held:
                await ws.close()

    run(scenario())


def test_tls_handshakes_run_a_few_at_a_time_within_the_timeout(
    store: ProjectStore, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, _client_context = contexts

    async def scenario() -> None:
        async with serving(
            store, ssl_context=server_context, max_handshakes=3, handshake_timeout=3.0
        ) as server:
            # The timeout leaves a busy machine time to see three running before they expire.
            with flood(server.port, 10, half_a_client_hello()):
                await until(lambda: len(server._accepted) == 10)
                # Each accepted socket's handshake begins a loop turn or more after its accept:
                # wait for three to run, then no more than three ever did.
                await until(lambda: server._tls_running == 3)
                # The other 7 wait with only their socket; waiting counts against the timeout
                # too: all ten are closed, and never more than three ran at once.
                running = [3]

                def all_closed() -> bool:
                    running.append(server._tls_running)
                    return not server._accepted

                await until(all_closed, timeout=15)
                assert max(running) == 3, running
                assert not server_side_sockets(server.port)

    run(scenario())


def test_tls_reads_through_a_buffer_of_one_record(
    store: ProjectStore,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each TLS connection stages what it receives in a buffer of one TLS record (not
    asyncio's 256 KiB), and a request many records long still arrives whole."""
    from projctl.server import connection

    server_context, client_context = contexts
    sizes: list[int] = []
    get_buffer = connection._RecordSizedTLS.get_buffer

    def recorded(self: connection._RecordSizedTLS, n: int) -> memoryview:
        buffer: memoryview = get_buffer(self, n)
        sizes.append(len(buffer))
        return buffer

    monkeypatch.setattr(connection._RecordSizedTLS, "get_buffer", recorded)
    body = orjson.dumps({"name": "x" * 200_000})

    def post(port: int) -> tuple[int, bytes]:
        https = http.client.HTTPSConnection("127.0.0.1", port, context=client_context, timeout=10)
        try:
            https.request("POST", "/api/projects", body, {"Content-Type": "application/json"})
            response = https.getresponse()
            return response.status, response.read()
        finally:
            https.close()

    async def scenario() -> None:
        async with serving(store, ssl_context=server_context) as server:
            url = f"wss://127.0.0.1:{server.port}/ws?snapshot=1"
            async with connect(url, ssl=client_context) as ws:
                snapshot = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                assert snapshot["event_type"] == "snapshot"
            status, answer = await asyncio.to_thread(post, server.port)
            # Read to its end and answered (the server reads a body whole before it
            # judges the request: here, a write without the write token), not cut short.
            assert status == 401, (status, answer)

    run(scenario())
    assert sizes
    assert max(sizes) == connection.TLS_RECORD_MAX
