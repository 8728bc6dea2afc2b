"""The plan of a migration, without a cluster: which messages carry a database file's
projects and journal into a stream, in which order, with which headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from projctl.backend import Create, Delete, Emit, Update
from projctl.jetstream._connection import _CREATED, _MSG_ID
from projctl.jetstream._import import plan_import
from projctl.model import Project, parse_project_id
from projctl.store import ProjectStore


def _plan(store: ProjectStore) -> tuple[Any, list[dict[str, Any]]]:
    state = store.read_state()
    projects = [Project.from_dict(record) for record in state.project_records]
    plan = plan_import(projects, state.journal, prefix="projctl.db", source_id="src")
    return plan, [orjson.loads(message.data) for message in plan.messages]


def _subject(kind: str, project_id: str) -> str:
    parsed = parse_project_id(project_id)
    assert parsed is not None
    return f"projctl.db.{kind}.{parsed[0]}.{parsed[1]}"


def test_the_projects_older_than_the_journal_come_first_then_the_journal(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects.json", journal_limit=4)
    ids = [store.commit(Create(f"p{n}", owner_id="me"))[0].project.project_id for n in range(4)]
    store.commit(Update(ids[1], {"status": "on_hold"}))  # the journal: file seqs 4 to 7
    store.commit(Emit(ids[0], "deployed", {"to": "prod"}))
    store.commit(Delete((ids[2],)))
    plan, bodies = _plan(store)
    assert (plan.baseline, plan.events) == (2, 4)
    assert [(b["event_type"], b["data"]["project_id"]) for b in bodies] == [
        ("project_created", ids[0]),  # older than the journal, in creation order
        ("project_created", ids[1]),  # as its first update in the journal left it
        ("project_created", ids[3]),  # the journal's first event, file seq 4
        ("project_updated", ids[1]),
        ("deployed", ids[0]),
        ("project_deleted", ids[2]),  # no earlier message: its tombstone is its first
    ]
    assert bodies[1]["data"]["status"] == "on_hold"
    assert bodies[0]["timestamp"] == bodies[0]["data"]["created_at"]
    assert [m.subject for m in plan.messages][3:5] == [
        _subject("project", ids[1]),
        _subject("emit", ids[0]),
    ]
    assert [m.headers[_MSG_ID] for m in plan.messages] == [
        f"migrate:src:{ids[0]}",
        f"migrate:src:{ids[1]}",
        "migrate:src:event-4",
        "migrate:src:event-5",
        "migrate:src:event-6",
        "migrate:src:event-7",
    ]
    # The update names the seq its project was created at (the stream sorts by it).
    assert plan.messages[3].headers[_CREATED] == "2"
    assert _CREATED not in plan.messages[5].headers
    # An emitted event carries the project as it was, as a write to a stream keeps it.
    assert bodies[4]["project"]["project_id"] == ids[0]
    # The same file, the same plan: byte for byte.
    assert _plan(store)[0] == plan
