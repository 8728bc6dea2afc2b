"""Idempotency by request id: a retried write is applied once, on another connection, at the
same time, and under load through a proxy that cuts connections as a flaky network does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

import projctl
from projctl.config import load_settings

from ._remote import (
    TeamServer,
    Tls,
    ask,
    error_reply,
    rpc_connection,
    run_async,
    secret,
    serving,
    tls_args,
    write_token_file,
)


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
                assert await ask(ws, other) == error_reply(
                    "reused", "bad_request", "this id was already used for another request"
                )
            assert await ask(ws, first) == answered  # the request itself still gets its answer
            # A write that failed is not remembered: its retry is carried out afresh.
            delete_later = request("freed", "delete", projects=["Later"])
            assert await ask(ws, delete_later) == error_reply(
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


# -- load, through a proxy that cuts connections -------------------------------------------


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
    total = CLIENTS * CREATES_EACH
    with serving(
        tmp_path / "server",
        [*tls_args(tls), "--token-file", str(tokens)],
        env={"PROJCTL_JOURNAL_LIMIT": "2000"},
        ready=lambda server: server.serves(tls.ca),
    ) as server:
        team = TeamServer(server, tls, read, write, tmp_path / "elsewhere")
        started = time.monotonic()
        with CuttingProxy(server.port, CLIENTS, seed=20240501) as proxy:

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
