from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from projctl.events import (
    EventDecodeError,
    apply,
    decode_event,
    encode_event,
    format_timestamp,
    parse_timestamp,
    project_created,
    project_deleted,
    project_updated,
    projects_message,
)
from projctl.model import Project

MOMENT = datetime(2023, 11, 19, 12, 0, 0, 5, tzinfo=timezone.utc)

PROJECT = Project(
    project_id="proj_20231119_120000",
    name="My New Project",
    type="api",
    status="created",
    owner_id="user_123",
    description="Project description",
    created_at="2023-11-19T12:00:00.000000",
    updated_at="2023-11-19T12:00:00.000000",
)


def test_project_created_shape() -> None:
    event = project_created(PROJECT.to_dict(), seq=1, timestamp="2023-11-19T12:00:00.000000")
    assert event == {
        "event_type": "project_created",
        "timestamp": "2023-11-19T12:00:00.000000",
        "seq": 1,
        "data": {
            "project_id": "proj_20231119_120000",
            "name": "My New Project",
            "type": "api",
            "status": "created",
            "owner_id": "user_123",
            "description": "Project description",
            "created_at": "2023-11-19T12:00:00.000000",
            "updated_at": "2023-11-19T12:00:00.000000",
        },
    }
    assert list(event) == ["event_type", "timestamp", "seq", "data"]


def test_project_updated_shape() -> None:
    event = project_updated(
        PROJECT.to_dict(), ["name", "status"], seq=2, timestamp="2023-11-19T12:05:00.000000"
    )
    assert event["event_type"] == "project_updated"
    assert event["seq"] == 2
    assert event["data"] == {**PROJECT.to_dict(), "updated_fields": ["name", "status"]}


def test_project_deleted_carries_only_id_and_name() -> None:
    event = project_deleted(PROJECT.to_dict(), seq=3, timestamp="2023-11-19T12:10:00.000000")
    assert event == {
        "event_type": "project_deleted",
        "timestamp": "2023-11-19T12:10:00.000000",
        "seq": 3,
        "data": {"project_id": "proj_20231119_120000", "name": "My New Project"},
    }


def test_encode_is_compact_json_in_contract_order() -> None:
    event = project_deleted(PROJECT.to_dict(), seq=3, timestamp="2023-11-19T12:10:00.000000")
    assert encode_event(event) == (
        b'{"event_type":"project_deleted","timestamp":"2023-11-19T12:10:00.000000","seq":3,'
        b'"data":{"project_id":"proj_20231119_120000","name":"My New Project"}}'
    )
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        b"[]",
        b'{"event_type":"Project-Exploded","timestamp":"t","seq":1,"data":{"project_id":"p"}}',
        b'{"event_type":"resync","timestamp":"t","seq":1,"data":{"project_id":"p"}}',
        b'{"event_type":"tests_run","timestamp":"t","seq":1,"data":{"name":"n"}}',
        b'{"event_type":"project_created","timestamp":"t","seq":0,"data":{"project_id":"p"}}',
        b'{"event_type":"project_created","timestamp":"t","seq":true,"data":{"project_id":"p"}}',
        b'{"event_type":"project_created","timestamp":1,"seq":1,"data":{"project_id":"p"}}',
        b'{"event_type":"project_created","timestamp":"t","seq":1,"data":{}}',
    ],
)
def test_decode_rejects_what_is_not_an_event(message: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(message)


def test_timestamp_has_six_fraction_digits_and_no_zone() -> None:
    assert format_timestamp(MOMENT) == "2023-11-19T12:00:00.000005"
    assert format_timestamp(MOMENT.replace(microsecond=0)) == "2023-11-19T12:00:00.000000"


def test_timestamp_converts_other_zones_to_utc() -> None:
    from datetime import timedelta

    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(plus_two) == "2023-11-19T12:00:00.000005"


def test_apply_is_the_fold_of_the_stream() -> None:
    projects: dict[str, dict[str, Any]] = {}
    record = {"project_id": "p1", "name": "A", "status": "created"}
    created = project_created(record, seq=1, timestamp="t")
    assert apply(projects, created) is None
    assert projects == {"p1": record}
    changed = {**record, "status": "completed"}
    updated = project_updated(changed, ["status"], seq=2, timestamp="t")
    assert apply(projects, updated) == record
    assert projects == {"p1": changed}  # updated_fields is not part of the project
    deleted = project_deleted(changed, seq=3, timestamp="t")
    assert apply(projects, deleted) == changed  # what a deleted project leaves behind
    assert projects == {}
    assert apply(projects, deleted) is None  # deleting the unknown changes nothing
    snapshot = orjson.loads(projects_message("snapshot", [record], seq=9, timestamp="t"))
    projects["stale"] = {"project_id": "stale"}
    assert apply(projects, snapshot) is None
    assert projects == {"p1": record}
    assert apply(projects, {"event_type": "hello", "data": {}}) is None
    assert apply(projects, {"event_type": "project_created"}) is None
    assert projects == {"p1": record}


def test_timestamps_parse_back() -> None:
    moment = datetime(2023, 11, 19, 12, 0, 0, 5, tzinfo=timezone.utc)
    assert format_timestamp(moment) == "2023-11-19T12:00:00.000005"
    assert parse_timestamp("2023-11-19T12:00:00.000005") == moment
    for garbage in ("2023-11-19", "2023-11-19T12:00:00Z", None, 5):
        assert parse_timestamp(garbage) is None
