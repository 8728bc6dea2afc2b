"""Stateless gateways for the JetStream tests: ``projctl serve --db nats://...`` as a real
process on loopback, and what a subscriber of one receives.

:func:`gateway` runs one until the block ends (stopped and waited for); :func:`ws_events`
reads ``/ws?since=N`` of one until it has seen enough events (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .conftest import PROJCTL, wait_until

SERVING = re.compile(r" projctl\.server: serving ws://\S+:(\d+)/ws ")
WRITE_TOKEN = "gateway-write-token-0123456789abcdef"
READ_TOKEN = "gateway-read-token-0123456789abcdef"


@dataclasses.dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def port(self) -> int:
        found = SERVING.search(self.stderr())
        assert found, f"the gateway has not said where it serves:\n{self.stderr()}"
        return int(found[1])

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One HTTP request with the write token; the status and the decoded JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
            data = None
            if body is not None:
                data = orjson.dumps(body)
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
            return answer.status, orjson.loads(raw) if raw else None
        finally:
            connection.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode


def token_file(folder: Path) -> Path:
    """The tokens every gateway of a test shares (as a team behind a load balancer would)."""
    path = folder / "tokens"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"read: {READ_TOKEN}\nwrite: {WRITE_TOKEN}\n")
        path.chmod(0o600)
    return path


@contextlib.contextmanager
def gateway(folder: Path, db: str, *, port: int = 0, name: str = "gw") -> Iterator[Gateway]:
    """``projctl serve --db DB`` on 127.0.0.1 until the block ends; ready when it answers
    ``/healthz``."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.stderr"
    tokens = token_file(folder)
    with log.open("ab") as err:
        process = subprocess.Popen(
            [
                PROJCTL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--token-file",
                str(tokens),
                "--db",
                db,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PROJCTL_NO_BROADCAST": "1"},
        )
    server = Gateway(process, log)
    try:
        wait_until(
            lambda: process.poll() is not None or SERVING.search(server.stderr()) is not None,
            timeout=30,
            what="the gateway serves",
        )
        assert process.poll() is None, f"the gateway exited: {server.stderr()}"
        yield server
    finally:
        server.stop()


async def _read_events(port: int, since: int, count: int, timeout: float) -> list[dict[str, Any]]:
    from websockets.asyncio.client import connect

    found: list[dict[str, Any]] = []

    async def read() -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws?since={since}&token={READ_TOKEN}") as socket:
            async for frame in socket:
                message = orjson.loads(frame)
                found.append(message)
                if sum(1 for m in found if "seq" in m and m.get("event_type") != "resync") >= count:
                    return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(read(), timeout)
    return found


def ws_events(
    port: int, *, since: int = 0, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """The messages ``/ws?since=SINCE`` of the server on ``port`` sends until ``count``
    events (or ``timeout`` seconds)."""
    return asyncio.run(_read_events(port, since, count, timeout))


def seqs(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """``(seq, event_type, project_id)`` of every event among ``messages``."""
    return [
        (m["seq"], m["event_type"], str(m["data"].get("project_id")))
        for m in messages
        if m.get("event_type") not in ("resync", "snapshot")
    ]


__all__ = ["Gateway", "gateway", "seqs", "token_file", "ws_events"]
