"""The NATS JetStream backend: one replicated stream is the journal and the current state.

Selected by a database location ``nats://HOST:PORT[,HOST:PORT...]/NAME`` (``tls://`` for
TLS); ``projctl.config`` parses it. nats-py is an optional extra (``projctl[nats]``) and is
imported here only.

**The stream.** Database ``NAME`` is the stream ``PROJCTL_NAME`` (created on the first write:
file storage, replicas ``min(3, cluster size)`` or ``?replicas=N``, atomic batches allowed)
holding the subjects ``projctl.NAME.>``. Every message in it is one event, so the stream
sequence *is* the event's ``seq``: assigned by the stream's leader, strictly increasing and
the same for every reader. The payload is the event without ``seq`` (and, for a deletion or
an emitted event, the project as it was, so that a replay can answer with it):

``projctl.NAME.project.<second>.<n>``
    the lifecycle events of project ``proj_<second>[_<n>]`` (``n`` is 1 for no suffix). The
    *last message on this subject is the project's current state*: a ``project_created`` or
    ``project_updated`` carries the whole record, a ``project_deleted`` is its tombstone.
``projctl.NAME.emit.<second>.<n>``
    the events emitted about that project.

**Reads.** ``get`` is a "last message by subject" read on the leader; ``list`` reads the last
message of every project subject (a ``last_per_subject`` consumer, checked against the
leader's newest project message so a lagging replica is never taken for the truth), in
creation order (the ``Projctl-Created`` header carries the creation seq). ``journal`` and the
follower replay the stream from a sequence.

**Writes** are compare-and-set: ``Nats-Expected-Last-Subject-Sequence`` on the project's
subject. A create expects 0 on its id's subject, so an id is never issued twice (the next
free suffix of the second is read first; a loser of a race takes the next); an update or a
delete expects the sequence it read, so a concurrent change makes it read again (an
``If-Match`` is then checked against what it finds); an emitted event expects the project's
sequence through ``Nats-Expected-Last-Subject-Sequence-Subject``. Deleting several is one
*atomic batch* (``Nats-Batch-Id``/``-Sequence``/``-Commit``, server 2.12+; nats-py has no call
for it, so the headers are sent here): all the tombstones, each with its own expectation, are
stored together or not at all.

**Exactly once.** Every message carries ``Nats-Msg-Id: <key>:<i>``: the caller's idempotency
key, or a fresh one per write. A reply lost to a timeout or a leader failover is retried
with the same ids, and the stream applies it once: within the stream's duplicate window
(:data:`DUPLICATE_WINDOW`, one hour) its ack says ``duplicate`` with the first seq, and the
first result is read back from that message. The write's fingerprint travels in the
``Projctl-Fingerprint`` header: the same key with another write raises
:class:`~projctl.errors.IdempotencyKeyReusedError`. A deletion is recognised for as long as
its tombstone is kept (forever), past the window too; a create, update or emit only within it.

**Trimming.** The journal window (``PROJCTL_JOURNAL_LIMIT`` when the stream is created, kept
in its metadata) is the last ``limit`` seqs: ``journal`` shows them and a follower resuming
from before them gets a ``resync`` with every project. Every ``limit`` events a writer purges
what fell out of the window *and is no longer needed*: emitted events, and the messages of a
project's subject older than its last. The last message of every subject stays, so current
state survives any window, and tombstones keep deleted ids from being issued again.

Calls are synchronous: each runs on a private event loop with its own connection, bounded by
the location's ``timeout`` (default 10 s); an unreachable cluster is a
:class:`~projctl.errors.ServerUnavailableError`. :meth:`JetStreamBackend.follow` is the one
asynchronous method: it runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import orjson

from projctl import events
from projctl.backend import Change, Create, Delete, Emit, Update, Write, write_fingerprint
from projctl.errors import (
    AmbiguousReferenceError,
    CorruptDatabaseError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    PreconditionFailedError,
    ProjectNotFoundError,
    ServerError,
    ServerUnavailableError,
    StoreError,
)
from projctl.events import Event, format_timestamp, utc_now
from projctl.model import Project, next_project_id, parse_project_id, validate_fields

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ["DUPLICATE_WINDOW", "INSTALL_HINT", "JetStreamBackend", "nats_available"]

#: How long the stream remembers a ``Nats-Msg-Id``: a retry within it is applied once.
DUPLICATE_WINDOW = 3600.0
#: What to install for a ``nats://`` database.
INSTALL_HINT = "pip install 'projctl[nats]'"
#: How many times a write is tried again after losing a compare-and-set race.
_MAX_ATTEMPTS = 200
_FINGERPRINT = "Projctl-Fingerprint"
_CREATED = "Projctl-Created"
_MSG_ID = "Nats-Msg-Id"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_EXPECT_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
#: JetStream's error codes this backend acts on.
_WRONG_LAST_SEQUENCE = 10071
#: The same, said by a new leader that cannot yet tell which sequence was expected.
_WRONG_LAST_SEQUENCE_CONSTANT = 10164
_BATCH_DUPLICATE = 10201
_STREAM_NOT_FOUND = 10059
_NO_MESSAGE = 10037
_STREAM_IN_USE = 10058
_INSUFFICIENT_RESOURCES = 10023
_NOT_CLUSTERED = 10074
_UNAVAILABLE = 10008
#: How long one request waits for its answer before it is asked again (a leader that died
#: never answers; the next request reaches the one elected after it).
_REQUEST_TIMEOUT = 2.0

_T = TypeVar("_T")


def nats_available() -> bool:
    """Whether nats-py is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("nats") is not None


