"""``projctl wait``: follow the feed until one project meets a
:class:`~projctl.model.WaitCondition`, with :func:`projctl.subscribe.follow`, the
subscription ``watch`` uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from projctl import events
from projctl.events import PROJECTS_MESSAGE_TYPES
from projctl.model import WaitCondition
from projctl.subscribe import Locate, Message, follow

__all__ = ["run_wait"]


async def run_wait(
    locate: Locate, *, current: Mapping[str, Any], condition: WaitCondition, since: int
) -> dict[str, Any] | None:
    """Follow the feed from ``since`` until ``condition`` holds for the project ``current``
    (as it was at ``since``); return its record then (for a deletion: as it last was).

    Returns ``None`` when the project is deleted while waiting for anything but its
    deletion. Runs until cancelled otherwise (the caller's timeout).
    """
    project_id = current["project_id"]
    last = dict(current)
    async for item in follow(locate, since=since):
        if not isinstance(item, Message):
            continue
        data = item.data.get("data")
        if not isinstance(data, Mapping):
            continue
        if item.event_type in PROJECTS_MESSAGE_TYPES:
            found = [p for p in data.get("projects", ()) if p.get("project_id") == project_id]
            record = dict(found[0]) if found else None
        elif data.get("project_id") != project_id:
            continue
        elif item.event_type == "project_deleted":
            record = None
        else:
            record = events.project_record(data)
        if condition.met_by(record):
            return record if record is not None else last
        if record is None:
            return None
        last = record
    raise AssertionError("the feed never ends")  # pragma: no cover
