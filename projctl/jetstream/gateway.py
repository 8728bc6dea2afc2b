"""The stream as a broadcast server's storage: what makes ``projctl serve --db nats://...``
a stateless gateway.

:class:`StreamGateway` is a :class:`~projctl.backend.ServedStorage` (writes go to the stream,
a read of the state is built from it) and a :class:`~projctl.backend.Follower` (the server
follows the stream instead of watching a file). Everything a gateway shows comes from the
stream, so any number of them show the same events with the same seqs, and a restarted
one loses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from projctl import events
from projctl.backend import Change, FileVersion, StateRead, Write
from projctl.jetstream._backend import JetStreamBackend
from projctl.jetstream._connection import _Session

__all__ = ["StreamGateway"]


class StreamGateway:
    """A JetStream database served by a broadcast server: :class:`~projctl.backend.ServedStorage`
    and :class:`~projctl.backend.Follower` over ``backend``."""

    def __init__(self, backend: JetStreamBackend) -> None:
        self.backend = backend

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

        The projects are the last message of every project subject, read first; the
        journal is read after, so it reaches at least as far, and each project is brought
        up to the journal's last seq by folding the events newer than the message read.
        """

        async def work(s: _Session) -> StateRead:
            return await self._read(s)

        return self.backend._run(work)

    async def _read(self, s: _Session) -> StateRead:
        backend = self.backend
        info = await backend._stream_info(s)
        if info is None:
            return StateRead([], 0, "", None, [], backend.journal_limit)
        records = await backend._records(s)
        journal = await backend._journal(s, 0)
        latest = max(int(info.state.last_seq), journal[-1]["seq"] if journal else 0)
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
        metadata = info.config.metadata or {}
        database_id = str(metadata.get("projctl.database_id", "")) if latest else ""
        assert s.limit is not None
        return StateRead(
            journal=journal,
            latest_seq=latest,
            database_id=database_id,
            version=None,
            project_records=list(projects.values()),
            journal_limit=s.limit,
        )
