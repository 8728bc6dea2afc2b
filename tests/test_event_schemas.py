"""The JSON Schemas in docs/schemas say exactly what events may hold: every event the CLI and the
Python API produce, journaled and broadcast, is valid, and what no event holds is not."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import projctl
from projctl import events
from projctl.store import ProjectStore

from .conftest import OwnedStore
from .test_server import run, serving

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
KINDS = ("project_created", "project_updated", "project_deleted", *events.CONVENTIONAL_EVENT_TYPES)


def _registry() -> Registry:
    """Every schema by its file name, which is how they refer to one another."""
    resources = [
        (path.name, Resource.from_contents(json.loads(path.read_text())))
        for path in sorted(SCHEMAS.glob("*.schema.json"))
    ]
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=REGISTRY)


def errors(name: str, event: Any) -> list[str]:
    return [error.message for error in validator(name).iter_errors(event)]


def check(event: dict[str, Any]) -> None:
    """``event`` is valid for the any-event schema, the envelope and its own kind's."""
    assert errors("event", event) == [], event
    assert errors("envelope", event) == [], event
    kind = event["event_type"]
    assert errors(kind if kind in KINDS else "emitted", event) == [], event
    if kind not in events.EVENT_TYPES:
        assert errors("emitted", event) == [], event


def test_every_schema_is_a_2020_12_schema_and_the_docs_list_it() -> None:
    listed = (SCHEMAS.parent / "events.md").read_text()
    names = sorted(path.name for path in SCHEMAS.glob("*.schema.json"))
    assert names == sorted(
        [f"{kind}.schema.json" for kind in KINDS]
        + [
            "emitted.schema.json",
            "envelope.schema.json",
            "event.schema.json",
            "project.schema.json",
        ]
    )
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        assert f"`{path.name}`" in listed, path.name


CONVENTIONAL_DATA: dict[str, dict[str, Any]] = {
    "project_modified": {"files": ["src/app.py"], "commit": "9f2c1e0"},
    "documentation_generated": {"path": "site/", "pages": 12, "url": "https://example.org/docs/"},
    "tests_generated": {"files": ["tests/test_app.py"], "tests": 8},
    "tests_run": {"passed": 41, "failed": 0, "skipped": 2, "duration_s": 12.5},
}


@pytest.mark.usefixtures("broadcasting")
def test_every_event_the_cli_and_the_api_produce_is_valid(
    cli: Any, store: ProjectStore, db_path: Path
) -> None:
    """Create, update, delete and emit of each kind, through the CLI and the Python API, with a
    server: every journaled event, every broadcast frame and every /api/events entry."""
    from websockets.asyncio.client import connect

    from .test_http_api import get
    from .test_server import ws_url

    def produce() -> None:
        for reference in ("by-cli", "by-api"):
            if reference == "by-cli":
                project = cli("create", "Billing API", "--description", "first").stdout.strip()
                assert cli("update", project, "--status", "in_progress").exit_code == 0
                for kind, data in CONVENTIONAL_DATA.items():
                    result = cli("emit", project, kind, "--data", orjson.dumps(data).decode())
                    assert result.exit_code == 0, result.stderr
                assert cli("emit", project, "deployed", "--data", '{"env": "prod"}').exit_code == 0
                assert cli("emit", project, "bare_event").exit_code == 0
                assert cli("update", project, "--name", "B", "--owner", "bob").exit_code == 0
                assert cli("delete", project).exit_code == 0
            else:
                db = projctl.open_database(db_path)
                project = db.create("Web shop", type="web", owner_id="ann").project.project_id
                db.update(project, description="x", status="on_hold")
                for kind, data in CONVENTIONAL_DATA.items():
                    db.emit(project, kind, data)
                db.emit("Web shop", "nested_data", {"a": {"b": [1, 2.5, None, True, "s"]}})
                db.delete(project)

    broadcast: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with serving(store) as server, connect(ws_url(server)) as ws:
            await asyncio.to_thread(produce)
            while len(broadcast) < store.latest_seq():
                broadcast.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
            status, _, body = await get(server.port, "/api/events?since=0")
            assert status == 200
            assert body["events"] == broadcast

    run(scenario())
    journal = store.journal()
    assert broadcast == journal
    assert len(journal) == 10 + 8  # the CLI's commands, then the API's calls
    kinds = {event["event_type"] for event in journal}
    assert set(KINDS) <= kinds
    assert {"deployed", "bare_event", "nested_data"} <= kinds
    for event in journal:
        check(event)


