"""The feed: ``/ws`` subscribers, their opening (snapshot or replay), the send budget.

A subscriber gets its opening with backpressure, then every live event in ``seq``
order. Live events go to every subscriber through one ``broadcast``; the bytes they
hold unsent are bounded per subscriber and all together, and the slowest are closed
(1013, they may resume). Many subscribers asking for the projects at once share one
read of the database, and those joining at the same ``seq`` one encoding of it.

No step holds the event loop long: a snapshot goes out in small fragments, encoded as
the subscriber furthest along needs them, and each subscriber lets the others (and every
other connection) run between two of its fragments. All of them together stream for a
bounded time in each turn of the loop (:class:`_Turns`), however many there are.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from projctl.backend import ServedStorage, StateRead, SteppedRead
from projctl.errors import CorruptDatabaseError
from projctl.sequencer import ProjectsMessage, Sequencer
from projctl.server.config import ServerConfig
from projctl.server.connection import _counted, _malloc_trim

log = logging.getLogger("projctl.server")

#: Subscribers have nothing to say; anything larger than this closes them with 1009.
SUBSCRIBER_MAX_MESSAGE = 4096
#: How long, in seconds, the streams of snapshots and resyncs may run together in one
#: turn of the event loop before they wait for the next (every other connection runs
#: in between): a request waits for a few turns, so each must stay short.
STREAM_TURN = 0.004
#: How long a read of the database done in steps (:class:`~projctl.backend.SteppedRead`)
#: runs in one turn of the loop, at most (beside the streams).
READ_TURN = STREAM_TURN / 2
#: Seconds from the last subscriber of a large read leaving to its memory handed back.
MEMORY_RETURN_DELAY = 0.25


class _Turns:
    """Shares each turn of the event loop among the subscribers streaming a snapshot (and
    the read of the database they wait for).

    Between two fragments a stream waits for its turn, first come first served. Once a
    turn of the loop, as many waiting streams are let go as fit in :data:`STREAM_TURN`
    by what a step has cost lately; one let go after the turn's time is spent waits again
    at the head of the line. With one stream, or 150, the loop turns every few
    milliseconds, so what else it serves (a ``/healthz``, a write) never waits long.
    """

    def __init__(self, budget: float = STREAM_TURN) -> None:
        self._budget = budget
        self._waiting: deque[asyncio.Future[None]] = deque()
        #: Counts the loop's turns that streams ran in (from 1); ``_began``: when this one
        #: began.
        self._turn = 1
        self._began = 0.0
        #: Steps done in this turn, and the time from its start to the end of the last.
        self._steps = 0
        self._spent = 0.0
        #: Streams let go this turn that found its time spent, now at the head of the line.
        self._first = 0
        #: What one step (a fragment encoded and written) costs, averaged over turns.
        self._step_cost = 0.0001
        self._scheduled = False

    async def wait(self, last_turn: int) -> int:
        """Wait for a stream's next turn; ``last_turn`` is what this returned before (0 at
        first), and the step since is counted when it was done in the same turn."""
        if last_turn == self._turn:
            self._steps += 1
            self._spent = time.perf_counter() - self._began
        at_head = False
        while True:
            turn = asyncio.get_running_loop().create_future()
            if at_head:
                self._waiting.insert(self._first, turn)
                self._first += 1
            else:
                self._waiting.append(turn)
            self._schedule()
            await turn
            if time.perf_counter() - self._began < self._budget:
                return self._turn
            at_head = True  # let go past the turn's time: first in the next

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Start the turn of the streams let go in the last one, and let the next go.

        A stream let go now runs in the loop's next turn, after its I/O: this runs again
        first in that turn (scheduled before they are woken) and starts its clock.
        """
        self._scheduled = False
        if self._steps:
            self._step_cost = (self._step_cost + self._spent / self._steps) / 2
        self._turn += 1
        self._began = time.perf_counter()
        self._steps, self._spent, self._first = 0, 0.0, 0
        count = max(1, int(self._budget / max(self._step_cost, 1e-6)))
        while self._waiting and count:
            turn = self._waiting.popleft()
            if turn.done():  # its stream was cancelled meanwhile
                continue
            if not self._scheduled:
                self._schedule()
            turn.set_result(None)
            count -= 1


