"""A JetStream database under a failure: writers keep creating while a node of the
three-node cluster is killed; every create is applied exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

from ._nats import Cluster, log_tail, start_cluster
from .conftest import nats_database, run_projctl, wait_until

WRITERS = 8
CREATES = 25


def _stream_leader(cluster: Cluster, stream: str) -> str:
    import nats

    async def ask() -> str:
        nc = await nats.connect(servers=cluster.urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            assert info.cluster is not None
            assert info.cluster.leader
            return info.cluster.leader
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(ask(), 20))


@pytest.mark.slow
def test_creates_while_the_stream_leader_is_killed_are_each_applied_once(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    del nats_cluster  # the session's cluster only proves nats-server is there (or skips)
    with start_cluster(tmp_path / "faulty") as cluster:
        db = nats_database(cluster)
        env = {**os.environ, "PROJCTL_DB": db, "PROJCTL_OWNER": "writer"}
        first = run_projctl("create", "w-first", env=env, timeout=60)
        assert first.returncode == 0, first.stderr
        stream = "PROJCTL_" + db.rsplit("/", 1)[1]
        leader = _stream_leader(cluster, stream)
        done = [0]
        failures: list[str] = []
        lock = threading.Lock()

        def write(number: int) -> None:
            for index in range(CREATES):
                name = f"w{number}-{index}"
                result = run_projctl("create", name, env=env, timeout=60)
                with lock:
                    done[0] += 1
                    if result.returncode != 0:
                        failures.append(f"{name}: exit {result.returncode}: {result.stderr}")

        writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
        for writer in writers:
            writer.start()
        wait_until(lambda: done[0] >= WRITERS * CREATES // 4, timeout=120, what="a quarter")
        (victim,) = [node for node in cluster.nodes if node.name == leader]
        cluster.kill(victim)
        for writer in writers:
            writer.join(300)
        assert not any(writer.is_alive() for writer in writers)
        assert failures == [], "\n".join(failures[:5]) + "\n" + log_tail(cluster)
        listed = run_projctl("list", "--json", env=env, timeout=60)
        assert listed.returncode == 0, listed.stderr
        projects = json.loads(listed.stdout)
        names = sorted(project["name"] for project in projects if project["name"] != "w-first")
        expected = sorted(f"w{n}-{i}" for n in range(WRITERS) for i in range(CREATES))
        assert names == expected  # each once: none lost, none twice
        ids = [project["project_id"] for project in projects]
        assert len(set(ids)) == len(ids) == WRITERS * CREATES + 1
        info = json.loads(run_projctl("info", "--json", env=env, timeout=60).stdout)
        assert info["latest_seq"] == WRITERS * CREATES + 1  # one event per create, no more
