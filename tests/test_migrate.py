"""``projctl migrate``: a database file's projects and journal copied into an empty stream,
idempotently: the journal's events replayed in order after the projects older than it, the
last message of every project its current state, a run cut short finished by another."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

import projctl
from projctl.backend import Create, Delete, Emit, Update
from projctl.errors import ServerUnavailableError, StoreError
from projctl.events import Event
from projctl.jetstream import JetStreamBackend, _import
from projctl.model import Project
from projctl.store import ProjectStore

from ._gateway import gateway, seqs, ws_events
from ._nats import Cluster
from .conftest import nats_database, run_projctl

# Whole processes against a three-node cluster (~6 s of the suite): in the slow run, which CI
# runs every time too; the README's command stays fast.
pytestmark = pytest.mark.slow


def _listed(env: dict[str, str]) -> list[dict[str, object]]:
    done = run_projctl("list", "--json", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def _journal(location: str | Path) -> list[Event]:
    """The journal of the database at ``location`` (a file or a stream), as the Python API
    reads it."""
    return projctl.open_database(str(location)).journal()


def _history(found: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Events without their seqs: what a migration keeps of them."""
    return [(event["event_type"], event["timestamp"], event["data"]) for event in found]


def _backend(cluster: Cluster) -> JetStreamBackend:
    name = f"t{secrets.token_hex(6)}"
    return JetStreamBackend(servers=cluster.urls, name=name, display=f"{cluster.location}/{name}")


def _read(store: ProjectStore) -> tuple[list[Project], list[Event], str]:
    state = store.read_state()
    projects = [Project.from_dict(record) for record in state.project_records]
    return projects, state.journal, state.database_id


