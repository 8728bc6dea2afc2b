"""Build, encode and decode the three lifecycle events.

The shapes are the wire contract in ``shared/spec/events.md``: an envelope of
``event_type``, ``timestamp``, ``seq`` and ``data``. Keys may be added, never
renamed or removed. Pure: nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict, cast

__all__ = [
    "DELETED_LINGER_SECONDS",
    "EVENT_TYPES",
    "HIGHLIGHT_SECONDS",
    "PROJECTS_MESSAGE_TYPES",
    "TIMESTAMP_FORMAT",
    "Event",
    "EventDecodeError",
    "EventType",
    "apply",
    "check_event",
    "dashboard_contract",
    "decode_event",
    "encode_event",
    "format_timestamp",
    "parse_timestamp",
    "project_created",
    "project_deleted",
    "project_record",
    "project_updated",
    "projects_message",
    "projects_message_chunks",
    "utc_now",
]

EventType = Literal["project_created", "project_updated", "project_deleted"]
EVENT_TYPES: tuple[EventType, ...] = ("project_created", "project_updated", "project_deleted")
#: Messages that carry the whole project list instead of one change (see :func:`projects_message`).
PROJECTS_MESSAGE_TYPES: tuple[str, ...] = ("snapshot", "resync")

#: How long a live view (the dashboard) highlights a created or updated project.
HIGHLIGHT_SECONDS = 10.0
#: How long a live view keeps a deleted project on screen, struck through.
DELETED_LINGER_SECONDS = 5.0
#: The dashboard's reconnect backoff: the first wait, doubled on each failure up to the last.
_PAGE_BACKOFF_FIRST_SECONDS = 0.5
_PAGE_BACKOFF_MAX_SECONDS = 10.0


class Event(TypedDict):
    """One lifecycle event, exactly as sent on the wire."""

    event_type: EventType
    timestamp: str
    seq: int
    data: dict[str, Any]


class EventDecodeError(ValueError):
    """A message is not a lifecycle event."""


#: ``YYYY-MM-DDTHH:MM:SS.ffffff``, UTC, no zone suffix: the contract's one timestamp format.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` in UTC with no zone suffix, as the contract fixes."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: object) -> datetime | None:
    """The aware UTC moment of a contract timestamp; ``None`` for anything else."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def project_created(project: Mapping[str, Any], *, seq: int, timestamp: str) -> Event:
    """The event for a newly created project: ``data`` is the full stored project record."""
    return {
        "event_type": "project_created",
        "timestamp": timestamp,
        "seq": seq,
        "data": dict(project),
    }


def project_updated(
    project: Mapping[str, Any], updated_fields: Sequence[str], *, seq: int, timestamp: str
) -> Event:
    """The event for a change: the full record after it, plus the fields whose value changed."""
    data = dict(project)
    data["updated_fields"] = list(updated_fields)
    return {"event_type": "project_updated", "timestamp": timestamp, "seq": seq, "data": data}


def project_deleted(project: Mapping[str, Any], *, seq: int, timestamp: str) -> Event:
    """The event for a deletion: only the id and the last name survive the project."""
    return {
        "event_type": "project_deleted",
        "timestamp": timestamp,
        "seq": seq,
        "data": {"project_id": project["project_id"], "name": project["name"]},
    }


def projects_message(
    event_type: Literal["snapshot", "resync"],
    projects: Sequence[Mapping[str, Any]],
    *,
    seq: int,
    timestamp: str,
) -> bytes:
    """The whole project list as of ``seq``, encoded.

    ``snapshot`` answers a subscriber that asked for one; ``resync`` tells a
    resuming subscriber that the events it missed are gone and it must rebuild
    its state from this list. Live events with ``seq`` above it follow.
    """
    return b"".join(projects_message_chunks(event_type, projects, seq=seq, timestamp=timestamp))


