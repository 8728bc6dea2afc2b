"""Writing to the stream: compare-and-set plans, message ids, atomic batches, trimming."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from projctl import events
from projctl.backend import (
    Change,
    Create,
    Delete,
    Emit,
    Update,
    Write,
    check_write,
    create_fields,
    same_name,
    write_fingerprint,
)
from projctl.errors import (
    CorruptDatabaseError,
    IdempotencyKeyReusedError,
    PreconditionFailedError,
    ProjectNotFoundError,
    ServerError,
    ServerUnavailableError,
    StoreError,
)
from projctl.events import Event, format_timestamp, utc_now
from projctl.jetstream._connection import (
    _BATCH_DUPLICATE,
    _CREATED,
    _EXPECT,
    _EXPECT_SUBJECT,
    _FINGERPRINT,
    _MAX_ATTEMPTS,
    _MSG_ID,
    _REQUEST_TIMEOUT,
    _UNAVAILABLE,
    _WRONG_LAST_SEQUENCE,
    _WRONG_LAST_SEQUENCE_CONSTANT,
    _BatchDuplicate,
    _Conflict,
    _Session,
)
from projctl.jetstream._reads import StreamReads, _by_reference, _msg_number, _Record, _written_by
from projctl.model import Project, next_project_id, parse_project_id, validate_fields

__all__ = ["StreamWrites"]

#: JetStream's answer to a message id whose earlier copy is still being replicated.
_DUPLICATE_IN_PROCESS = 10158


@dataclass(frozen=True)
class _Ack:
    seq: int
    duplicate: bool


@dataclass
class _Plan:
    """Messages to publish and how their ack becomes the result."""

    messages: list[tuple[str, bytes, dict[str, str]]]
    result: Callable[[int], list[Change]]


class StreamWrites(StreamReads):
    """Writes to the stream (see the package docstring)."""

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        """See :meth:`projctl.backend.Backend.commit`; the module docstring says how."""
        check_write(write)

        sessions: list[_Session] = []

        async def work(s: _Session) -> list[Change]:
            sessions.append(s)
            return await self._commit(s, write, idempotency_key)

        try:
            return self._run(work)
        except ServerUnavailableError as error:
            raise self._unconfirmed(error, sessions, idempotency_key) from None

    def _unconfirmed(
        self, error: ServerUnavailableError, sessions: list[_Session], key: str | None
    ) -> ServerUnavailableError:
        """What a write that got no answer says: nothing was written, or (a message was sent
        and never answered: the leader may have stored it and a returning node may still
        commit it, as in any Raft system) that the outcome is unknown, and how to retry."""
        extra = sessions[0].extra if sessions else {}
        if not (extra.get("in_doubt") or extra.get("sending")):
            return ServerUnavailableError(f"{error}: nothing was written")
        said = (
            f"the NATS cluster at {self._display} did not confirm the write within "
            f"{self.timeout:g}s: its outcome is unknown (it may still be committed when the "
            "cluster recovers); "
        )
        if key is not None:
            return ServerUnavailableError(
                said + "running it again with the same --idempotency-key is safe: it is "
                "applied once"
            )
        return ServerUnavailableError(
            said + "check before running it again (with --idempotency-key KEY, running it "
            "again with the same key is safe)"
        )

    async def _commit(self, s: _Session, write: Write, key: str | None) -> list[Change]:
        token = key if key is not None else secrets.token_hex(16)
        fingerprint = write_fingerprint(write) if key is not None else ""
        await self._ensure_stream(s)
        seen_duplicate = False
        for _attempt in range(_MAX_ATTEMPTS):
            plan = await self._plan(s, write, token, key, fingerprint, seen_duplicate)
            if isinstance(plan, list):
                return plan
            headers = [
                {**extra, _MSG_ID: f"{token}:{number}"}
                | ({_FINGERPRINT: fingerprint} if fingerprint else {})
                for number, (_subject, _data, extra) in enumerate(plan.messages)
            ]
            messages = [
                (subject, data, header)
                for (subject, data, _extra), header in zip(plan.messages, headers, strict=True)
            ]
            try:
                ack = await self._publish(s, messages)
            except _Conflict:
                continue
            except _BatchDuplicate:
                seen_duplicate = True
                continue
            if ack.duplicate:
                return await self._replay(s, ack.seq, key, fingerprint)
            changes = plan.result(ack.seq)
            await self._trim_after(s, ack.seq, len(messages))
            return changes
        raise ServerError(
            f"gave up after {_MAX_ATTEMPTS} attempts: the projects kept changing under this write"
        )

    async def _plan(
        self,
        s: _Session,
        write: Write,
        token: str,
        key: str | None,
        fingerprint: str,
        seen_duplicate: bool,
    ) -> _Plan | list[Change]:
        if isinstance(write, Create):
            return await self._plan_create(s, write)
        if isinstance(write, Update):
            return await self._plan_update(s, write)
        if isinstance(write, Emit):
            return await self._plan_emit(s, write)
        assert isinstance(write, Delete)
        return await self._plan_delete(s, write, token, key, fingerprint, seen_duplicate)

    async def _plan_create(self, s: _Session, write: Create) -> _Plan:
        fields = create_fields(write)
        others = await self._refused_names(s, write.unique, fields["name"])
        now = utc_now()
        timestamp = format_timestamp(now)
        second = now.strftime("proj_%Y%m%d_%H%M%S")
        second_ids = f"{self.prefix}.project.{second}.*"
        info = await self._api(s, lambda: s.js.stream_info(self.stream, subjects_filter=second_ids))
        taken = {
            (second if number == "1" else f"{second}_{number}")
            for subject in (info.state.subjects or {})
            for number in [subject.rsplit(".", 1)[-1]]
        }
        last = max(taken, key=lambda taken_id: parse_project_id(taken_id) or ("", 0), default=None)
        project_id = next_project_id(now, is_taken=taken.__contains__, last_issued=last)
        project = Project(
            project_id=project_id, created_at=timestamp, updated_at=timestamp, **fields
        )
        record = project.to_dict()
        event = events.project_created(record, seq=0, timestamp=timestamp)
        subject = self._subject("project", project_id)
        assert subject is not None
        data = _payload(event)

        def result(seq: int) -> list[Change]:
            return [Change(project, {**event, "seq": seq}, same_name=others)]

        return _Plan([(subject, data, {_EXPECT: "0"})], result)

    async def _plan_update(self, s: _Session, write: Update) -> _Plan | list[Change]:
        wanted = validate_fields(write.changes)
        before = await self._live(s, write.project_id)
        assert before.project is not None
        _check_version(before.project, write.if_match)
        current = before.project.to_dict()
        updated_fields = [name for name, value in wanted.items() if current[name] != value]
        if not updated_fields:
            return [Change(before.project, None)]
        others: tuple[str, ...] = ()
        if "name" in updated_fields:
            others = await self._refused_names(s, write.unique, wanted["name"], before.project_id)
        timestamp = format_timestamp(utc_now())
        record = {**current, **wanted, "updated_at": timestamp}
        after = Project.from_dict(record)
        event = events.project_updated(record, updated_fields, seq=0, timestamp=timestamp)
        headers = {_EXPECT: str(before.seq), _CREATED: str(before.created_seq)}

        def result(seq: int) -> list[Change]:
            return [Change(after, {**event, "seq": seq}, tuple(updated_fields), same_name=others)]

        return _Plan([(before.subject, _payload(event), headers)], result)

    async def _refused_names(
        self, s: _Session, unique: bool, name: str, besides: str | None = None
    ) -> tuple[str, ...]:
        """With ``unique``, :func:`~projctl.backend.same_name` over every live project: none
        may have ``name``. Without it nothing is read and nothing reported: a stream has no
        index of names, and reading every project would make each create cost a list. The
        check is made on the projects as this attempt reads them: a create racing this one
        with the same name may pass too (no transaction spans subjects)."""
        if not unique:
            return ()
        records = await self._records(s)
        names = [(r.project_id, r.name) for r in records if r.project is not None]
        return same_name(name, names, unique=True, besides=besides)

    async def _plan_emit(self, s: _Session, write: Emit) -> _Plan:
        kind = events.validate_event_type(write.event_type)
        extra = events.validate_emit_data(write.data)
        target = await self._live(s, write.project_id)
        project = target.project
        assert project is not None
        event = events.emitted(
            project.to_dict(), kind, extra, seq=0, timestamp=format_timestamp(utc_now())
        )
        subject = self._subject("emit", project.project_id)
        assert subject is not None
        # The project must still be as read (not deleted) when the event is stored.
        headers = {_EXPECT: str(target.seq), _EXPECT_SUBJECT: target.subject}

        def result(seq: int) -> list[Change]:
            return [Change(project, {**event, "seq": seq})]

        return _Plan([(subject, _payload(event, project), headers)], result)

    async def _plan_delete(
        self,
        s: _Session,
        write: Delete,
        token: str,
        key: str | None,
        fingerprint: str,
        seen_duplicate: bool,
    ) -> _Plan | list[Change]:
        live: dict[str, _Record] = {}
        replayed: dict[str, _Record] = {}
        every: list[_Record] | None = None
        for reference in write.project_ids:
            subject = self._subject("project", reference)
            record = None if subject is None else await self._last(s, subject)
            if record is None or (record.project is None and not _written_by(record, token)):
                # Not a live id: a unique name, or a tombstone this very write left.
                if every is None:
                    every = await self._records(s)
                record = _by_reference(every, reference, token)
            if record is None:
                if write.missing_ok:
                    continue
                raise ProjectNotFoundError(reference, looked_up_by="id or name")
            if record.project is None:
                replayed.setdefault(record.project_id, record)
            else:
                live.setdefault(record.project_id, record)
        if replayed:
            others = [r for r in replayed.values() if fingerprint and r.fingerprint != fingerprint]
            if live or others:
                raise IdempotencyKeyReusedError(key or token)
            ordered = sorted(replayed.values(), key=lambda record: _msg_number(record.msg_id))
            return [self._replayed_change(record, key is not None) for record in ordered]
        if seen_duplicate:
            # The stream has seen these message ids, yet no tombstone of this write exists:
            # the key was used for another write.
            raise IdempotencyKeyReusedError(key or token)
        for record in live.values():
            assert record.project is not None
            _check_version(record.project, write.if_match)
        if not live:
            return []
        timestamp = format_timestamp(utc_now())
        found = list(live.values())
        planned = []
        messages = []
        for record in found:
            assert record.project is not None
            event = events.project_deleted(record.project.to_dict(), seq=0, timestamp=timestamp)
            planned.append((record.project, event))
            headers = {_EXPECT: str(record.seq), _CREATED: str(record.created_seq)}
            messages.append((record.subject, _payload(event, record.project), headers))

        def result(last_seq: int) -> list[Change]:
            first = last_seq - len(planned) + 1
            return [
                Change(project, {**event, "seq": first + number})
                for number, (project, event) in enumerate(planned)
            ]

        return _Plan(messages, result)

    def _replayed_change(self, record: _Record, replayed: bool) -> Change:
        event, payload = self._decode(record.seq, orjson.dumps(record.payload))
        return self._change_of(event, payload, record.seq, replayed)

    def _change_of(
        self, event: Event, payload: Mapping[str, Any], seq: int, replayed: bool
    ) -> Change:
        data = dict(event["data"])
        try:
            if event["event_type"] in ("project_created", "project_updated"):
                fields = tuple(str(name) for name in data.pop("updated_fields", ()))
                return Change(Project.from_dict(data), event, fields, replayed=replayed)
            return Change(Project.from_dict(payload["project"]), event, replayed=replayed)
        except (KeyError, TypeError) as error:
            raise CorruptDatabaseError(
                f"stream {self.stream} holds a malformed event at seq {seq} ({error})"
            ) from None

    async def _replay(
        self, s: _Session, seq: int, key: str | None, fingerprint: str
    ) -> list[Change]:
        """The first result of a write whose message id the stream had seen (stored at
        ``seq``)."""
        from nats.js.errors import NotFoundError

        try:
            message = await self._api(s, lambda: s.js.get_msg(self.stream, seq=seq))
        except NotFoundError:
            raise StoreError(
                f"the write under this idempotency key was committed at seq {seq}, which the "
                "stream no longer keeps: nothing was written"
            ) from None
        headers = message.headers or {}
        if key is not None and headers.get(_FINGERPRINT) != fingerprint:
            raise IdempotencyKeyReusedError(key)
        event, payload = self._decode(seq, message.data)
        return [self._change_of(event, payload, seq, key is not None)]

    async def _publish(
        self, s: _Session, messages: list[tuple[str, bytes, dict[str, str]]]
    ) -> _Ack:
        """Publish one message, or several as one atomic batch; retry a lost reply or an
        unavailable stream with the same message ids until the deadline."""
        import nats.errors

        pause = 0.05
        while True:
            batch = {"Nats-Batch-Id": secrets.token_hex(12)} if len(messages) > 1 else {}
            # Until an answer comes, the leader may have stored what was sent (see _unconfirmed).
            s.extra["sending"] = True
            try:
                for number, (subject, data, headers) in enumerate(messages[:-1], start=1):
                    await s.nc.publish(
                        subject,
                        data,
                        headers={**headers, **batch, "Nats-Batch-Sequence": str(number)},
                    )
                subject, data, headers = messages[-1]
                if batch:
                    headers = {
                        **headers,
                        **batch,
                        "Nats-Batch-Sequence": str(len(messages)),
                        "Nats-Batch-Commit": "1",
                    }
                reply = await s.nc.request(
                    subject, data, headers=headers, timeout=s.left(_REQUEST_TIMEOUT)
                )
            except nats.errors.NoRespondersError:
                s.extra["sending"] = False  # nobody took it: a leader is being elected
            except (
                nats.errors.TimeoutError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.StaleConnectionError,
            ):
                # A lost reply: the same ids again are applied once. Until an answer says
                # otherwise, this write may be stored.
                s.extra["sending"] = False
                s.extra["in_doubt"] = True
            else:
                s.extra["sending"] = False
                answer = _json(reply.data)
                error = answer.get("error")
                if not isinstance(error, dict):
                    return _Ack(int(answer.get("seq", 0)), bool(answer.get("duplicate")))
                code = error.get("err_code")
                if code in (_WRONG_LAST_SEQUENCE, _WRONG_LAST_SEQUENCE_CONSTANT):
                    raise _Conflict
                if code == _BATCH_DUPLICATE:
                    raise _BatchDuplicate
                if code == _DUPLICATE_IN_PROCESS:
                    # An earlier try is proposed and not yet committed (or lost): ask again.
                    s.extra["in_doubt"] = True
                elif error.get("code") != 503 and code != _UNAVAILABLE:
                    raise ServerError(
                        f"JetStream refused the write at {self._display}: "
                        f"{error.get('description', 'no reason given')}"
                    )
            if time.monotonic() + pause >= s.deadline:
                raise self._no_answer()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _trim_after(self, s: _Session, last_seq: int, count: int) -> None:
        """Every ``limit`` events, purge what fell out of the window and is not needed (see
        the module docstring). Best effort: a failed purge is retried at the next round."""
        limit = s.limit or self.journal_limit
        if last_seq // limit == (last_seq - count) // limit:
            return
        cutoff = last_seq - limit
        if cutoff < 1:
            return
        with contextlib.suppress(Exception):
            await s.js.purge_stream(self.stream, seq=cutoff + 1, subject=f"{self.prefix}.emit.>")
            info = await s.js.stream_info(self.stream, subjects_filter=f"{self.prefix}.project.>")
            for subject, count_on_subject in (info.state.subjects or {}).items():
                if count_on_subject < 2 or time.monotonic() >= s.deadline - 1:
                    continue
                last = await self._last(s, subject)
                if last is not None and min(cutoff + 1, last.seq) > 1:
                    await s.js.purge_stream(
                        self.stream, seq=min(cutoff + 1, last.seq), subject=subject
                    )


def _payload(event: Event, project: Project | None = None) -> bytes:
    """A message's payload: the event without its seq (the stream assigns it), and the
    project as it was for a deletion or an emitted event."""
    body: dict[str, Any] = {
        "event_type": event["event_type"],
        "timestamp": event["timestamp"],
        "data": event["data"],
    }
    if project is not None:
        body["project"] = project.to_dict()
    return orjson.dumps(body)


def _json(data: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise ServerError("JetStream sent an acknowledgement that is not a JSON object")
    return answer


def _check_version(project: Project, if_match: str | None) -> None:
    if if_match is not None and if_match != "*" and if_match != project.version_tag:
        raise PreconditionFailedError(
            f"project {project.project_id} changed since version {if_match}; "
            f"it is now {project.version_tag}: nothing was written"
        )
