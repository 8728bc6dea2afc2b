"""The team protocol's requests (``/rpc``): the one write path.

Each connection's requests are answered in order, within a window of unanswered ones;
writes go one at a time and before waiting reads; a write's answer is kept by request id
(the idempotency cache) so that a retry after a lost reply is answered, not applied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from projctl import remote
from projctl.errors import ProjctlError, StoreError
from projctl.events import Event
from projctl.store import FileVersion, ProjectStore, StoreState

log = logging.getLogger("projctl.server")

#: Answers to writes kept for retries of the same request id, and their bytes at most.
_ANSWERS_KEPT = 4096
_ANSWER_BYTES_KEPT = 16 << 20
#: Team-protocol reads answered at once; more wait their turn (writes go first).
_READS_AT_ONCE = 2
#: Reads answered from one read of the whole file, shared by every request at the time.
_SHARED_READS = frozenset({"list", "info"})
#: How long a read waits for queued writes before it takes its turn anyway.
_READ_YIELD = 1.0
#: How long a stopping server waits for the team-protocol requests begun to be answered (a
#: write may wait 10 s for the database lock).
_FINISH_TIMEOUT = 15.0


@dataclass
class _RpcWindow:
    """A ``/rpc`` connection's requests received and not yet answered (how many, how large),
    and whether it ended."""

    taken: int = 0
    size: int = 0
    closed: bool = False

    def fits(self, message: str | bytes) -> bool:
        """Whether ``message`` may wait its turn: within the window, or the only one."""
        return not self.taken or (
            self.taken < remote.RPC_WINDOW and self.size + len(message) <= remote.RPC_WINDOW_BYTES
        )


def _too_big(message: str | bytes, limit: int) -> bool:
    """Whether a message is more than ``limit`` bytes (a text one, encoded as UTF-8).

    Checked in the handlers: ``serve`` takes one ``max_size`` for every connection (the
    largest, a forward's), and websockets has no public way to lower it for one.
    """
    if isinstance(message, bytes) or len(message) > limit:
        return len(message) > limit
    # UTF-8 takes one to four bytes a character: encode only when it could go either way.
    return len(message) * 4 > limit and len(message.encode()) > limit


class RpcWrites:
    """Answers ``/rpc`` connections against ``store``: what a write commits goes to
    ``accept`` (the feed), shared reads come from ``read_state``, and ``touch`` marks the
    server active."""

    def __init__(
        self,
        store: ProjectStore,
        *,
        accept: Callable[[Event, FileVersion | None, tuple[int, int] | None], None],
        read_state: Callable[[], Awaitable[StoreState]],
        touch: Callable[[], None],
    ) -> None:
        self.store = store
        self._accept = accept
        self._read_state = read_state
        self._touch = touch
        #: The team protocol's answered writes, by request id (for retries), oldest first.
        self._answered: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._write_lock = asyncio.Lock()
        #: Every id answered or in progress, with its request's digest.
        self._ids: dict[str, str] = {}
        #: The bytes of the replies in ``_rpc_answered``.
        self._answered_bytes = 0
        #: Writes queued or running; reads wait while there are any (writes go first).
        self._writes = 0
        self._no_writes = asyncio.Event()
        self._no_writes.set()
        self._reads = asyncio.Semaphore(_READS_AT_ONCE)
        #: The newest shared read, kept while shared reads wait for their turn (so that they
        #: share it), and those waiting; an older read is let go as soon as a newer one comes.
        self._read_kept: StoreState | None = None
        self._shared_waiting = 0
        #: Requests begun and not yet answered, on every connection; none begin once stopping.
        self._begun = 0
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._stopping = False

    async def serve(self, connection: ServerConnection, *, may_write: bool) -> None:
        """The team protocol: one reply per request, each write applied once per id.

        This task only reads: requests go to a queue that a worker answers one at a time,
        in order, so the connection keeps reading (pongs too: keepalive needs its reader
        to run) however many requests a client pipelines. A request beyond
        :data:`remote.RPC_WINDOW` unanswered ones (or their bytes) is not carried out: it is
        answered ``busy`` at once.
        """
        self._touch()
        queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        window = _RpcWindow()
        worker = asyncio.ensure_future(self._answer_queue(connection, queue, window, may_write))
        try:
            async for message in connection:
                if _too_big(message, remote.MAX_REQUEST):
                    await connection.close(1009, f"a request is at most {remote.MAX_REQUEST} bytes")
                    break
                if not window.fits(message):
                    await connection.send(remote.busy_reply(message), text=True)
                else:
                    window.taken += 1
                    window.size += len(message)
                    queue.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            # Requests not begun are dropped (their client is gone and may retry them); the
            # one running finishes, so its answer is kept for a retry.
            window.closed = True
            queue.put_nowait(None)
            await asyncio.shield(worker)

    async def _answer_queue(
        self,
        connection: ServerConnection,
        queue: asyncio.Queue[str | bytes | None],
        window: _RpcWindow,
        may_write: bool,
    ) -> None:
        """Answer one connection's requests in order until it ends (a ``None`` entry)."""
        while (message := await queue.get()) is not None:
            if window.closed or self._stopping:
                continue
            self._begun += 1
            self._all_answered.clear()
            try:
                await self._answer_request(connection, message, window, may_write)
            finally:
                self._begun -= 1
                if not self._begun:
                    self._all_answered.set()

    async def _answer_request(
        self,
        connection: ServerConnection,
        message: str | bytes,
        window: _RpcWindow,
        may_write: bool,
    ) -> None:
        """Answer one request and send its reply (unless the connection is gone)."""
        try:
            reply = await self._reply(message, may_write=may_write)
        except Exception:  # a bug of ours: answered, and the connection goes on
            log.exception("a /rpc request failed")
            reply = remote.error_reply(
                remote.request_id_in(message), "server_error", "internal error"
            )
        finally:
            window.taken -= 1
            window.size -= len(message)
        try:
            await connection.send(reply, text=True)
        except ConnectionClosed:
            window.closed = True
        self._touch()

    async def finish(self) -> None:
        """Before a stopping server closes its connections: begin no more team-protocol
        requests, and let those begun be answered, so that no write is applied unanswered."""
        self._stopping = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), _FINISH_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _turn(self, op: str | None, *, may_write: bool) -> AsyncIterator[None]:
        """Take the database's turn for one request: writes one at a time, and before any
        read waiting; a read once no write waits (or after a while)."""
        if op in remote.WRITE_OPS and may_write:
            self._writes += 1
            self._no_writes.clear()
            try:
                # Writes go one at a time: they would only take turns at the database lock
                # otherwise, polling for it, which stretches the slowest reply.
                async with self._write_lock:
                    yield
            finally:
                self._writes -= 1
                if not self._writes:
                    self._no_writes.set()
        else:
            if op in remote.READ_OPS:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._no_writes.wait(), _READ_YIELD)
            yield

    async def _state(self) -> StoreState:
        """A read of the database no older than this call, shared with every reader."""
        version = self.store.file_version()
        state = await self._read_state()
        if state.version != version:  # a read begun before a commit: take a newer one
            state = await self._read_state()
        self._read_kept = state
        return state

    async def _answer(
        self, message: str | bytes, op: str | None, *, may_write: bool
    ) -> remote.Answer:
        """Answer in a thread: a read once one of the few read slots is free; ``list`` and
        ``info`` from the shared read of the file (taken in the slot, so that a read waiting
        holds no old copy of the database)."""
        if op not in remote.READ_OPS:
            return await asyncio.to_thread(remote.answer, self.store, message, may_write=may_write)
        shared = op in _SHARED_READS
        self._shared_waiting += shared
        try:
            async with self._reads:
                state = None
                if shared:
                    # A file that cannot be read is answered from the store, with its error.
                    with contextlib.suppress(StoreError):
                        state = await self._state()
                return await asyncio.to_thread(
                    remote.answer, self.store, message, may_write=may_write, state=state
                )
        finally:
            self._shared_waiting -= shared
            if not self._shared_waiting:
                self._read_kept = None

    async def _reply(self, message: str | bytes, *, may_write: bool) -> bytes:
        """The reply to one request; a write whose id was answered before gets that answer
        again (a client retrying after a lost reply), and one in progress is waited for."""
        try:
            request = orjson.loads(message)
            request_id: str | None = remote.request_id_of(request)
        except (orjson.JSONDecodeError, ProjctlError):
            request, request_id = None, None
        op = request.get("op") if isinstance(request, dict) else None
        op = op if isinstance(op, str) else None  # an op of another type is answered unknown_op
        # A retry is the same request: an id reused for another one is refused, not replayed.
        digest = hashlib.sha256(message if isinstance(message, bytes) else message.encode())
        key = (request_id, digest.hexdigest()) if request_id is not None else None
        if key is not None and may_write:
            if self._ids.get(key[0], key[1]) != key[1]:
                return remote.error_reply(
                    request_id, "bad_request", "this id was already used for another request"
                )
            if key in self._answered:
                self._answered.move_to_end(key)
                return self._answered[key]
            running = self._running.get(key)
            if running is not None:
                return await asyncio.shield(running)
            self._ids[key[0]] = key[1]
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if key is not None and may_write:
            self._running[key] = future
        try:
            async with self._turn(op, may_write=may_write):
                answer = await self._answer(message, op, may_write=may_write)
            for change in answer.changes:
                if change.event is not None:
                    self._accept(change.event, change.version, change.restore)
            if answer.idempotent and key is not None:
                self._remember(key, answer.reply)
            future.set_result(answer.reply)
            return answer.reply
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a retry waiting on it raises it too
            raise
        finally:
            if key is not None:
                self._running.pop(key, None)
                if key not in self._answered:
                    self._ids.pop(key[0], None)  # not applied: the id is free again

    def _remember(self, key: tuple[str, str], reply: bytes) -> None:
        """Keep a write's reply for its retries: the newest, within a count and a byte total."""
        self._answered[key] = reply
        self._answered_bytes += len(reply)
        while len(self._answered) > 1 and (
            len(self._answered) > _ANSWERS_KEPT or self._answered_bytes > _ANSWER_BYTES_KEPT
        ):
            (forgotten, _digest), old = self._answered.popitem(last=False)
            self._answered_bytes -= len(old)
            self._ids.pop(forgotten, None)
