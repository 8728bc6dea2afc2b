"""The stream as a broadcast server's storage: what makes ``projctl serve --db nats://...``
a stateless gateway.

:class:`StreamGateway` is a :class:`~projctl.backend.ServedStorage` (writes go to the stream,
a read of the state is built from it) and a :class:`~projctl.backend.Follower` (the server
follows the stream instead of watching a file). Everything a gateway shows comes from the
stream, so any number of them show the same events with the same seqs, and a restarted
one loses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projctl import events
from projctl.backend import Change, FileVersion, StateRead, Write
from projctl.events import Event
from projctl.jetstream._backend import JetStreamBackend
from projctl.jetstream._connection import _Session

__all__ = ["StreamGateway"]


class StreamGateway:
    """A JetStream database served by a broadcast server: :class:`~projctl.backend.ServedStorage`
    and :class:`~projctl.backend.Follower` over ``backend``.

    It keeps its last read of the stream (every project and the journal window) in memory,
    so that the next one reads only what the stream gained since (see :meth:`read_state`).
    """

    def __init__(self, backend: JetStreamBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._kept: _Read | None = None

    def __repr__(self) -> str:
        return f"<projctl.jetstream.StreamGateway {self.backend.location!r}>"

    @property
    def path(self) -> Path:
        """A gateway has no file: the stream's name, for the server's reports."""
        return Path(self.backend.stream)

    @property
    def location(self) -> str:
        """The database's location without credentials."""
        return self.backend.location

    def commit(self, write: Write, *, idempotency_key: str | None = None) -> list[Change]:
        """Commit to the stream; the event comes back to every gateway through the stream."""
        return self.backend.commit(write, idempotency_key=idempotency_key)

    def file_version(self) -> FileVersion | None:
        """No file: every commit reaches the server through :meth:`follow`."""
        return None

    def follow(
        self, *, since: int | None = None, snapshot: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The stream's events (see :meth:`JetStreamBackend.follow`)."""
        return self.backend.follow(since=since, snapshot=snapshot)

    def read_state(self) -> StateRead:
        """One consistent read: the journal window and the projects as of its last seq.

        Incremental: the gateway keeps the projects and the window as of the seq it last
        read (:class:`_Read`) and, when the stream has grown since, reads only the events
        after that seq (one consumer from there) and folds them in; at the same seq it
        reads nothing but the stream's info. It reads everything again (:meth:`_read_all`)
        when the kept read cannot be brought forward: the first time, another stream under
        the name (a new database id), the seqs after it no longer all kept (trimmed: it
        fell out of the window) or not contiguous, or a stream behind it.
        """

        async def work(s: _Session) -> StateRead:
            return await self._read(s)

        return self.backend._run(work)

    async def _read(self, s: _Session) -> StateRead:
        backend = self.backend
        info = await backend._stream_info(s)
        if info is None:
            with self._lock:
                self._kept = None
            return StateRead([], 0, "", None, [], backend.journal_limit)
        assert s.limit is not None
        latest = int(info.state.last_seq)
        metadata = info.config.metadata or {}
        identity = (str(metadata.get("projctl.database_id", "")), str(info.created))
        with self._lock:
            kept = self._kept
        read = None
        if (
            kept is not None
            and kept.identity == identity
            and kept.limit == s.limit
            # Every seq after the kept one is still in the stream: none left the window.
            and latest - s.limit <= kept.seq <= latest
        ):
            read = await self._read_after(s, kept, latest)
        if read is None:
            read = await self._read_all(s, identity, latest)
        with self._lock:
            # Several threads may read at once: the newest read is kept.
            if (
                self._kept is None
                or self._kept.identity != read.identity
                or (self._kept.seq <= read.seq)
            ):
                self._kept = read
        return StateRead(
            journal=read.journal,
            latest_seq=read.seq,
            database_id=read.identity[0] if read.seq else "",
            version=None,
            project_records=list(read.projects.values()),
            journal_limit=read.limit,
        )

    async def _read_after(self, s: _Session, kept: _Read, latest: int) -> _Read | None:
        """``kept`` brought up to the stream's last seq (at least ``latest``) by the events
        after it; ``None`` when they are not exactly the seqs after it."""
        if kept.seq == latest:
            return kept
        newer = await self.backend._journal(s, kept.seq)
        seqs = [event["seq"] for event in newer]
        if not seqs or seqs != list(range(kept.seq + 1, kept.seq + 1 + len(seqs))):
            return None  # trimmed meanwhile, or not the stream it was: read it all
        # Copy on write: a StateRead handed out earlier keeps its own mapping; the records
        # themselves are never changed in place (apply() replaces or removes them).
        projects = dict(kept.projects)
        for event in newer:
            events.apply(projects, event)
        seq = newer[-1]["seq"]
        journal = [event for event in kept.journal if event["seq"] > seq - kept.limit] + newer
        return _Read(kept.identity, seq, kept.limit, projects, journal)

    async def _read_all(self, s: _Session, identity: tuple[str, str], latest: int) -> _Read:
        """Every project's last message, then the journal window: each project brought up to
        the journal's last seq by folding the events newer than the message read."""
        backend = self.backend
        records = await backend._records(s)
        journal = await backend._journal(s, 0)
        latest = max(latest, journal[-1]["seq"] if journal else 0)
        projects: dict[str, dict[str, Any]] = {}
        read_at: dict[str, int] = {}
        for record in records:
            read_at[record.project_id] = record.seq
            if record.project is not None:
                projects[record.project_id] = record.project.to_dict()
        for event in journal:
            project_id = str(event["data"].get("project_id", ""))
            if event["event_type"] in events.EVENT_TYPES and event["seq"] > read_at.get(
                project_id, 0
            ):
                events.apply(projects, event)
        assert s.limit is not None
        return _Read(identity, latest, s.limit, projects, journal)


@dataclass(frozen=True)
class _Read:
    """A read of the stream a gateway keeps: the projects (id -> record) and the journal
    window as of ``seq``. Never changed once made: a later read makes a new one."""

    identity: tuple[str, str]
    seq: int
    limit: int
    projects: dict[str, dict[str, Any]]
    journal: list[Event]