def test_migrate_copies_the_projects_and_journal_once_and_refuses_a_stream_of_its_own(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "projects.json"
    local = {**os.environ, "PROJCTL_DB": str(path)}
    ids = {}
    for name in ("alpha", "beta", "gamma"):
        created = run_projctl("create", name, "--type", "api", env=local)
        assert created.returncode == 0, created.stderr
        ids[name] = created.stdout.strip()
    assert run_projctl("update", "beta", "--status", "in_progress", env=local).returncode == 0
    emitted = run_projctl("emit", ids["alpha"], "tests_run", "--data", '{"passed": 41}', env=local)
    assert emitted.returncode == 0, emitted.stderr
    assert run_projctl("delete", "gamma", env=local).returncode == 0
    db = nats_database(nats_cluster)
    stream = {**os.environ, "PROJCTL_DB": db}

    first = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert first.returncode == 0, first.stderr
    shown = db.split("@")[-1]
    assert first.stdout == (
        f"copied 2 project(s) and 6 journal event(s) from {path} into {shown}: "
        "seq 1 to 6, the journal from seq 1\n"
    )
    assert _listed(stream) == _listed(local)  # ids, fields, timestamps and order kept
    # The whole history was in the file's journal: the stream's is the same, seqs too.
    assert _journal(db) == _journal(path)
    # The deleted project's tombstone is its subject's last message: gone, id kept taken.
    assert run_projctl("show", ids["gamma"], env=stream, timeout=60).returncode == 3

    again = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("seq 1 to 6, the journal from seq 1 (6 were there already)\n")
    info = json.loads(run_projctl("info", "--json", env=stream, timeout=60).stdout)
    assert info["latest_seq"] == 6  # nothing twice

    assert run_projctl("create", "delta", env=stream, timeout=60).returncode == 0
    refused = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert refused.returncode == 4
    assert "migrate into an empty stream" in refused.stderr
    assert [p["name"] for p in _listed(stream)] == ["alpha", "beta", "delta"]


def test_a_trimmed_journal_follows_the_projects_it_found_and_a_gateway_replays_both(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "projects.json"
    store = ProjectStore(path, journal_limit=3)
    ids = [store.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(4)]
    store.commit(Update(ids[0], {"status": "in_progress"}))  # file seqs 5, 6, 7: the window
    store.commit(Emit(ids[1], "tests_run", {"passed": 3}))
    store.commit(Delete((ids[2],)))
    local = {**os.environ, "PROJCTL_DB": str(path)}
    kept = _journal(path)
    assert [event["seq"] for event in kept] == [5, 6, 7]
    db = nats_database(nats_cluster)
    stream = {**os.environ, "PROJCTL_DB": db}

    done = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(": seq 1 to 6, the journal from seq 4\n")
    assert done.stdout.startswith("copied 3 project(s) and 3 journal event(s) from ")
    assert _listed(stream) == _listed(local)
    moved = _journal(db)
    # First the projects older than the journal, in creation order, as the journal found
    # them (p0: as its first update there left it, which is as it is now), stamped with
    # their creation; then the journal as it was, with new seqs.
    records = {p["project_id"]: p for p in _listed(local)}
    assert [(e["seq"], e["event_type"], e["data"]) for e in moved[:3]] == [
        (1, "project_created", records[ids[0]]),
        (2, "project_created", records[ids[1]]),
        (3, "project_created", records[ids[3]]),
    ]
    assert [e["timestamp"] for e in moved[:3]] == [
        records[i]["created_at"] for i in ids[:2] + ids[3:]
    ]
    assert [e["seq"] for e in moved[3:]] == [4, 5, 6]
    assert _history(moved[3:]) == _history(kept)

    # A gateway replays it all from seq 1 (the stream's window still holds it), or only
    # the file's journal from the seq before it.
    with gateway(tmp_path, db) as served:
        assert seqs(ws_events(served.port, since=0, count=6)) == [
            (1, "project_created", ids[0]),
            (2, "project_created", ids[1]),
            (3, "project_created", ids[3]),
            (4, "project_updated", ids[0]),
            (5, "tests_run", ids[1]),
            (6, "project_deleted", ids[2]),
        ]
        replayed = ws_events(served.port, since=3, count=3)
        assert _history([m for m in replayed if "seq" in m]) == _history(kept)
    assert run_projctl("show", ids[2], env=stream, timeout=60).returncode == 3


def test_an_interrupted_migration_is_finished_by_running_it_again(
    nats_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ProjectStore(tmp_path / "projects.json")
    ids = [store.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(5)]
    store.commit(Update(ids[1], {"name": "renamed"}))
    store.commit(Emit(ids[2], "deployed", {}))
    store.commit(Delete((ids[3],)))
    projects, journal, source_id = _read(store)
    backend = _backend(nats_cluster)
    monkeypatch.setattr(_import, "_BATCH_MESSAGES", 2)
    publish = backend._publish
    batches = []

    async def cut_short(s: Any, messages: Any) -> Any:
        batches.append(len(messages))
        if len(batches) == 3:
            raise ServerUnavailableError("the cluster went away")
        return await publish(s, messages)

    monkeypatch.setattr(backend, "_publish", cut_short)
    with pytest.raises(ServerUnavailableError):
        backend.import_database(projects, journal, source_id=source_id)
    assert backend.latest_seq() == 4  # two batches of two

    monkeypatch.setattr(backend, "_publish", publish)
    done = backend.import_database(projects, journal, source_id=source_id)
    assert (done.projects, done.baseline, done.events, done.corrections) == (4, 0, 8, 0)
    assert done.written == 4
    assert backend.latest_seq() == 8
    assert _history(backend.journal()) == _history(journal)
    assert backend.list_projects() == store.list_projects()

    # The file goes on (its journal still starts where it did): a run copies what it gained.
    store.commit(Create("late", owner_id="me"))
    projects, journal, _same = _read(store)
    done = backend.import_database(projects, journal, source_id=source_id)
    assert (done.written, done.total) == (1, 9)
    assert backend.list_projects() == store.list_projects()


def test_a_migration_of_the_file_as_it_was_is_refused_once_its_journal_moved(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    store = ProjectStore(tmp_path / "projects.json", journal_limit=2)
    ids = [store.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(3)]
    store.commit(Update(ids[0], {"status": "completed"}))
    projects, journal, source_id = _read(store)
    backend = _backend(nats_cluster)
    done = backend.import_database(projects, journal, source_id=source_id)
    assert (done.baseline, done.events, done.total) == (2, 2, 4)

    store.commit(Update(ids[2], {"status": "on_hold"}))  # the window moves on: seqs 4, 5
    projects, journal, _same = _read(store)
    with pytest.raises(StoreError, match="another migration of this database"):
        backend.import_database(projects, journal, source_id=source_id)
    assert backend.latest_seq() == 4  # nothing written


def test_a_file_whose_projects_disagree_with_its_journal_ends_as_its_projects(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    store = ProjectStore(tmp_path / "projects.json")
    ids = [store.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(2)]
    store.commit(Update(ids[0], {"status": "in_progress"}))
    projects, journal, source_id = _read(store)
    # As a copy restored by hand may be: the projects one change ahead of the journal.
    changed = Project.from_dict({**projects[0].to_dict(), "status": "completed"})
    backend = _backend(nats_cluster)
    done = backend.import_database([changed, projects[1]], journal[:2], source_id=source_id)
    assert (done.baseline, done.events, done.corrections) == (0, 2, 1)
    assert backend.get(ids[0]) == changed
    last = backend.journal()[-1]
    assert (last["event_type"], last["data"]["updated_fields"]) == ("project_updated", ["status"])


def test_migrate_needs_a_file_and_a_stream(nats_cluster: Cluster, tmp_path: Path) -> None:
    db = nats_database(nats_cluster)
    missing = run_projctl(
        "migrate", "--from", str(tmp_path / "nothing.json"), "--to", db, env=dict(os.environ)
    )
    assert missing.returncode == 3
    assert "no database at" in missing.stderr
    wrong = run_projctl(
        "migrate",
        "--from",
        str(tmp_path / "a.json"),
        "--to",
        str(tmp_path / "b.json"),
        env=dict(os.environ),
    )
    assert wrong.returncode == 2
    assert "give a nats:// or tls:// database location" in wrong.stderr