@dataclass
class _Backlog:
    """Live events for a subscriber still receiving its opening, and their size in bytes."""

    messages: deque[bytes] = field(default_factory=deque)
    size: int = 0


class _SharedMessage:
    """One snapshot or resync, encoded once for every subscriber that joins at its seq.

    Its fragments are encoded as the subscriber furthest along first needs them (one per
    step) and kept for the others; it lives while some subscriber still streams it.
    """

    def __init__(self, message: ProjectsMessage) -> None:
        self._source: Iterator[bytes] | None = iter(message)
        self._encoded: list[bytes] = []

    def fragment(self, index: int) -> bytes | None:
        """Fragment ``index`` of the message; ``None`` past its last."""
        if index < len(self._encoded):
            return self._encoded[index]
        if self._source is None:
            return None
        fragment = next(self._source, None)
        if fragment is None:
            self._source = None  # and with it the projects it was encoding
            return None
        self._encoded.append(fragment)
        return fragment

    async def stream(self, turns: _Turns) -> AsyncGenerator[bytes, None]:
        """The fragments for one subscriber, each in its turn (see :class:`_Turns`).

        Without the pause, a subscriber whose socket takes all it is given (the
        kernel's buffer holds megabytes) would be sent most of a large snapshot in one
        step, and many joining at once would hold the loop for seconds.
        """
        index = 0
        turn = await turns.wait(0)
        while (fragment := self.fragment(index)) is not None:
            yield fragment
            index += 1
            turn = await turns.wait(turn)


