"""Idempotency by the standard header: a write retried under its ``Idempotency-Key`` is
applied once, on another connection, at the same time, after a ``kill -9`` and restart of
the server, and under load through a proxy that cuts connections as a flaky network does.
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

import projctl
from projctl.config import load_settings

from ._remote import (
    TeamServer,
    Tls,
    api,
    secret,
    serving,
    tls_args,
    write_token_file,
)

CREATE = {"name": "Once", "project_type": "ci", "owner_id": "ann"}


def test_a_retried_write_is_applied_once(team: TeamServer) -> None:
    key = {"Idempotency-Key": "retry-1"}
    status, headers, first = api(team, "POST", "/api/projects", CREATE, headers=key)
    assert status == 201
    assert "Idempotent-Replayed" not in headers
    again_status, again_headers, again = api(team, "POST", "/api/projects", CREATE, headers=key)
    assert (again_status, again) == (201, first)
    assert again_headers["Idempotent-Replayed"] == "true"
    assert (
        again_headers["Location"] == headers["Location"] == f"/api/projects/{first['project_id']}"
    )
    store = team.store()
    assert [p.name for p in store.list_projects()] == ["Once"]
    assert store.list_projects()[0].type == "ci"
    assert len(store.journal()) == 1


def test_concurrent_retries_are_applied_once(team: TeamServer) -> None:
    """The same request sent three times at once: one is carried out; the others are told
    it is in progress (409) or get its answer; the client's own retries settle on it."""

    def send(key: str, name: str) -> tuple[int, object]:
        body = {"name": name, "owner_id": "ann", "description": "d" * 5000}
        status, _, answer = api(
            team, "POST", "/api/projects", body, headers={"Idempotency-Key": key}
        )
        return status, answer

    for number in range(5):
        with ThreadPoolExecutor(3) as pool:
            request = (f"together-{number}", f"Together {number}")
            results = list(pool.map(lambda args: send(*args), [request] * 3))
        created = [answer for status, answer in results if status == 201]
        assert created, results
        assert all(answer == created[0] for answer in created)
        for status, answer in results:
            assert status == 201 or (
                status == 409 and answer["error"] == "idempotency_key_in_use"  # type: ignore[index]
            ), results
    store = team.store()
    assert sorted(p.name for p in store.list_projects()) == [f"Together {n}" for n in range(5)]
    assert [event["seq"] for event in store.journal()] == [1, 2, 3, 4, 5]


def test_a_key_is_the_key_of_one_request_only(team: TeamServer) -> None:
    reused = {"Idempotency-Key": "reused"}
    status, _, first = api(team, "POST", "/api/projects", {"name": "First"}, headers=reused)
    assert status == 201
    # The same key for another request is refused, and applies nothing.
    for method, path, body in (
        ("POST", "/api/projects", {"name": "Other"}),
        ("DELETE", f"/api/projects/{first['project_id']}", None),
    ):
        status, _, answer = api(team, method, path, body, headers=reused)
        assert status == 422, answer
        assert answer["error"] == "idempotency_key_reused"
        assert "'reused'" in answer["message"]
    status, _, again = api(team, "POST", "/api/projects", {"name": "First"}, headers=reused)
    assert (status, again) == (201, first)  # the request itself still gets its answer
    # A write that failed is not remembered: its retry is carried out afresh.
    freed = {"Idempotency-Key": "freed"}
    status, _, answer = api(team, "DELETE", "/api/projects/Later", headers=freed)
    assert (status, answer["error"], answer["project"]) == (404, "not_found", "Later")
    assert api(team, "POST", "/api/projects", {"name": "Later"})[0] == 201
    status, _, deleted = api(team, "DELETE", "/api/projects/Later", headers=freed)
    assert (status, deleted["name"], deleted["deleted"]) == (200, "Later", True)
    store = team.store()
    assert [project.name for project in store.list_projects()] == ["First"]
    assert [event["event_type"] for event in store.journal()] == [
        "project_created",
        "project_created",
        "project_deleted",
    ]


def test_a_create_retried_after_the_server_was_killed_is_applied_once(
    tmp_path: Path, tls: Tls
) -> None:
    """The keys live in the database with the writes: a ``kill -9`` and a restart forget
    nothing, so a create retried across the crash returns the same project, once."""
    read, write = secret("read"), secret("write")
    tokens = write_token_file(tmp_path / "tokens", read, write)
    args = [*tls_args(tls), "--token-file", str(tokens)]
    key = {"Idempotency-Key": "pipeline-77-create"}
    folder = tmp_path / "server"
    with serving(folder, args, ready=lambda server: server.serves(tls.ca)) as server:
        team = TeamServer(server, tls, read, write, tmp_path)
        status, _, first = api(team, "POST", "/api/projects", CREATE, headers=key)
        assert status == 201
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    with serving(folder, args, ready=lambda server: server.serves(tls.ca)) as server:
        team = TeamServer(server, tls, read, write, tmp_path)
        status, headers, again = api(team, "POST", "/api/projects", CREATE, headers=key)
        assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")
        # The CLI's --idempotency-key is the same header.
        done = team.run(
            "create",
            "Once",
            "--type",
            "ci",
            "--owner",
            "ann",
            "--idempotency-key",
            "pipeline-77-create",
        )
        assert (done.returncode, done.stdout) == (0, f"{first['project_id']}\n"), done.stderr
        store = team.store()
        assert [p.project_id for p in store.list_projects()] == [first["project_id"]]
        assert len(store.journal()) == 1


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
      when anything comes back after it (TLS 1.3: the client's second application-data
      record, after its Finished, is its first request);
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
                    if plan == "lost_handshake" or (plan == "lost_reply" and sent.application >= 2):
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
        # The proxy really cut replies (so retries were answered from the keys recorded). A
        # client keeps its connection for request after request, so the proxy's cuts (one
        # per connection it plans to cut) are counted against connections, not creates.
        assert cuts.get("lost_reply", 0) >= connections * 0.1, (cuts, connections)
        assert cuts.get("lost_handshake", 0) > 0, (cuts, connections)
        assert lost_replies, cuts

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