def test_the_python_api_feed_is_valid(tmp_path: Path) -> None:
    """What ``Database.subscribe`` yields for emitted events (a replay) is valid too."""
    db = projctl.open_database(tmp_path / "p.json", broadcast=False)
    project = db.create("Alpha").project.project_id
    for kind, data in CONVENTIONAL_DATA.items():
        db.emit(project, kind, data)

    async def take() -> list[dict[str, Any]]:
        taken = []
        async with contextlib.aclosing(db.subscribe(since=0)) as feed:
            async for message in feed:
                taken.append(message)
                if len(taken) == 5:
                    break
        return taken

    store = OwnedStore(tmp_path / "p.json")

    async def scenario() -> None:
        async with serving(store):
            messages = await asyncio.wait_for(take(), 20)
            assert messages == store.journal()
            for message in messages:
                check(message)

    run(scenario())


def _created() -> dict[str, Any]:
    record = {
        "project_id": "proj_20231119_120000",
        "name": "My New Project",
        "type": "api",
        "status": "created",
        "owner_id": "user_123",
        "description": "Project description",
        "created_at": "2023-11-19T12:00:00.000000",
        "updated_at": "2023-11-19T12:00:00.000000",
    }
    return events.project_created(record, seq=1, timestamp="2023-11-19T12:00:00.000000")


@pytest.mark.parametrize(
    ("schema", "change"),
    [
        ("event", lambda e: {**e, "extra": 1}),
        ("event", lambda e: {**e, "seq": 0}),
        ("event", lambda e: {**e, "seq": True}),
        ("event", lambda e: {**e, "timestamp": "2023-11-19T12:00:00Z"}),
        ("event", lambda e: {**e, "event_type": "Bad-Type"}),
        ("event", lambda e: {**e, "event_type": "resync"}),
        ("event", lambda e: {**e, "data": {**e["data"], "extra": 1}}),
        ("event", lambda e: {**e, "data": {**e["data"], "status": "done"}}),
        ("event", lambda e: {k: v for k, v in e.items() if k != "seq"}),
        ("event", lambda e: {**e, "data": {k: v for k, v in e["data"].items() if k != "owner_id"}}),
        (
            "event",
            lambda e: {**e, "event_type": "project_updated", "data": {**e["data"]}},
        ),
        (
            "event",
            lambda e: {
                **e,
                "event_type": "project_updated",
                "data": {**e["data"], "updated_fields": ["created_at"]},
            },
        ),
        (
            "event",
            lambda e: {**e, "event_type": "project_deleted"},  # a deletion keeps id and name only
        ),
        (
            "event",
            lambda e: {
                **e,
                "event_type": "tests_run",
                "data": {"project_id": "p", "name": "n", "failed": "many"},
            },
        ),
        (
            "event",
            lambda e: {
                **e,
                "event_type": "documentation_generated",
                "data": {"project_id": "p", "name": "n", "pages": -1},
            },
        ),
        ("event", lambda e: {**e, "event_type": "deployed", "data": {"name": "n"}}),
        ("emitted", lambda e: e),  # a lifecycle event is no emitted one
    ],
)
def test_what_no_event_holds_is_refused(schema: str, change: Any) -> None:
    event = _created()
    assert errors("event", event) == []
    assert errors(schema, change(event)) != []


def test_the_specs_examples_with_what_the_wire_adds_are_valid() -> None:
    created = _created()
    check(created)
    updated = events.project_updated(
        created["data"], ["name", "status"], seq=2, timestamp="2023-11-19T12:05:00.000000"
    )
    check(updated)
    check(events.project_deleted(created["data"], seq=3, timestamp="2023-11-19T12:10:00.000000"))
    for kind, data in CONVENTIONAL_DATA.items():
        check(events.emitted(created["data"], kind, data, seq=4, timestamp=created["timestamp"]))
