"""Build, encode and decode the three lifecycle events.

The shapes are the wire contract in ``shared/spec/events.md``: an envelope of
``event_type``, ``timestamp``, ``seq`` and ``data``. Keys may be added, never
renamed or removed. Pure: nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict, cast

import orjson

from projctl.model import Project

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventDecodeError",
    "EventType",
    "decode_event",
    "encode_event",
    "project_created",
    "project_deleted",
    "project_updated",
]

EventType = Literal["project_created", "project_updated", "project_deleted"]
EVENT_TYPES: tuple[EventType, ...] = ("project_created", "project_updated", "project_deleted")


class Event(TypedDict):
    """One lifecycle event, exactly as sent on the wire."""

    event_type: EventType
    timestamp: str
    seq: int
    data: dict[str, Any]


class EventDecodeError(ValueError):
    """A message is not a lifecycle event."""


def project_created(project: Project, *, seq: int, timestamp: str) -> Event:
    """The event for a newly created project: ``data`` is the full stored project."""
    return {
        "event_type": "project_created",
        "timestamp": timestamp,
        "seq": seq,
        "data": project.to_dict(),
    }


def project_updated(
    project: Project, updated_fields: Sequence[str], *, seq: int, timestamp: str
) -> Event:
    """The event for a change: the full project after it, plus the fields whose value changed."""
    data: dict[str, Any] = project.to_dict()
    data["updated_fields"] = list(updated_fields)
    return {"event_type": "project_updated", "timestamp": timestamp, "seq": seq, "data": data}


def project_deleted(project: Project, *, seq: int, timestamp: str) -> Event:
    """The event for a deletion: only the id and the last name survive the project."""
    return {
        "event_type": "project_deleted",
        "timestamp": timestamp,
        "seq": seq,
        "data": {"project_id": project.project_id, "name": project.name},
    }


def encode_event(event: Event) -> bytes:
    """The event as one compact UTF-8 JSON object, keys in contract order."""
    return orjson.dumps(event)


def decode_event(message: str | bytes) -> Event:
    """Parse one JSON message and check that it has the event envelope.

    Raises :class:`EventDecodeError` for anything else. Unknown extra keys are kept.
    """
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError as error:
        raise EventDecodeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise EventDecodeError("not a JSON object")
    if value.get("event_type") not in EVENT_TYPES:
        raise EventDecodeError(f"unknown event_type {value.get('event_type')!r}")
    if not isinstance(value.get("timestamp"), str):
        raise EventDecodeError("timestamp must be a string")
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise EventDecodeError("seq must be a positive integer")
    data = value.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("project_id"), str):
        raise EventDecodeError("data must be an object with a project_id")
    return cast(Event, value)
