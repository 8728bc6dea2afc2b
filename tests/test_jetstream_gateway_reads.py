"""A gateway's reads of the stream are incremental: it keeps its last read and reads only the
events after it, and reads everything again only when it must (the first time, the kept read
trimmed out of the window, another stream under the name). Always checked against a fresh
read of everything."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from projctl.backend import Create, Delete, Emit, StateRead, Update
from projctl.jetstream import JetStreamBackend, StreamGateway
from projctl.jetstream._connection import _Session

from ._nats import Cluster, start_cluster

# Against the session's three-node cluster (a few seconds): in the slow run.
pytestmark = pytest.mark.slow


def _backend(cluster: Cluster, *, limit: int = 1000, timeout: float = 10) -> JetStreamBackend:
    name = f"t{secrets.token_hex(6)}"
    return JetStreamBackend(
        servers=cluster.urls,
        name=name,
        display=f"{cluster.location}/{name}",
        journal_limit=limit,
        timeout=timeout,
    )


def _count_consumers(backend: JetStreamBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every kind of consumer ``backend`` reads the stream with from now on, once each:
    ``last`` (every project's last message) or ``from N`` (the events from seq N). A
    consumer that landed on a replica still catching up is made again: counted once."""
    made: list[str] = []
    consume = backend._consume

    async def counted(s: _Session, subject: str, *, start: int | None = None) -> list[Any]:
        kind = "last" if start is None else f"from {start}"
        if kind not in made:
            made.append(kind)
        return await consume(s, subject, start=start)

    monkeypatch.setattr(backend, "_consume", counted)
    return made


def _fresh(backend: JetStreamBackend) -> StateRead:
    """A read of everything, by a gateway of its own that kept nothing (its reads are not
    counted)."""
    other = JetStreamBackend(
        servers=backend.servers,
        name=backend.name,
        display=backend.location,
        journal_limit=backend.journal_limit,
        timeout=backend.timeout,
    )
    return StreamGateway(other).read_state()


def _same(state: StateRead, fresh: StateRead) -> None:
    assert state.latest_seq == fresh.latest_seq
    assert state.database_id == fresh.database_id
    assert state.project_records == fresh.project_records
    assert state.journal == fresh.journal
    assert state.journal_limit == fresh.journal_limit


def test_a_later_read_reads_only_the_events_after_the_last(
    nats_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(nats_cluster)
    ids = [backend.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(5)]
    gateway = StreamGateway(backend)
    made = _count_consumers(backend, monkeypatch)

    first = gateway.read_state()
    assert made == ["last", "from 1"]  # the first read reads everything
    assert [record["project_id"] for record in first.project_records] == ids
    assert gateway.read_state().project_records == first.project_records
    assert made == ["last", "from 1"]  # the same seq: nothing read but the stream's info

    backend.commit(Update(ids[1], {"status": "in_progress"}))
    backend.commit(Emit(ids[2], "build_passed", {"tests": 3}))
    backend.commit(Delete((ids[3],)))
    backend.commit(Create("p5", owner_id="me"))
    made.clear()
    later = gateway.read_state()
    assert made == ["from 6"]  # only the four events after seq 5
    _same(later, _fresh(backend))
    listed = [project.to_dict() for project in backend.list_projects()]
    assert later.project_records == listed
    assert later.latest_seq == 9
    assert [event["seq"] for event in later.journal] == list(range(1, 10))
    # A read handed out earlier is not changed by a later one.
    assert first.latest_seq == 5
    assert len(first.project_records) == 5


def test_a_read_trimmed_out_of_the_window_is_read_again_whole(
    nats_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(nats_cluster, limit=4)
    ids = [backend.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(3)]
    gateway = StreamGateway(backend)
    gateway.read_state()
    made = _count_consumers(backend, monkeypatch)

    # Within the window: the events after the kept read.
    backend.commit(Update(ids[0], {"status": "completed"}))
    state = gateway.read_state()
    assert made == ["from 4"]
    _same(state, _fresh(backend))

    # Six more events: the kept seq (4) left the window of four (the writer trims every four
    # events), so the gateway reads everything again.
    for n in range(3):
        backend.commit(Emit(ids[1], "build_passed", {"n": n}))
    backend.commit(Update(ids[1], {"name": "renamed"}))
    backend.commit(Delete((ids[2],)))
    backend.commit(Create("p3", owner_id="me"))
    made.clear()
    state = gateway.read_state()
    assert made[0] == "last"
    assert state.latest_seq == 10
    assert [event["seq"] for event in state.journal] == [7, 8, 9, 10]
    _same(state, _fresh(backend))
    assert [record["name"] for record in state.project_records] == ["p0", "renamed", "p3"]

    # And from there on incremental again.
    backend.commit(Update(ids[0], {"status": "on_hold"}))
    made.clear()
    state = gateway.read_state()
    assert made == ["from 11"]
    _same(state, _fresh(backend))
    assert [event["seq"] for event in state.journal] == [8, 9, 10, 11]


def test_another_stream_under_the_name_is_read_whole(
    nats_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(nats_cluster)
    for n in range(3):
        backend.commit(Create(f"old{n}", owner_id="me"))
    gateway = StreamGateway(backend)
    before = gateway.read_state()

    async def delete_stream(s: _Session) -> None:
        await s.js.delete_stream(backend.stream)

    backend._run(delete_stream)
    assert gateway.read_state().latest_seq == 0
    for n in range(4):
        backend.commit(Create(f"new{n}", owner_id="me"))
    made = _count_consumers(backend, monkeypatch)
    after = gateway.read_state()
    assert made == ["last", "from 1"]
    assert after.database_id != before.database_id
    assert [record["name"] for record in after.project_records] == [f"new{n}" for n in range(4)]
    _same(after, _fresh(backend))


@pytest.mark.alone
def test_reads_stay_right_across_a_node_killed_and_back(
    nats_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del nats_cluster  # the session's cluster only proves nats-server is there (or skips)
    with start_cluster(tmp_path / "faulty") as cluster:
        backend = _backend(cluster, timeout=30)
        ids = [
            backend.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(3)
        ]
        gateway = StreamGateway(backend)
        gateway.read_state()
        made = _count_consumers(backend, monkeypatch)
        victim = cluster.nodes[0]
        for round_ in ("down", "back"):  # with the node killed, then with it catching up
            if round_ == "down":
                cluster.kill(victim)
            else:
                cluster.start(victim)
                cluster.wait_ready()
            backend.commit(Update(ids[0], {"name": f"{round_}-renamed"}))
            backend.commit(Delete((ids.pop(),)))
            created = backend.commit(Create(f"{round_}-new", owner_id="me"))
            ids.append(created[0].project.project_id)
            state = gateway.read_state()
            _same(state, _fresh(backend))
            assert [record["project_id"] for record in state.project_records] == ids
        # Every read after the first was of the new events only (a create's own read of the
        # projects' names is a "last" too).
        assert [kind for kind in made if kind.startswith("from")] == ["from 4", "from 7"]
