"""Reading the stream: one subject's last message, every project's last message, the journal."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from projctl import events
from projctl.errors import (
    AmbiguousReferenceError,
    CorruptDatabaseError,
    ProjectNotFoundError,
)
from projctl.events import Event, format_timestamp, utc_now
from projctl.jetstream._connection import (
    _CREATED,
    _FINGERPRINT,
    _MSG_ID,
    _REQUEST_TIMEOUT,
    StreamConnection,
    _Session,
)
from projctl.model import Project, parse_project_id

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["StreamReads"]


@dataclass(frozen=True)
class _Record:
    """The last message of one project subject: the project (``None`` for a tombstone)."""

    subject: str
    seq: int
    created_seq: int
    project_id: str
    name: str
    project: Project | None
    msg_id: str
    fingerprint: str
    payload: dict[str, Any]


class StreamReads(StreamConnection):
    """Reads of the stream, on a :class:`_Session`."""

    def _subject(self, kind: str, project_id: str) -> str | None:
        parsed = parse_project_id(project_id)
        if parsed is None:
            return None
        return f"{self.prefix}.{kind}.{parsed[0]}.{parsed[1]}"

    def _decode(self, seq: int, data: bytes | None) -> tuple[Event, dict[str, Any]]:
        """The event stored at ``seq`` and its payload; :class:`CorruptDatabaseError` for a
        message that is not one (another program may publish to the stream)."""
        try:
            payload = orjson.loads(data or b"")
            if not isinstance(payload, dict):
                raise events.EventDecodeError("not a JSON object")
            event = events.check_event(
                {
                    "event_type": payload.get("event_type"),
                    "timestamp": payload.get("timestamp"),
                    "seq": seq,
                    "data": payload.get("data"),
                }
            )
        except (orjson.JSONDecodeError, events.EventDecodeError) as error:
            raise CorruptDatabaseError(
                f"stream {self.stream} holds a malformed event at seq {seq} ({error})"
            ) from None
        return event, payload

    def _record(
        self, subject: str, seq: int, headers: Mapping[str, str] | None, data: bytes | None
    ) -> _Record:
        event, payload = self._decode(seq, data)
        headers = headers or {}
        record = dict(event["data"])
        project = None
        try:
            if event["event_type"] in ("project_created", "project_updated"):
                record.pop("updated_fields", None)
                project = Project.from_dict(record)
            project_id, name = str(record["project_id"]), str(record["name"])
        except (KeyError, TypeError) as error:
            raise CorruptDatabaseError(
                f"stream {self.stream} holds a malformed project at seq {seq} ({error})"
            ) from None
        try:
            created = int(headers.get(_CREATED, seq))
        except ValueError:
            created = seq
        return _Record(
            subject,
            seq,
            created,
            project_id,
            name,
            project,
            headers.get(_MSG_ID, ""),
            headers.get(_FINGERPRINT, ""),
            payload,
        )

    async def _last(self, s: _Session, subject: str) -> _Record | None:
        """The last message on ``subject`` (read on the stream's leader), ``None`` if none."""
        from nats.js.errors import NotFoundError

        try:
            message = await self._api(s, lambda: s.js.get_msg(self.stream, subject=subject))
        except NotFoundError:
            return None
        assert message.seq is not None
        return self._record(message.subject or subject, message.seq, message.headers, message.data)

    async def _consume(self, s: _Session, subject: str, *, start: int | None = None) -> list[Msg]:
        """Every message an ephemeral consumer delivers: the last per subject of ``subject``
        (``start`` ``None``), or all from seq ``start`` on, as counted when it was made."""
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError, ServiceUnavailableError

        names: list[str] = []

        def config() -> ConsumerConfig:
            # A new name for every try: a consumer is placed on one of the stream's nodes,
            # and asking again for the same one, placed on a node that just died (the
            # cluster does not know yet), would wait for that node until the deadline.
            names.append(f"projctl_{secrets.token_hex(8)}")
            return ConsumerConfig(
                name=names[-1],
                filter_subject=subject,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
                if start is None
                else DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=max(5.0, self.timeout),
            )

        try:
            info = await self._api(s, lambda: s.js.add_consumer(self.stream, config()))
        except NotFoundError:
            return []
        name = names[-1]
        pending = info.num_pending or 0
        messages: list[Msg] = []
        try:
            if pending:
                subscription = await s.js.pull_subscribe_bind(consumer=name, stream=self.stream)
                try:
                    while len(messages) < pending:
                        try:
                            messages += await subscription.fetch(
                                min(pending - len(messages), 1024),
                                timeout=s.left(_REQUEST_TIMEOUT),
                            )
                        except (
                            nats.errors.TimeoutError,
                            nats.errors.NoRespondersError,
                            ServiceUnavailableError,
                        ):
                            # What arrived (a replica may be catching up after a node
                            # returned: 503); the caller checks it is complete.
                            break
                finally:
                    await subscription.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await s.js.delete_consumer(self.stream, name)
        return messages

    async def _records(self, s: _Session) -> list[_Record]:
        """The last message of every project subject (tombstones too), in creation order."""
        from nats.js.errors import NotFoundError

        wildcard = f"{self.prefix}.project.>"
        try:
            newest = await self._api(s, lambda: s.js.get_msg(self.stream, subject=wildcard))
        except NotFoundError:
            return []
        while True:
            messages = await self._consume(s, wildcard)
            seqs = [message.metadata.sequence.stream for message in messages]
            # A consumer runs on any replica: one that lags would miss the newest change.
            if seqs and max(seqs) >= (newest.seq or 0):
                break
            if time.monotonic() >= s.deadline:
                raise self._no_answer()
            await asyncio.sleep(0.02)
        records = [
            self._record(
                message.subject, message.metadata.sequence.stream, message.headers, message.data
            )
            for message in messages
        ]
        records.sort(key=lambda record: (record.created_seq, record.seq))
        return records

    async def _live(self, s: _Session, reference: str) -> _Record:
        """The live project ``reference`` names: an exact id, else an exact unique name."""
        subject = self._subject("project", reference)
        if subject is not None:
            record = await self._last(s, subject)
            if record is not None and record.project is not None:
                return record
        named = [
            record
            for record in await self._records(s)
            if record.project is not None and record.name == reference
        ]
        if not named:
            raise ProjectNotFoundError(reference, looked_up_by="id or name")
        if len(named) > 1:
            raise AmbiguousReferenceError(
                f"{len(named)} projects are named {reference!r}: "
                f"{', '.join(record.project_id for record in named)}; give one of these ids"
            )
        return named[0]

    async def _journal(self, s: _Session, after: int) -> list[Event]:
        info = await self._stream_info(s)
        if info is None:
            return []
        latest = int(info.state.last_seq)
        assert s.limit is not None
        start = max(after, latest - s.limit, 0) + 1
        if start > latest:
            return []
        while True:
            messages = await self._consume(s, f"{self.prefix}.>", start=start)
            if messages and messages[-1].metadata.sequence.stream >= latest:
                break
            if time.monotonic() >= s.deadline:
                raise self._no_answer()
            await asyncio.sleep(0.02)  # a lagging replica: ask again
        return [
            self._decode(message.metadata.sequence.stream, message.data)[0]
            for message in messages
            if message.metadata.sequence.stream >= start
        ]

    async def _window(self, s: _Session) -> tuple[int, int]:
        """The latest seq and the first one the journal window keeps."""
        info = await self._stream_info(s)
        latest = 0 if info is None else int(info.state.last_seq)
        limit = s.limit or self.journal_limit
        return latest, max(1, latest - limit + 1)

    async def _projects_message(self, s: _Session, kind: str, seq: int) -> dict[str, Any]:
        projects = [record.project.to_dict() for record in await self._records(s) if record.project]
        encoded = events.projects_message(
            "resync" if kind == "resync" else "snapshot",
            projects,
            seq=seq,
            timestamp=format_timestamp(utc_now()),
        )
        message: dict[str, Any] = orjson.loads(encoded)
        return message


def _written_by(record: _Record, token: str) -> bool:
    prefix, _, number = record.msg_id.rpartition(":")
    return prefix == token and number.isdigit()


def _msg_number(msg_id: str) -> int:
    number = msg_id.rpartition(":")[2]
    return int(number) if number.isdigit() else 0


def _by_reference(records: list[_Record], reference: str, token: str) -> _Record | None:
    """The record ``reference`` names among ``records``: a live project by exact unique
    name, or a tombstone left by the write under ``token`` (by id or name)."""
    named = [r for r in records if r.project is not None and r.name == reference]
    if len(named) > 1:
        raise AmbiguousReferenceError(
            f"{len(named)} projects are named {reference!r}: "
            f"{', '.join(record.project_id for record in named)}; give one of these ids"
        )
    if named:
        return named[0]
    mine = [
        r
        for r in records
        if r.project is None and _written_by(r, token) and reference in (r.project_id, r.name)
    ]
    return mine[-1] if mine else None
