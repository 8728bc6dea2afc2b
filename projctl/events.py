"""Build, encode and decode events: the three lifecycle ones and emitted ones.

The shapes are the wire contract in ``shared/spec/events.md``: an envelope of
``event_type``, ``timestamp``, ``seq`` and ``data``. Keys may be added, never
renamed or removed. Besides the lifecycle events, an *emitted* event
(``projctl emit``) records something that happened to a project under a type of
the caller's choosing (conventions in ``docs/events.md``); it changes no project.
Its rules (:func:`validate_event_type`, :func:`validate_emit_data`) live here, and
every path that emits uses them. Pure: nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict, cast

from projctl.errors import InvalidInputError

__all__ = [
    "CONVENTIONAL_EVENT_TYPES",
    "DELETED_LINGER_SECONDS",
    "EMIT_DATA_MAX_BYTES",
    "EMIT_TYPE_PATTERN",
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
    "data_summary",
    "decode_event",
    "emitted",
    "encode_event",
    "format_timestamp",
    "is_emitted_type",
    "is_event",
    "is_event_type",
    "parse_timestamp",
    "project_created",
    "project_deleted",
    "project_record",
    "project_updated",
    "projects_message",
    "projects_message_chunks",
    "utc_now",
    "validate_emit_data",
    "validate_event_type",
]

EventType = Literal["project_created", "project_updated", "project_deleted"]
EVENT_TYPES: tuple[EventType, ...] = ("project_created", "project_updated", "project_deleted")
#: Messages that carry the whole project list instead of one change (see :func:`projects_message`).
PROJECTS_MESSAGE_TYPES: tuple[str, ...] = ("snapshot", "resync")

#: What an emitted event's type must look like; the lifecycle and projects messages' names
#: are taken (:func:`validate_event_type`).
EMIT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,63}")
#: The emitted kinds ``docs/events.md`` sets conventions for: offered by completion, never
#: a closed list.
CONVENTIONAL_EVENT_TYPES: tuple[str, ...] = (
    "project_modified",
    "documentation_generated",
    "tests_generated",
    "tests_run",
)
#: The largest ``data`` an emitted event takes, as compact JSON.
EMIT_DATA_MAX_BYTES = 64 * 1024
#: Keys of an emitted event's ``data`` that are the project's, never the caller's.
_RESERVED_DATA_KEYS: tuple[str, ...] = ("project_id", "name")

#: How long a live view (the dashboard) highlights a created or updated project.
HIGHLIGHT_SECONDS = 10.0
#: How long a live view keeps a deleted project on screen, struck through.
DELETED_LINGER_SECONDS = 5.0
#: The dashboard's reconnect backoff: the first wait, doubled on each failure up to the last.
_PAGE_BACKOFF_FIRST_SECONDS = 0.5
_PAGE_BACKOFF_MAX_SECONDS = 10.0
#: How long the dashboard tries to reconnect before it says where to look for the server
#: (one that restarted on another port, its old one taken, is no longer at the page's).
_PAGE_LOST_HINT_SECONDS = 20.0


class Event(TypedDict):
    """One event, exactly as sent on the wire: a lifecycle event (``event_type`` one of
    :data:`EVENT_TYPES`) or an emitted one (see :func:`emitted`)."""

    event_type: str
    timestamp: str
    seq: int
    data: dict[str, Any]


class EventDecodeError(ValueError):
    """A message is not an event."""


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


def is_emitted_type(value: object) -> bool:
    """Whether ``value`` is a valid emitted event's type (see :func:`validate_event_type`)."""
    return (
        isinstance(value, str)
        and EMIT_TYPE_PATTERN.fullmatch(value) is not None
        and value not in EVENT_TYPES
        and value not in PROJECTS_MESSAGE_TYPES
    )


def is_event_type(value: object) -> bool:
    """Whether ``value`` names an event: a lifecycle one or a valid emitted one."""
    return value in EVENT_TYPES or is_emitted_type(value)


