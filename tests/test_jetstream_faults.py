"""A JetStream database under failures, on a real three-node cluster: writers keep creating
while a node is killed (the stream's leader, or a follower) and every create is applied once;
gateways show the same seqs; a watcher goes on across a node kill with no gap and no
duplicate; with two nodes down writes fail clearly, and resume when one returns."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from projctl.errors import ServerUnavailableError

from ._gateway import WRITE_TOKEN, gateway
from ._nats import Cluster, log_tail, start_cluster
from .conftest import PROJCTL, nats_database, run_projctl, wait_until

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
@pytest.mark.alone
@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_creates_while_a_node_is_killed_are_each_applied_once(
    nats_cluster: Cluster, tmp_path: Path, victim_role: str
) -> None:
    del nats_cluster  # the session's cluster only proves nats-server is there (or skips)
    with start_cluster(tmp_path / "faulty") as cluster:
        # A node's death takes an election (seconds); on a loaded CI machine, with eight
        # writers and the benchmarks beside them, more than the default 10 s: each command
        # still has a bound, a generous one.
        db = nats_database(cluster) + "?timeout=30"
        env = {**os.environ, "PROJCTL_DB": db, "PROJCTL_OWNER": "writer"}
        first = run_projctl("create", "w-first", env=env, timeout=60)
        assert first.returncode == 0, first.stderr
        stream = "PROJCTL_" + db.rsplit("/", 1)[1].partition("?")[0]
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
        (victim,) = [
            node for node in cluster.nodes if (node.name == leader) == (victim_role == "leader")
        ][:1]
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


def _create_many(db: str, names: list[str]) -> None:
    import projctl
    from projctl.config import load_settings

    database = projctl.Database(load_settings(db=db), broadcast=False)
    for name in names:
        database.create(name, owner_id="writer")


def _watch(env: dict[str, str], count: int, timeout: float = 120) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PROJCTL, "watch", "--since", "0", "-o", "json", "--count", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _events(watcher: subprocess.Popen[str], timeout: float = 120) -> list[tuple[int, str]]:
    try:
        out, err = watcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        watcher.kill()
        out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [
        (e["seq"], e["data"]["name"]) for e in found if e.get("event_type") == "project_created"
    ]


@pytest.mark.slow
@pytest.mark.alone
def test_watch_through_two_gateways_prints_the_same_200_creations(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    db = nats_database(nats_cluster)
    names = [f"p{number}" for number in range(200)]
    with gateway(tmp_path, db, name="a") as a, gateway(tmp_path, db, name="b") as b:
        watchers = [
            _watch(
                {
                    **os.environ,
                    "PROJCTL_URL": f"ws://127.0.0.1:{server.port}",
                    "PROJCTL_TOKEN": WRITE_TOKEN,
                },
                len(names),
            )
            for server in (a, b)
        ]
        _create_many(db, names)
        seen = [_events(watcher) for watcher in watchers]
    assert seen[0] == seen[1]
    assert seen[0] == [(number + 1, name) for number, name in enumerate(names)]


@pytest.mark.slow
@pytest.mark.alone
def test_a_watcher_goes_on_across_a_node_kill_without_a_gap_or_a_duplicate(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    del nats_cluster
    with start_cluster(tmp_path / "faulty") as cluster:
        db = nats_database(cluster)
        env = {**os.environ, "PROJCTL_DB": db}
        _create_many(db, ["first"])
        names = ["first"] + [f"n{number}" for number in range(120)]
        watcher = _watch(env, len(names))
        writer = threading.Thread(target=_create_many, args=(db, names[1:]))
        writer.start()
        wait_until(lambda: _latest(db) >= 40, timeout=60, what="40 events")
        leader = _stream_leader(cluster, "PROJCTL_" + db.rsplit("/", 1)[1])
        (victim,) = [node for node in cluster.nodes if node.name == leader]
        cluster.kill(victim)
        writer.join(180)
        assert not writer.is_alive()
        seen = _events(watcher, timeout=120)
    assert seen == [(number + 1, name) for number, name in enumerate(names)]


def _latest(db: str) -> int:
    import projctl
    from projctl.config import load_settings

    return projctl.Database(load_settings(db=db), broadcast=False).latest_seq()


@pytest.mark.slow
@pytest.mark.alone
def test_with_two_nodes_down_writes_fail_clearly_and_resume_when_one_returns(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    del nats_cluster
    with start_cluster(tmp_path / "faulty") as cluster:
        db = nats_database(cluster) + "?timeout=4"
        env = {**os.environ, "PROJCTL_DB": db}
        assert run_projctl("create", "before", env=env, timeout=60).returncode == 0
        down = cluster.nodes[1:]
        for node in down:
            cluster.kill(node)
        failed = run_projctl("create", "during", "--idempotency-key", "k-1", env=env, timeout=60)
        assert failed.returncode == 5, failed.stderr
        (line,) = failed.stderr.splitlines()
        assert line.startswith("Error: "), line
        # The write is the command's first request (a name is looked up only for --unique):
        # it says whether it may have been stored, and how to retry. So does the API's.
        with pytest.raises(ServerUnavailableError) as raised:
            _create_many(db, ["never"])
        for said in (line, str(raised.value)):
            assert said.endswith(": nothing was written") or (
                "outcome is unknown" in said and "--idempotency-key" in said
            ), said
        cluster.start(down[0])
        wait_until(
            lambda: run_projctl("list", "-q", env=env, timeout=60).returncode == 0,
            timeout=60,
            what="reads resume",
        )
        again = run_projctl("create", "during", "--idempotency-key", "k-1", env=env, timeout=60)
        assert again.returncode == 0, again.stderr
        after = run_projctl("create", "after", env=env, timeout=60)
        assert after.returncode == 0, after.stderr
        listed = json.loads(run_projctl("list", "--json", env=env, timeout=60).stdout)
        names = [project["name"] for project in listed]
        # Each write whose outcome was unknown may have been committed when a node came
        # back, in either order; "during" is there once however often it was sent (its key).
        assert names[0] == "before", names
        assert names[-1] == "after", names
        assert sorted(names[1:-1]) in (["during"], ["during", "never"]), names
