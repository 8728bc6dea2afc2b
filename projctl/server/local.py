"""The private Unix socket's answers (the ``rpc`` protocol: forward, status, stop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from projctl import rpc
from projctl.backend import FileVersion
from projctl.events import Event, EventDecodeError, check_event
from projctl.sequencer import Sequencer

log = logging.getLogger("projctl.server")


class LocalAnswers:
    """Answers the Unix socket: a forward goes to ``accept`` once the ``sequencer`` adopts
    its database; ``status`` is ``health()``; ``stop`` calls ``stop()``."""

    def __init__(
        self,
        sequencer: Sequencer,
        *,
        accept: Callable[[Event, FileVersion | None, tuple[int, int] | None], None],
        health: Callable[[], dict[str, Any]],
        stop: Callable[[], None],
        stopping: asyncio.Event,
    ) -> None:
        self.sequencer = sequencer
        self._accept = accept
        self._health = health
        self._stop = stop
        self._stopping = stopping
        #: The connections being served, closed by :meth:`close_connections`.
        self._writers: set[asyncio.StreamWriter] = set()

    def close_connections(self) -> None:
        """Close every connection of the socket: a waiting ``readline()`` ends with the
        connection, not with a cancellation (which asyncio would log as an error) when the
        stopping server's loop ends."""
        for writer in list(self._writers):
            writer.close()

    def forward(self, args: Any) -> dict[str, Any]:
        """Accept one forward, ``{"event": {...}, "version": [...]}``, already parsed."""
        try:
            event = check_event(args.get("event"))
            raw_version = args.get("version")
            version = (
                (int(raw_version[0]), int(raw_version[1]), int(raw_version[2]))
                if isinstance(raw_version, list) and len(raw_version) == 3
                else None
            )
        except (EventDecodeError, AttributeError, TypeError, ValueError) as error:
            return {"ok": False, "error": f"not a forward: {error}"}
        database_id = args.get("database_id")
        if (
            isinstance(database_id, str)
            and database_id
            and not self.sequencer.adopt_database(database_id)
        ):
            served = self.sequencer.database_id
            return {
                "ok": False,
                "error": f"this server serves database {served}, not {database_id}",
            }
        raw_restore = args.get("restore")
        restore = None
        if (
            isinstance(raw_restore, list)
            and len(raw_restore) == 2
            and all(type(seq) is int and seq >= 0 for seq in raw_restore)
        ):
            restore = (raw_restore[0], raw_restore[1])
        self._accept(event, version, restore)
        return {"ok": True, "seq": event["seq"]}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on the private Unix socket (the ``rpc`` protocol).

        Every request gets a reply, a failure of our own included (logged with its
        traceback): a client that gets none cannot tell a bug from a server going away.
        """
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # a line over the reader's limit: not our protocol
                    return
                if not line:
                    return
                try:
                    reply = self._answer(line)
                except Exception as error:
                    log.exception("a local request failed")
                    reply = rpc.encode_error(f"the server failed: {type(error).__name__}: {error}")
                writer.write(reply)
                await writer.drain()
                if self._stopping.is_set():
                    return  # answered a stop: nothing more is served here
        except (ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, line: bytes) -> bytes:
        try:
            request = rpc.decode_request(line)
        except rpc.RequestDecodeError as error:
            return rpc.encode_error(str(error))
        if request.op == rpc.OP_FORWARD:
            reply = self.forward(request.args)
            if not reply.pop("ok"):
                return rpc.encode_error(reply["error"])
            return rpc.encode_reply(reply)
        if request.op == rpc.OP_STATUS:
            return rpc.encode_reply(self._health())
        self._stop()  # rpc.OP_STOP
        return rpc.encode_reply()