class Feed:
    """Fans the sequencer's messages out to subscribers, in ``seq`` order, with nothing lost.

    Methods that feed the sequencer never await in the middle, so a subscriber is
    registered, replayed to and switched to the live feed in one step and no event
    can slip in between.
    """

    def __init__(
        self,
        sequencer: Sequencer,
        store: ServedStorage,
        config: ServerConfig,
        *,
        spawn: Callable[[Awaitable[Any]], None],
        touch: Callable[[], None],
    ) -> None:
        self.sequencer = sequencer
        self.store = store
        self.config = config
        self._spawn = spawn
        self._touch = touch
        #: Subscribers on the live feed.
        self.subscribers: set[ServerConnection] = set()
        #: Subscribers still receiving their snapshot or replay, and what waits for them.
        self.joining: dict[ServerConnection, _Backlog] = {}
        #: Subscribers closed for being slow whose close has not completed yet.
        self.closing: set[ServerConnection] = set()
        #: Subscribers closed for being slow, since the start.
        self.slow_closed = 0
        self._turns = _Turns()
        self._returning_memory: asyncio.Future[None] | None = None
        self._shared_state: weakref.ref[StateRead] | None = None
        self._reading: asyncio.Future[StateRead] | None = None
        #: Snapshots and resyncs being streamed, by :attr:`ProjectsMessage.key`.
        self._messages: weakref.WeakValueDictionary[tuple[str, str, int, int], _SharedMessage] = (
            weakref.WeakValueDictionary()
        )

    def backlog_bytes(self) -> int:
        """Bytes waiting in the backlogs of subscribers still receiving their opening."""
        return sum(backlog.size for backlog in self.joining.values())

    # -- the live feed -----------------------------------------------------------

    def send_to_all(self, messages: Iterable[bytes]) -> None:
        """Send to every live subscriber, and into the backlog of those still joining."""
        sent = False
        for message in messages:
            sent = True
            # As str: a text frame in every websockets version (``text=`` came in 16.1).
            broadcast(self.subscribers, message.decode())
            for backlog in self.joining.values():
                backlog.messages.append(message)
                backlog.size += len(message)
        if sent:
            self.cut_off_slow_subscribers()

    def cut_off_slow_subscribers(self) -> None:
        """Close subscribers that hold too many unsent bytes, with 1013 (they may resume).

        Every byte counts: what waits in a subscriber's socket buffer, and the backlog of
        one still receiving its snapshot or replay. One subscriber may hold at most
        ``slow_subscriber_limit``; all of them together at most ``send_budget``, and past
        that the ones furthest behind their fair share go first. A closed subscriber keeps
        its buffer until it has read up to the close frame, which one that never reads
        never does: past the budget, those are dropped at once, largest first. So many
        subscribers that stop reading together cannot take the server's memory with them.
        """
        limit, budget = self.config.slow_subscriber_limit, self.config.send_budget
        pending = [
            (_counted(connection).unsent_bytes(), connection) for connection in self.subscribers
        ] + [
            (backlog.size + _counted(connection).unsent_bytes(), connection)
            for connection, backlog in self.joining.items()
        ]
        total = sum(size for size, _ in pending) + sum(
            _counted(connection).unsent_bytes() for connection in self.closing
        )
        fair_share = budget // max(1, len(pending))
        for size, connection in sorted(pending, key=lambda item: item[0], reverse=True):
            if size > limit or (total > budget and size > fair_share):
                self.subscribers.discard(connection)
                self.joining.pop(connection, None)
                self._close_slow(connection)
            elif total <= budget:
                break  # sorted: nobody after this one is over its bound either
        if total > budget:
            closing = [(_counted(c).unsent_bytes(), c) for c in self.closing]
            for size, connection in sorted(closing, key=lambda item: item[0], reverse=True):
                _counted(connection).abort()
                self.closing.discard(connection)
                total -= size
                if total <= budget:
                    break

    def _close_slow(self, connection: ServerConnection) -> None:
        self.slow_closed += 1
        self.closing.add(connection)
        log.warning("closing a subscriber that stopped reading (%s)", connection.id)
        # close() waits for the closing handshake, which such a peer may never answer;
        # its close_timeout, or the budget above, then aborts the connection.
        last_seq = self.sequencer.last_seq
        self._spawn(connection.close(1013, f"too slow; reconnect with ?since={last_seq}"))

    # -- one subscriber ----------------------------------------------------------

    async def serve(
        self, connection: ServerConnection, *, since: int | None, snapshot: bool
    ) -> None:
        """Serve one subscriber until it leaves: its opening, then the live feed."""
        sequencer = self.sequencer
        state = None
        state_was_read = sequencer.needs_projects(since=since, snapshot=snapshot)
        if state_was_read:
            state = await self.read_state_shared()
            # Everyone who waited for this read wakes at once: each goes on in its turn.
            await self._turns.wait(0)
        # From here to the registration nothing awaits: replay and live feed join seamlessly.
        if state is not None and state.latest_seq > sequencer.last_seq:
            self.send_to_all(sequencer.catch_up(state))
        parts = self._opening(since=since, snapshot=snapshot, state=state)
        self._touch()
        try:
            if parts:
                await self._send_opening(connection, parts)
            else:
                self.subscribers.add(connection)
            state, parts = None, []  # a large read is kept only while someone still streams it
            # Subscribers cannot publish: what they send is ignored (websockets closes one
            # that sends more than SUBSCRIBER_MAX_MESSAGE at once with 1009).
            async for _message in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            self.joining.pop(connection, None)
            self.subscribers.discard(connection)
            self.closing.discard(connection)
            self._touch()
            if state_was_read:
                state, parts = None, []
                self._return_memory_when_idle()

    def _opening(
        self, *, since: int | None, snapshot: bool, state: StateRead | None
    ) -> list[bytes | _SharedMessage]:
        """The sequencer's opening for a new subscriber, with a snapshot or resync that
        another subscriber is being sent at this seq shared rather than encoded again."""
        key = self.sequencer.projects_message_key(since=since, snapshot=snapshot)
        shared = self._messages.get(key) if key is not None else None
        if shared is not None:
            return [shared]
        parts: list[bytes | _SharedMessage] = []
        for part in self.sequencer.opening_parts(since=since, snapshot=snapshot, state=state):
            if isinstance(part, ProjectsMessage):
                shared = self._messages[part.key] = _SharedMessage(part)
                parts.append(shared)
            else:
                parts.append(part)
        return parts

    async def _send_opening(
        self, connection: ServerConnection, parts: list[bytes | _SharedMessage]
    ) -> None:
        """Stream a new subscriber's opening with backpressure, then switch it to the live feed.

        Each send waits while the subscriber's socket holds more than websockets'
        write limit, so a subscriber that does not read costs that much and no more:
        a snapshot of a large database is never queued whole. Live events that come
        meanwhile wait in its backlog, counted against the same per-subscriber bound.
        """
        backlog = self.joining[connection] = _Backlog()
        for part in parts:
            if isinstance(part, bytes):
                await connection.send(part, text=True)
                continue
            fragments = part.stream(self._turns)
            try:
                await connection.send(fragments, text=True)
            finally:
                # At once, not when the loop finalizes it: a stream cut short must not keep
                # the message (and the projects it encodes) past its subscriber.
                await fragments.aclose()
        while backlog.messages:
            message = backlog.messages.popleft()
            backlog.size -= len(message)
            await connection.send(message, text=True)
        # The backlog is empty and nothing awaits from here: the live feed goes on seamlessly.
        del self.joining[connection]
        self.subscribers.add(connection)

    def _return_memory_when_idle(self) -> None:
        """Give the memory of a large read back to the system once nobody streams it.

        A snapshot of a large database parses the whole file; when the last subscriber
        that needed it is gone, the parsed projects are garbage, but the C allocator
        keeps the freed pages unless asked. Linux/glibc only; elsewhere a no-op.
        """
        if self._returning_memory is None:
            self._returning_memory = asyncio.ensure_future(self._return_memory_later())

    async def _return_memory_later(self) -> None:
        # Later, not in the step that closes a subscriber: many close at once, and the
        # collection is a step of its own, after the loop has served what came meanwhile.
        try:
            await asyncio.sleep(MEMORY_RETURN_DELAY)
            if self.joining or (self._shared_state is not None and self._shared_state()):
                return
            gc.collect()
            # In a thread: the call lets go of the GIL, and the loop goes on meanwhile.
            await asyncio.to_thread(_malloc_trim)
        finally:
            self._returning_memory = None

    # -- the shared read -----------------------------------------------------------

    async def current_projects(self) -> list[dict[str, Any]]:
        """The projects as of the last event broadcast, from the shared read of the file."""
        state = await self.read_state_shared()
        if state.latest_seq > self.sequencer.last_seq:
            self.send_to_all(self.sequencer.catch_up(state))
        return self.sequencer.projects_at_last_seq(state)

    async def read_state_shared(self) -> StateRead:
        """One read of the database for every subscriber that needs the projects now.

        Many subscribers asking for a snapshot at once share one read (and its memory)
        instead of each parsing the whole file: a read is reused while its file version
        is current and some subscriber still holds it.
        """
        cached = self._shared_state() if self._shared_state is not None else None
        if cached is not None and cached.version == self.store.file_version():
            return cached
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_state_patiently())
        reading = self._reading
        try:
            state = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        self._shared_state = weakref.ref(state)
        return state

    async def _read_state_patiently(self) -> StateRead:
        """A read of the database for a subscriber or the API, waiting out another program
        rewriting the file in place (empty or half written) for up to
        ``transient_read_wait`` seconds: nobody is shown an empty registry meanwhile."""
        deadline = time.monotonic() + self.config.transient_read_wait
        while True:
            try:
                return await self._read_state()
            except CorruptDatabaseError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _read_state(self) -> StateRead:
        """One read of the database: in turns of the loop when the storage can (the file is
        read in a thread, then parsed and checked a little at a time), else in a thread."""
        store = self.store
        if not isinstance(store, SteppedRead):
            return await asyncio.to_thread(store.read_state)
        steps = store.read_state_in_steps()
        try:
            state = await asyncio.to_thread(_step, steps)
            turn = 0
            while state is None:
                turn = await self._turns.wait(turn)
                until = time.perf_counter() + READ_TURN
                while state is None and time.perf_counter() < until:
                    state = _step(steps)
            return state
        finally:
            steps.close()


def _step(steps: Generator[None, None, StateRead]) -> StateRead | None:
    """One step of a read: the read when it is done, else ``None``."""
    try:
        next(steps)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return None
