"""Moving a database file into a stream (``projctl migrate``): its projects and its journal.

A stream's seqs are its own (every message is one event, the stream seq *is* the event's
seq), so the file's seqs cannot be kept; its history is written as the stream's first
messages instead, in three parts, and numbered from 1:

1. **The projects as the journal found them**: a ``project_created`` for every live project
   the retained journal does not create (it is older than the journal's first event), in
   creation order, stamped with its ``created_at``. Its record is the project as it is now
   when the journal changes it no more, else as its first update in the journal left it
   (the values that update replaced left the file with the events before the journal).
2. **The journal**, every retained event in order (lifecycle and emitted alike, timestamps
   and data as they were): so ``watch --since``, ``Database.journal()`` and a gateway replay
   the file's history, with new seqs.
3. **Corrections**, only for a file whose projects disagree with its own journal (a copy
   restored by hand): each such project written as it is now, so that the last message of
   every project subject is still the project's current state.

A project deleted within the journal keeps its tombstone, so its id is never issued again.
A project deleted before the journal's first event left nothing in the file: its id is of a
past second, which the stream's creates (ids of the current second) never reach.

The plan is the same for the same file, message for message: each carries the id
``migrate:<database id>:<what>`` and goes in at the seq the plan gives it (an atomic batch
whose first message expects the stream's last seq), so an interrupted run is finished by
running it again, and a stream holding anything else is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from projctl import events
from projctl.errors import ServerError, StoreError
from projctl.events import Event
from projctl.jetstream._connection import (
    _CREATED,
    _EXPECT_LAST,
    _MAX_ATTEMPTS,
    _MSG_ID,
    _BatchDuplicate,
    _Conflict,
    _Session,
)
from projctl.jetstream._writes import StreamWrites
from projctl.model import EDITABLE_FIELDS, Project, parse_project_id

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["ImportResult", "StreamImport", "plan_import"]

#: At most this many messages, and about this many bytes, in one atomic batch (the server
#: takes up to 1,000 messages in one).
_BATCH_MESSAGES = 256
_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class ImportResult:
    """What :meth:`StreamImport.import_database` did: the stream holds ``total`` messages of
    the file (seqs 1 to ``total``): ``baseline`` projects as the journal found them, then
    ``events`` journal events, then ``corrections``; ``written`` of them by this run (the
    others by an earlier run of the same migration)."""

    projects: int
    baseline: int
    events: int
    corrections: int
    written: int

    @property
    def total(self) -> int:
        """How many messages the migration puts in the stream."""
        return self.baseline + self.events + self.corrections


@dataclass(frozen=True)
class _Message:
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class _Plan:
    messages: list[_Message]
    baseline: int
    events: int


def plan_import(
    projects: Sequence[Project], journal: Sequence[Event], *, prefix: str, source_id: str
) -> _Plan:
    """The messages that carry ``projects`` (in creation order) and the retained ``journal``
    of a database into the empty stream of subjects ``prefix.>`` (see the module
    docstring). Pure: the same input gives the same messages, byte for byte."""
    ids = f"migrate:{source_id}:"
    messages: list[_Message] = []
    known: dict[str, dict[str, Any]] = {}  # the live projects as the messages so far leave them
    created_at: dict[str, int] = {}  # a project's first seq on its subject (Projctl-Created)

    def subject(kind: str, project_id: str) -> str:
        parsed = parse_project_id(project_id)
        if parsed is None:
            raise StoreError(f"cannot migrate project {project_id!r}: not a project id")
        return f"{prefix}.{kind}.{parsed[0]}.{parsed[1]}"

    def add(event: Event, kind: str, msg_id: str, *, carry: bool = False) -> None:
        project_id = str(event["data"].get("project_id", ""))
        body: dict[str, Any] = {
            "event_type": event["event_type"],
            "timestamp": event["timestamp"],
            "data": event["data"],
        }
        if carry and project_id in known:
            body["project"] = known[project_id]  # the project as it was, as a write keeps it
        headers = {_MSG_ID: ids + msg_id}
        seq = len(messages) + 1
        if kind == "project":
            if event["event_type"] == "project_created":
                created_at[project_id] = seq
            elif project_id in created_at:
                headers[_CREATED] = str(created_at[project_id])
            else:
                created_at[project_id] = seq
        messages.append(_Message(subject(kind, project_id), orjson.dumps(body), headers))
        events.apply(known, {**event, "seq": seq})

    first_change: dict[str, Event] = {}
    for event in journal:
        if event["event_type"] in events.EVENT_TYPES:
            first_change.setdefault(str(event["data"].get("project_id", "")), event)
    current = {project.project_id: project.to_dict() for project in projects}

    for project_id, record in current.items():
        first = first_change.get(project_id)
        if first is not None and first["event_type"] == "project_created":
            continue  # the journal creates it
        if first is not None and first["event_type"] == "project_updated":
            record = _record(first)
        created = events.project_created(record, seq=0, timestamp=record["created_at"])
        add(created, "project", project_id)
    baseline = len(messages)

    for event in journal:
        kind = "project" if event["event_type"] in events.EVENT_TYPES else "emit"
        carry = event["event_type"] == "project_deleted" or kind == "emit"
        add(event, kind, f"event-{event['seq']}", carry=carry)
    replayed = len(messages) - baseline

    last_timestamp = journal[-1]["timestamp"] if journal else ""
    for project_id, record in current.items():
        was = known.get(project_id)
        if was == record:
            continue
        if was is None:
            fix = events.project_created(record, seq=0, timestamp=record["updated_at"])
        else:
            changed = [name for name in EDITABLE_FIELDS if was.get(name) != record[name]]
            fix = events.project_updated(record, changed, seq=0, timestamp=record["updated_at"])
        add(fix, "project", f"current-{project_id}")
    for project_id in [project_id for project_id in known if project_id not in current]:
        gone = events.project_deleted(known[project_id], seq=0, timestamp=last_timestamp)
        add(gone, "project", f"gone-{project_id}", carry=True)
    return _Plan(messages, baseline, replayed)


def _record(event: Event) -> dict[str, Any]:
    """The whole project a ``project_created`` or ``project_updated`` event carries."""
    try:
        return Project.from_dict(events.project_record(event["data"])).to_dict()
    except (KeyError, TypeError, ValueError) as error:
        raise StoreError(
            f"cannot migrate the event at seq {event['seq']}: not a whole project ({error})"
        ) from None


class StreamImport(StreamWrites):
    """Writing a database file's projects and journal into an empty stream."""

    def import_database(
        self, projects: Sequence[Project], journal: Sequence[Event], *, source_id: str
    ) -> ImportResult:
        """Write ``projects`` (in creation order, ids and timestamps kept) and the retained
        ``journal`` of the database ``source_id`` (its database id) into the stream, as the
        module docstring says; return what was written.

        The stream must be empty or hold the first messages of this same migration (an
        earlier run cut short): then only the rest is written. Anything else in it (events
        of its own, or a migration of the file as it was before it changed) is a
        :class:`~projctl.errors.StoreError` and nothing is written.
        """
        plan = plan_import(projects, journal, prefix=self.prefix, source_id=source_id)
        total = len(plan.messages)

        async def held(s: _Session) -> int:
            return await self._imported(s, plan.messages)

        done = before = self._run(held)
        stalled = 0
        while done < total:
            chunk = _chunk(plan.messages, done)

            async def write(s: _Session, chunk: list[_Message] = chunk, after: int = done) -> int:
                # The first message expects the stream to end where the plan says: every
                # message goes in at its planned seq, or none of the batch does.
                batch = [(m.subject, m.data, dict(m.headers)) for m in chunk]
                batch[0][2][_EXPECT_LAST] = str(after)
                try:
                    ack = await self._publish(s, batch)
                except (_Conflict, _BatchDuplicate):
                    ack = None  # the stream moved, or holds this batch already: look again
                if ack is not None and not ack.duplicate and ack.seq == after + len(chunk):
                    return ack.seq
                return await self._imported(s, plan.messages)

            progress = self._run(write)
            stalled = 0 if progress > done else stalled + 1
            if stalled >= _MAX_ATTEMPTS:
                raise ServerError(
                    f"gave up migrating into {self._display}: no progress after "
                    f"{_MAX_ATTEMPTS} attempts"
                )
            done = progress
        return ImportResult(
            projects=len(projects),
            baseline=plan.baseline,
            events=plan.events,
            corrections=total - plan.baseline - plan.events,
            written=total - before,
        )

    async def _imported(self, s: _Session, planned: Sequence[_Message]) -> int:
        """How many of the ``planned`` messages the stream holds (its first ones, in order);
        :class:`~projctl.errors.StoreError` when it holds anything else."""
        info = await self._ensure_stream(s)
        latest = int(info.state.last_seq)
        if not latest:
            return 0
        found: list[Msg] = []
        if latest <= len(planned) and int(info.state.first_seq) == 1:
            while True:
                found = await self._consume(s, f"{self.prefix}.>", start=1)
                if found and found[-1].metadata.sequence.stream >= latest:
                    break
                if time.monotonic() >= s.deadline:
                    raise self._no_answer()
                await asyncio.sleep(0.02)  # a lagging replica: ask again
        same = [
            message.metadata.sequence.stream == seq
            and message.subject == plan.subject
            and (message.headers or {}).get(_MSG_ID) == plan.headers[_MSG_ID]
            and message.data == plan.data
            for seq, (message, plan) in enumerate(zip(found, planned, strict=False), start=1)
        ]
        if found and len(found) == latest and all(same):
            return latest
        if found or not planned:
            ours = bool(same) and same[0]
        else:
            first = await self._api(s, lambda: s.js.get_msg(self.stream, seq=info.state.first_seq))
            ours = (first.headers or {}).get(_MSG_ID) == planned[0].headers[_MSG_ID]
        raise StoreError(
            f"the stream {self.stream} at {self._display} "
            + (
                "holds another migration of this database (of the file as it was before it "
                "changed, or by another version of projctl)"
                if ours
                else "already holds projects or events of its own"
            )
            + ": migrate into an empty stream (a new database name)"
        )


def _chunk(planned: Sequence[_Message], start: int) -> list[_Message]:
    """The next batch from ``start``: up to :data:`_BATCH_MESSAGES`, about
    :data:`_BATCH_BYTES` (at least one message)."""
    chunk: list[_Message] = []
    size = 0
    for message in planned[start : start + _BATCH_MESSAGES]:
        size += len(message.data) + 200
        if chunk and size > _BATCH_BYTES:
            break
        chunk.append(message)
    return chunk
