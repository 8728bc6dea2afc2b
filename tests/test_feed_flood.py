"""The server answers while it streams: snapshots to many never-reading clients at once
never hold the event loop for long, and a snapshot at one seq is encoded once.

Bounds are generous (a shared, busy machine); the benchmark (bench/flood.py) holds the
real targets. What these catch is the old behaviour: each client sent megabytes of its
snapshot in one step, so a flood of them held the loop for seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projctl.model import Project
from projctl.runtime import runtime_paths
from projctl.sequencer import ProjectsMessage
from projctl.server import BroadcastServer, ServerConfig
from projctl.store import ProjectStore

from .conftest import until

PROJECTS = 5_000
CLIENTS = 60
#: The longest the loop may be held: a few times what it is on a quiet machine, and less
#: than before the streams shared the loop's turns (bench/RESULTS.md, item 5).
LOOP_LAG_BOUND = 0.12
HEALTHZ_BOUND = 0.5
DESCRIPTION = "A project with a description long enough to make its snapshot weigh. " * 4
STAMP = "2024-01-01T00:00:00"


def many_projects(store: ProjectStore, count: int) -> None:
    """``count`` projects in one rewrite of the file (one store call each would take minutes)."""
    store.create("first", owner_id="tester")
    data = orjson.loads(store.path.read_bytes())
    table = data["projects"]
    for number in range(count - 1):
        project_id = f"proj_20240101_{number:06d}"
        table[project_id] = Project(
            project_id=project_id,
            name=f"project {number}",
            type="api",
            status="created",
            owner_id="tester",
            description=DESCRIPTION,
            created_at=STAMP,
            updated_at=STAMP,
        ).to_dict()
    store.path.write_bytes(orjson.dumps(data))


@contextlib.asynccontextmanager
async def serving(store: ProjectStore) -> AsyncIterator[BroadcastServer]:
    server = BroadcastServer(
        store,
        runtime_paths(store.path, for_a_server=True),
        ServerConfig(host="127.0.0.1", port=0),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def never_reading(port: int, count: int) -> list[socket.socket]:
    """``count`` sockets that each ask for a snapshot and never read a byte (not even the 101)."""
    opened = []
    for _ in range(count):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            (
                "GET /ws?snapshot=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        opened.append(raw)
    return opened


def healthz_seconds(port: int) -> float:
    """How long ``GET /healthz`` on a new connection takes to answer in full."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as probe:
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := probe.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:40]
    return time.monotonic() - started


@contextlib.contextmanager
def closing_all(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for raw in sockets:
            raw.close()


async def loop_lag_during(work: asyncio.Future[object], tick: float = 0.005) -> float:
    """The longest the loop was held (beyond ``tick``) while ``work`` runs."""
    worst = 0.0
    while not work.done():
        started = time.perf_counter()
        await asyncio.sleep(tick)
        worst = max(worst, time.perf_counter() - started - tick)
    return worst


# ~20 s of flooding clients: in the slow run, which CI runs every time too.
@pytest.mark.slow
def test_a_flood_of_snapshot_clients_does_not_hold_the_loop(store: ProjectStore) -> None:
    many_projects(store, PROJECTS)

    async def scenario() -> None:
        async with serving(store) as server:
            encodings = []
            opening_parts = server.sequencer.opening_parts

            def counted(**arguments: Any) -> list[bytes | ProjectsMessage]:
                parts = opening_parts(**arguments)
                encodings.extend(part for part in parts if isinstance(part, ProjectsMessage))
                return parts

            server.sequencer.opening_parts = counted  # type: ignore[method-assign]

            async def flood_and_probe() -> list[float]:
                with closing_all(await asyncio.to_thread(never_reading, server.port, CLIENTS)):
                    # Wait until every client is being streamed its snapshot, probing meanwhile.
                    probes = [await asyncio.to_thread(healthz_seconds, server.port)]
                    await until(lambda: len(server.feed.joining) == CLIENTS, 30, "all joining")
                    for _ in range(5):
                        probes.append(await asyncio.to_thread(healthz_seconds, server.port))
                        await asyncio.sleep(0.05)
                    return probes

            work = asyncio.ensure_future(flood_and_probe())
            lag = await loop_lag_during(work)
            probes = await work
            assert max(probes) <= HEALTHZ_BOUND, probes
            assert lag <= LOOP_LAG_BOUND, f"the loop was held for {lag * 1000:.0f} ms"
            # All of them joined at one seq: one encoding of the snapshot, sent to each.
            assert len(encodings) == 1
            await until(lambda: not server.feed.joining, 10, "the clients gone")

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_subscribers_joining_together_each_get_the_whole_snapshot(store: ProjectStore) -> None:
    many_projects(store, 300)

    async def scenario() -> None:
        async with serving(store) as server:
            url = f"ws://127.0.0.1:{server.port}/ws?snapshot=1"
            clients = await asyncio.gather(*(connect(url, max_size=None) for _ in range(3)))
            try:
                messages = await asyncio.wait_for(
                    asyncio.gather(*(client.recv() for client in clients)), 30
                )
            finally:
                for client in clients:
                    await client.close()
            decoded = [orjson.loads(message) for message in messages]
            assert all(len(one["data"]["projects"]) == 300 for one in decoded)
            assert decoded[0]["data"] == decoded[1]["data"] == decoded[2]["data"]
            # Kept only while someone streams it.
            await until(lambda: not server.feed._messages, 10, "the shared snapshot released")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_streams_share_each_turn_of_the_loop() -> None:
    from projctl.server.feed import _Turns

    streams, steps, step_seconds = 100, 10, 0.001
    done = [0] * streams

    async def stream(number: int, turns: _Turns) -> None:
        turn = 0
        for _ in range(steps):
            turn = await turns.wait(turn)
            began = time.perf_counter()
            while time.perf_counter() - began < step_seconds:  # a fragment's work
                pass
            done[number] += 1

    async def scenario() -> float:
        turns = _Turns(budget=0.004)
        work = asyncio.ensure_future(
            asyncio.gather(*(stream(number, turns) for number in range(streams)))
        )
        lag = await loop_lag_during(work, tick=0.001)
        await work
        return lag

    lag = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert done == [steps] * streams
    # Without the turns, each turn of the loop would run a step of every stream: 100 ms.
    assert lag <= 0.05, f"the loop was held for {lag * 1000:.0f} ms"