class _Conflict(Exception):
    """A compare-and-set lost: the subject moved since it was read."""


class _BatchDuplicate(Exception):
    """An atomic batch holds a message id the stream has seen."""


@dataclass(frozen=True)
class _Ack:
    seq: int
    duplicate: bool


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


@dataclass
class _Plan:
    """Messages to publish and how their ack becomes the result."""

    messages: list[tuple[str, bytes, dict[str, str]]]
    result: Callable[[int], list[Change]]


@dataclass
class _Session:
    nc: Client
    js: JetStreamContext
    deadline: float
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def left(self, most: float = 10.0) -> float:
        """Seconds to the deadline (at least a little, at most ``most``)."""
        return max(0.05, min(most, self.deadline - time.monotonic()))


class JetStreamBackend:
    """A database in a NATS JetStream stream, as a :class:`projctl.backend.Backend`.

    ``servers`` are ``nats://`` (or ``tls://``) URLs without credentials; ``name`` is the
    database's name. Credentials (``user``/``password``, ``token`` or a ``creds_file``)
    are never shown in :attr:`location` or any message. ``journal_limit`` applies when this
    backend creates the stream; ``replicas`` ``None`` means ``min(3, cluster size)``.
    """

    def __init__(
        self,
        *,
        servers: Sequence[str],
        name: str,
        display: str,
        source: str = "--db",
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds_file: str | None = None,
        ca_file: str | None = None,
        tls: bool = False,
        replicas: int | None = None,
        timeout: float = 10.0,
        journal_limit: int = 1000,
    ) -> None:
        self.servers = tuple(servers)
        self.name = name
        self.stream = f"PROJCTL_{name}"
        self.prefix = f"projctl.{name}"
        self._display = display
        self.source = source
        self._auth = {"user": user, "password": password, "token": token}
        self._creds_file = creds_file
        self._ca_file = ca_file
        self._tls = tls
        self.replicas = replicas
        self.timeout = timeout
        self.journal_limit = journal_limit

    def __repr__(self) -> str:
        return f"<projctl.jetstream.JetStreamBackend {self._display!r}>"

    @property
    def location(self) -> str:
        """The location without credentials: ``nats://HOST:PORT,.../NAME``."""
        return self._display

    # -- running a call ------------------------------------------------------------------

    def _run(self, work: Callable[[_Session], Awaitable[_T]]) -> _T:
        """Run ``work`` with a fresh connection on a private event loop, within the timeout.

        Called from a thread whose loop is running (async code calling the synchronous
        API), the loop runs in a helper thread instead: one cannot nest in another.
        """
        coroutine = self._session(work)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = asyncio.run(coroutine)
            except BaseException as error:  # handed to the caller's thread
                box["error"] = error

        helper = threading.Thread(target=run, name="projctl-jetstream", daemon=True)
        helper.start()
        helper.join(self.timeout + 5)
        if "error" in box:
            raise box["error"]
        if "value" not in box:
            raise self._no_answer()
        value: _T = box["value"]
        return value

    async def _session(self, work: Callable[[_Session], Awaitable[_T]]) -> _T:
        deadline = time.monotonic() + self.timeout
        try:
            return await asyncio.wait_for(self._connected(work, deadline), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._no_answer() from None

    async def _connected(self, work: Callable[[_Session], Awaitable[_T]], deadline: float) -> _T:
        nc = await self._connect()
        try:
            session = _Session(nc, nc.jetstream(timeout=_REQUEST_TIMEOUT), deadline)
            return await work(session)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    def _no_answer(self) -> ServerError:
        return ServerUnavailableError(
            f"the NATS cluster at {self._display} did not answer within {self.timeout:g}s"
        )

    async def _connect(self) -> Client:
        import nats
        import nats.errors

        async def quiet(*_args: Any) -> None:
            # nats-py logs connection trouble by default; the caller reports what matters.
            return None

        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": "projctl",
            "connect_timeout": max(1, min(5, int(self.timeout))),
            "allow_reconnect": True,
            "max_reconnect_attempts": 5,
            "reconnect_time_wait": 0.2,
            "error_cb": quiet,
            "disconnected_cb": quiet,
            "reconnected_cb": quiet,
            "closed_cb": quiet,
        }
        options.update({key: value for key, value in self._auth.items() if value is not None})
        if self._creds_file is not None:
            options["user_credentials"] = self._creds_file
        if self._tls:
            options["tls"] = ssl.create_default_context(cafile=self._ca_file)
        try:
            return await nats.connect(**options)
        except (OSError, nats.errors.Error, ssl.SSLError) as error:
            reason = str(error) or type(error).__name__
            raise ServerUnavailableError(
                f"cannot reach the NATS cluster at {self._display}: {reason}"
            ) from None

    # -- the stream ----------------------------------------------------------------------

    async def _stream_info(self, s: _Session) -> Any | None:
        """The stream's info, ``None`` when there is no stream yet."""
        from nats.js.errors import NotFoundError

        try:
            info = await self._api(s, lambda: s.js.stream_info(self.stream))
        except NotFoundError:
            return None
        s.limit = self._limit_of(info)
        return info

    def _limit_of(self, info: Any) -> int:
        metadata = info.config.metadata or {}
        try:
            return max(1, int(metadata.get("projctl.journal_limit", self.journal_limit)))
        except (TypeError, ValueError):
            return self.journal_limit

    async def _ensure_stream(self, s: _Session) -> Any:
        """The stream's info, the stream created first when there is none."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError

        info = await self._stream_info(s)
        if info is not None:
            return info
        choices = [self.replicas] if self.replicas is not None else [3, 2, 1]
        for replicas in choices:
            config = StreamConfig(
                name=self.stream,
                description=f"projctl database {self.name}",
                subjects=[f"{self.prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=DUPLICATE_WINDOW,
                allow_atomic=True,
                deny_delete=True,
                metadata={
                    "projctl.format": "1",
                    "projctl.journal_limit": str(self.journal_limit),
                    "projctl.database_id": secrets.token_hex(8),
                },
            )
            try:
                info = await self._api(s, functools.partial(s.js.add_stream, config))
            except APIError as error:
                if error.err_code == _STREAM_IN_USE:  # another client made it first
                    break
                if self.replicas is None and error.err_code in (
                    _INSUFFICIENT_RESOURCES,
                    _NOT_CLUSTERED,
                ):
                    continue
                raise self._refused(error) from None
            s.limit = self._limit_of(info)
            return info
        info = await self._stream_info(s)
        if info is None:
            raise ServerError(f"the NATS cluster at {self._display} cannot hold the stream")
        return info

    async def _api(self, s: _Session, call: Callable[[], Awaitable[_T]]) -> _T:
        """One JetStream API call, asked again while JetStream cannot answer yet (no
        responders, a stream or meta leader being elected: 503) until the deadline."""
        import nats.errors
        from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

        pause = 0.02
        while True:
            try:
                return await call()
            except (
                nats.errors.NoRespondersError,
                NoStreamResponseError,
                ServiceUnavailableError,
                nats.errors.TimeoutError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.StaleConnectionError,
            ) as error:
                if time.monotonic() + pause >= s.deadline:
                    raise ServerUnavailableError(
                        f"JetStream does not answer at {self._display} "
                        f"({type(error).__name__}; is it enabled?)"
                    ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _refused(self, error: Any) -> ServerError:
        description = getattr(error, "description", None) or str(error)
        return ServerError(f"JetStream refused at {self._display}: {description}")

    # -- reading messages ----------------------------------------------------------------

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
        from nats.js.errors import NotFoundError

        name = f"projctl_{secrets.token_hex(8)}"
        config = ConsumerConfig(
            name=name,
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
            info = await self._api(s, lambda: s.js.add_consumer(self.stream, config))
        except NotFoundError:
            return []
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
                        except nats.errors.TimeoutError:
                            break  # what arrived; the caller checks it is complete
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

    # -- the Backend protocol: reads -----------------------------------------------------

    def identity(self) -> str:
        async def work(s: _Session) -> str:
            info = await self._stream_info(s)
            if info is None or not info.state.last_seq:
                return ""
            metadata = info.config.metadata or {}
            return str(metadata.get("projctl.database_id") or f"{self.stream}@{info.created}")

        return self._run(work)

    def get(self, project_id: str) -> Project:
        async def work(s: _Session) -> Project:
            subject = self._subject("project", project_id)
            record = None if subject is None else await self._last(s, subject)
            if record is None or record.project is None:
                raise ProjectNotFoundError(project_id)
            return record.project

        return self._run(work)

    def list_projects(
        self, *, status: str | None = None, type: str | None = None, owner_id: str | None = None
    ) -> list[Project]:
        wanted = {"status": status, "type": type, "owner_id": owner_id}

        async def work(s: _Session) -> list[Project]:
            found = []
            for record in await self._records(s):
                project = record.project
                if project is None:
                    continue
                values = project.to_dict()
                if all(value is None or values[key] == value for key, value in wanted.items()):
                    found.append(project)
            return found

        return self._run(work)

    def resolve(self, reference: str) -> str:
        async def work(s: _Session) -> str:
            return (await self._live(s, reference)).project_id

        return self._run(work)

    def journal(self, after: int = 0) -> list[Event]:
        async def work(s: _Session) -> list[Event]:
            return await self._journal(s, after)

        return self._run(work)

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

    def latest_seq(self) -> int:
        async def work(s: _Session) -> int:
            info = await self._stream_info(s)
            return 0 if info is None else int(info.state.last_seq)

        return self._run(work)

    def info(self) -> dict[str, Any]:
        async def work(s: _Session) -> dict[str, Any]:
            info = await self._stream_info(s)
            records = await self._records(s) if info is not None else []
            latest = 0 if info is None else int(info.state.last_seq)
            limit = s.limit if s.limit is not None else self.journal_limit
            metadata = info.config.metadata or {} if info is not None else {}
            cluster = getattr(info, "cluster", None)
            return {
                "database": {
                    "url": self._display,
                    "source": self.source,
                    "backend": "jetstream",
                    "stream": self.stream,
                    "exists": info is not None,
                    "id": str(metadata.get("projctl.database_id", "")) if latest else "",
                    "replicas": None if info is None else info.config.num_replicas,
                    "leader": None if cluster is None else cluster.leader,
                },
                "projects": sum(1 for record in records if record.project is not None),
                "latest_seq": latest,
                "journal": {"events": min(latest, limit), "limit": limit},
                "server": {
                    "running": False,
                    "answering": None,
                    "url": None,
                    "pid": None,
                    "subscribers": None,
                },
            }

        return self._run(work)

    def feed(self, *, start: bool = True, deadline: float | None = None) -> NoReturn:
        raise ServerError(
            f"{self._display} has no broadcast server to follow: a JetStream database is "
            "followed from the stream itself (projctl watch, Database.subscribe)"
        )

    # -- the Backend protocol: writes ----------------------------------------------------

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        """See :meth:`projctl.backend.Backend.commit`; the module docstring says how."""
        if isinstance(write, Update):
            if not write.changes:
                raise InvalidInputError("nothing to update: give at least one field to change")
            validate_fields(write.changes)
        elif isinstance(write, Emit):
            events.validate_event_type(write.event_type)
            events.validate_emit_data(write.data)
        elif isinstance(write, Create):
            validate_fields(
                {
                    "name": write.name,
                    "type": write.type,
                    "status": write.status,
                    "owner_id": write.owner_id,
                    "description": write.description,
                }
            )
        elif not isinstance(write, Delete):
            raise InvalidInputError(f"this database cannot commit {type(write).__name__}")

        async def work(s: _Session) -> list[Change]:
            return await self._commit(s, write, idempotency_key)

        return self._run(work)

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
            project_id=project_id,
            name=write.name,
            type=write.type,
            status=write.status,
            owner_id=write.owner_id,
            description=write.description,
            created_at=timestamp,
            updated_at=timestamp,
        )
        record = project.to_dict()
        event = events.project_created(record, seq=0, timestamp=timestamp)
        subject = self._subject("project", project_id)
        assert subject is not None
        data = _payload(event)

        def result(seq: int) -> list[Change]:
            return [Change(project, {**event, "seq": seq})]

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
        timestamp = format_timestamp(utc_now())
        record = {**current, **wanted, "updated_at": timestamp}
        after = Project.from_dict(record)
        event = events.project_updated(record, updated_fields, seq=0, timestamp=timestamp)
        headers = {_EXPECT: str(before.seq), _CREATED: str(before.created_seq)}

        def result(seq: int) -> list[Change]:
            return [Change(after, {**event, "seq": seq}, tuple(updated_fields))]

        return _Plan([(before.subject, _payload(event), headers)], result)

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
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.StaleConnectionError,
            ):
                pass  # a lost reply or a leader election: the same ids again are applied once
            else:
                answer = _json(reply.data)
                error = answer.get("error")
                if not isinstance(error, dict):
                    return _Ack(int(answer.get("seq", 0)), bool(answer.get("duplicate")))
                code = error.get("err_code")
                if code in (_WRONG_LAST_SEQUENCE, _WRONG_LAST_SEQUENCE_CONSTANT):
                    raise _Conflict
                if code == _BATCH_DUPLICATE:
                    raise _BatchDuplicate
                if error.get("code") != 503 and code != _UNAVAILABLE:
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

    # -- following ----------------------------------------------------------------------

    async def follow(
        self, *, since: int | None = None, snapshot: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every event from the stream, as the feed sends it, in ``seq`` order, forever.

        ``since=N`` replays the events after ``N`` first (a ``resync`` with every project
        instead when they have left the window); ``snapshot`` starts with a ``snapshot``
        message; neither: only what happens from now on. Runs on the caller's event loop
        with its own connection (nats-py reconnects by itself, and its ordered consumer
        resumes after the last sequence delivered).
        """
        from nats.js.api import ConsumerConfig, DeliverPolicy

        nc = await self._connect()
        subscription = None
        try:
            s = _Session(nc, nc.jetstream(timeout=_REQUEST_TIMEOUT), float("inf"))
            while await self._stream_info(s) is None:
                await asyncio.sleep(0.25)  # a database nobody has written to yet
            latest, first = await self._window(s)
            if snapshot or (since is not None and since + 1 < first):
                yield await self._projects_message(s, "snapshot" if snapshot else "resync", latest)
                start = latest + 1
            else:
                start = latest + 1 if since is None else since + 1
            subscription = await s.js.subscribe(
                f"{self.prefix}.>",
                stream=self.stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=start),
            )
            expected = start
            while True:
                try:
                    message = await subscription.next_msg(timeout=None)
                except asyncio.TimeoutError:
                    continue
                seq = message.metadata.sequence.stream
                if seq < expected:
                    continue
                if seq > expected:
                    # Purged before it was read: the events in between left the window.
                    latest, _first = await self._window(s)
                    yield await self._projects_message(s, "resync", latest)
                    expected = latest + 1
                    if seq < expected:
                        continue
                event, _payload = self._decode(seq, message.data)
                expected = seq + 1
                yield dict(event)
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await nc.close()

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


def _check_version(project: Project, if_match: str | None) -> None:
    if if_match is not None and if_match != "*" and if_match != project.version_tag:
        raise PreconditionFailedError(
            f"project {project.project_id} changed since version {if_match}; "
            f"it is now {project.version_tag}: nothing was written"
        )