def is_event(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` claims to be an event: of a lifecycle type, or of an emitted type
    with a ``seq`` (every journaled event has one). Any other message, such as a kind a later
    server may add, is no event: consumers pass it by."""
    event_type = message.get("event_type")
    return event_type in EVENT_TYPES or (is_emitted_type(event_type) and "seq" in message)


def validate_event_type(value: object) -> str:
    """An emitted event's type: ``[a-z][a-z0-9_]{2,63}``, none of the lifecycle events'
    names (nor ``snapshot`` or ``resync``, which carry every project); else
    :class:`InvalidInputError`."""
    if not isinstance(value, str) or EMIT_TYPE_PATTERN.fullmatch(value) is None:
        shown = value if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(
            f"event type {shown!r} is not a name of 3-64 of a-z, 0-9 or '_' starting with a letter"
        )
    if value in EVENT_TYPES or value in PROJECTS_MESSAGE_TYPES:
        raise InvalidInputError(
            f"event type {value!r} is reserved: projctl sends it itself; choose another name"
        )
    return value


def validate_emit_data(data: object) -> dict[str, Any]:
    """An emitted event's extra ``data``: a JSON object (string keys; strings, finite
    numbers, booleans, null, lists and objects) of at most :data:`EMIT_DATA_MAX_BYTES` as
    compact JSON, without the project's own keys (``project_id``, ``name``). Returns a
    plain copy; raises :class:`InvalidInputError`."""
    import orjson

    if not isinstance(data, Mapping):
        raise InvalidInputError(f"data must be a JSON object, not {_json_kind(data)}")
    reserved = [key for key in _RESERVED_DATA_KEYS if key in data]
    if reserved:
        raise InvalidInputError(
            f"data must not set {' or '.join(reserved)}: the event carries the project's own"
        )
    problem = _not_json(data)
    if problem is not None:
        raise InvalidInputError(f"data is not JSON: {problem}")
    try:
        encoded = orjson.dumps(data)
    except orjson.JSONEncodeError as error:  # an integer beyond 64 bits, a lone surrogate
        raise InvalidInputError(f"data is not JSON: {error}") from None
    if len(encoded) > EMIT_DATA_MAX_BYTES:
        raise InvalidInputError(
            f"data is {len(encoded):,} bytes as JSON; the limit is {EMIT_DATA_MAX_BYTES:,}"
        )
    return cast(dict[str, Any], orjson.loads(encoded))


def _json_kind(value: object) -> str:
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return "a number" if not isinstance(value, bool) else "a boolean"
    return type(value).__name__


def _not_json(value: object) -> str | None:
    """What in ``value`` is no JSON value, ``None`` when all of it is. Walked without
    recursion: the depth is the caller's."""
    pending = [value]
    while pending:
        item = pending.pop()
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r} is not a JSON number"
        elif isinstance(item, Mapping):
            for key, nested in item.items():
                if not isinstance(key, str):
                    return f"key {key!r} is not a string"
                pending.append(nested)
        elif isinstance(item, list | tuple):
            pending.extend(item)
        else:
            return f"a {type(item).__name__} is not a JSON value"
    return None


def emitted(
    project: Mapping[str, Any],
    event_type: str,
    data: Mapping[str, Any],
    *,
    seq: int,
    timestamp: str,
) -> Event:
    """An emitted event about ``project`` (its record as stored): ``data`` is the project's
    id and name, then the caller's ``data`` (checked by :func:`validate_emit_data`)."""
    return {
        "event_type": event_type,
        "timestamp": timestamp,
        "seq": seq,
        "data": {"project_id": project["project_id"], "name": project["name"], **data},
    }


def data_summary(data: Mapping[str, Any], *, width: int = 60) -> str:
    """A short, one-line summary of an emitted event's own ``data`` (the project's keys left
    out): ``passed=41 failed=1 duration_s=3.2``, ``files=[3 items] commit=9f2c1e0``;
    at most ``width`` characters, ``""`` when there is nothing to show. For display only."""
    parts = []
    for key, value in data.items():
        if key in _RESERVED_DATA_KEYS:
            continue
        if isinstance(value, list | tuple):
            shown = f"[{len(value)} item{'' if len(value) == 1 else 's'}]"
        elif isinstance(value, Mapping):
            shown = "{...}"
        elif isinstance(value, bool) or value is None:
            shown = "true" if value is True else "false" if value is False else "null"
        else:
            shown = str(value)
        parts.append(f"{key}={' '.join(shown.split())}")
    summary = " ".join(parts)
    return summary if len(summary) <= width else summary[: max(0, width - 3)] + "..."


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
    snapshot or resync), which is all a deleted project leaves behind. An emitted
    event changes no project: it returns the project as it is (``None`` when unknown).
    Messages of any other type change nothing. No I/O.
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
    project_id = str(data.get("project_id", ""))
    if event_type not in EVENT_TYPES:
        return projects.get(project_id) if is_emitted_type(event_type) else None
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
    change (``created``, ``updated``, ``deleted``) to its event type;
    ``emitted_type_pattern`` is what any other event's type matches in full (the page
    shows those as emitted events, and never mistakes them for a gap). Times are in
    milliseconds, as the page counts them. Pure.
    """
    return {
        "project_fields": list(project_fields),
        "statuses": list(statuses),
        "events": {name.removeprefix("project_"): name for name in EVENT_TYPES},
        "emitted_type_pattern": EMIT_TYPE_PATTERN.pattern,
        "projects_messages": list(PROJECTS_MESSAGE_TYPES),
        "highlight_ms": round(HIGHLIGHT_SECONDS * 1000),
        "deleted_linger_ms": round(DELETED_LINGER_SECONDS * 1000),
        "backoff_first_ms": round(_PAGE_BACKOFF_FIRST_SECONDS * 1000),
        "backoff_max_ms": round(_PAGE_BACKOFF_MAX_SECONDS * 1000),
        "lost_hint_ms": round(_PAGE_LOST_HINT_SECONDS * 1000),
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
    if not is_event_type(value.get("event_type")):
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