def projects_message_chunks(
    event_type: Literal["snapshot", "resync"],
    projects: Iterable[Mapping[str, Any]],
    *,
    seq: int,
    timestamp: str,
    chunk_bytes: int = 64 * 1024,
) -> Iterator[bytes]:
    """:func:`projects_message`, encoded lazily in pieces of about ``chunk_bytes``.

    Joined, the pieces are exactly :func:`projects_message`. A server sends them as
    the fragments of one message, each when the subscriber has taken the last: a
    large database is never encoded whole per subscriber.
    """
    import orjson

    head = orjson.dumps({"event_type": event_type, "timestamp": timestamp, "seq": seq})
    yield head[:-1] + b',"data":{"projects":['
    pending: list[bytes] = []
    size = 0
    first = True
    for project in projects:
        encoded = orjson.dumps(project)
        pending.append(encoded if first else b"," + encoded)
        first = False
        size += len(encoded) + 1
        if size >= chunk_bytes:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(b"]}}")
    yield b"".join(pending)


def project_record(data: Mapping[str, Any]) -> dict[str, Any]:
    """The project as stored, from an event's ``data`` (which may add ``updated_fields``)."""
    return {key: value for key, value in data.items() if key != "updated_fields"}


def apply(
    projects: MutableMapping[str, dict[str, Any]], message: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Fold one message into ``projects`` (project id -> record as stored), in place.

    The one fold of the event stream: the server, ``watch``, the Python API and the
    tests all rebuild projects with it. A lifecycle event adds, replaces or removes
    one project; a ``snapshot`` or ``resync`` message replaces them all. Returns the
    project as it was before the event (``None`` when it was unknown, and for a
    snapshot or resync), which is all a deleted project leaves behind. Messages of
    any other type change nothing. No I/O.
    """
    event_type = message.get("event_type")
    data = message.get("data")
    if not isinstance(data, Mapping):
        return None
    if event_type in PROJECTS_MESSAGE_TYPES:
        projects.clear()
        for record in data.get("projects", ()):
            projects[str(record["project_id"])] = dict(record)
        return None
    if event_type not in EVENT_TYPES:
        return None
    project_id = str(data.get("project_id", ""))
    if event_type == "project_deleted":
        return projects.pop(project_id, None)
    before = projects.get(project_id)
    projects[project_id] = project_record(data)
    return before


def dashboard_contract(*, project_fields: Sequence[str], statuses: Sequence[str]) -> dict[str, Any]:
    """What the dashboard page must know of the contract, as JSON-ready values.

    The page types none of it: the server embeds this in the page it serves. The caller
    passes the model's ``PROJECT_FIELDS`` and ``STATUSES`` (this module imports no model);
    the event names and the timings are this module's. ``events`` maps each lifecycle
    change (``created``, ``updated``, ``deleted``) to its event type. Times are in
    milliseconds, as the page counts them. Pure.
    """
    return {
        "project_fields": list(project_fields),
        "statuses": list(statuses),
        "events": {name.removeprefix("project_"): name for name in EVENT_TYPES},
        "projects_messages": list(PROJECTS_MESSAGE_TYPES),
        "highlight_ms": round(HIGHLIGHT_SECONDS * 1000),
        "deleted_linger_ms": round(DELETED_LINGER_SECONDS * 1000),
        "backoff_first_ms": round(_PAGE_BACKOFF_FIRST_SECONDS * 1000),
        "backoff_max_ms": round(_PAGE_BACKOFF_MAX_SECONDS * 1000),
    }


def encode_event(event: Event) -> bytes:
    """The event as one compact UTF-8 JSON object, keys in contract order."""
    # orjson (and the json module it builds on) is imported on first use, not with
    # this module: `projctl --help` needs the event names but never encodes one.
    import orjson

    return orjson.dumps(event)


def decode_event(message: str | bytes) -> Event:
    """Parse one JSON message and check that it has the event envelope.

    Raises :class:`EventDecodeError` for anything else. Unknown extra keys are kept.
    """
    import orjson

    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError as error:
        raise EventDecodeError(f"not JSON: {error}") from None
    return check_event(value)


def check_event(value: Any) -> Event:
    """``value`` itself, if it has the event envelope; :class:`EventDecodeError` if not."""
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
