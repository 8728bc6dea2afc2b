"""The JetStream backend: the :class:`~projctl.backend.Backend` protocol and following."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any, NoReturn

from projctl.errors import (
    ProjectNotFoundError,
    ServerError,
)
from projctl.events import Event
from projctl.jetstream._connection import (
    _REQUEST_TIMEOUT,
    _Session,
)
from projctl.jetstream._import import StreamImport
from projctl.model import Project

__all__ = ["JetStreamBackend"]


class JetStreamBackend(StreamImport):
    """A database in a NATS JetStream stream, as a :class:`projctl.backend.Backend`.

    ``servers`` are ``nats://`` (or ``tls://``) URLs without credentials; ``name`` is the
    database's name. Credentials (``user``/``password``, ``token`` or a ``creds_file``)
    are never shown in :attr:`location` or any message. ``journal_limit`` applies when this
    backend creates the stream; ``replicas`` ``None`` means ``min(3, cluster size)``.
    """

    def __repr__(self) -> str:
        return f"<projctl.jetstream.JetStreamBackend {self._display!r}>"

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
