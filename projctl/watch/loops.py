"""The two run loops of ``projctl watch``.

:func:`run_live` owns the terminal (``rich.live.Live``): one task applies messages as
fast as they arrive, another redraws at a fixed rate, so a burst of events never queues
up redraws. :func:`run_json` prints events as JSON Lines. Both loops take the same
options and count the same events: ``--count``, ``--since`` and the filters mean the
same on a terminal and in a pipe.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import IO, Any

from rich.console import Console
from rich.live import Live

from projctl import events
from projctl.events import PROJECTS_MESSAGE_TYPES
from projctl.model import visible
from projctl.subscribe import Connection, Locate, Message, follow

from .render import render_feed, render_screen
from .state import EventFilter, Tally, WatchState

#: Where the messages come from instead of a server's feed (a storage that is its own feed,
#: such as a JetStream stream): called with ``since`` and ``snapshot`` as ``follow`` is.
Source = Callable[[int | None, bool], AsyncIterator[Message | Connection]]

REFRESH_INTERVAL = 0.125
#: Failed connection attempts in a row (about 30 s of backoff) before watch gives up.
GIVE_UP_AFTER = 10


# -- the run loops -----------------------------------------------------------------------


async def run_live(
    locate: Locate,
    *,
    console: Console,
    event_filter: EventFilter,
    since: int | None = None,
    count: int | None = None,
    projects: Iterable[Mapping[str, Any]] = (),
    err: IO[str] | None = None,
    source: Source | None = None,
    tally: Tally | None = None,
) -> int:
    """Show the live screen until ``count`` matching events have arrived; return how many did.

    Runs until cancelled (Ctrl-C, a timeout) when ``count`` is ``None``. The terminal
    is restored on the way out, whichever way that is. ``locate`` finds the server to
    follow (see :func:`projctl.subscribe.follow`).

    Without ``since`` the table starts from the server's snapshot and ``projects`` is
    not used. With ``since`` it starts from ``projects`` (the projects as they are,
    which the caller reads) and the events after ``since`` are replayed onto it as
    changes: marked in the table, listed in the feed, and counted against ``count``
    and the filters exactly as :func:`run_json` counts them. When a ``resync`` replaced
    events that were never received, one line says so on ``err`` as the screen closes.
    With ``count``, the latest matching events (the feed) are printed once the screen is
    gone, however the watch ended, so what it waited for stays on the terminal.
    ``tally`` (if given) counts the matching events as they arrive.
    """
    state = WatchState(event_filter=event_filter, count=count)
    if since is not None:
        state.load(projects, time.time())
    messages = (
        follow(locate, since=since, snapshot=since is None, give_up_after=GIVE_UP_AFTER)
        if source is None
        else source(since, since is None)
    )
    # Said on ``err`` once the screen is gone: the full-screen view would hide it.
    resyncs: list[str] = []

    async def consume() -> int:
        applied = 0
        async for item in messages:
            if isinstance(item, Message) and item.event_type == "resync":
                after = since if state.last_seq is None else state.last_seq
                resyncs.append(
                    resync_line(after, item.seq, count=count, matched=state.events_matched)
                )
            state.apply(item, time.time())
            if tally is not None:
                tally.matched = state.events_matched
            if state.done:
                break
            applied += 1
            if applied % 256 == 0:
                await asyncio.sleep(0)  # let the screen redraw during a burst
        return state.events_matched

    try:
        return await _show_live(console, state, consume)
    finally:
        if count is not None and state.feed:
            # The full screen is gone, and with it what the watch waited for: leave the
            # events it ended on where the user can see them, as the feed showed them.
            console.print(render_feed(state.feed, time.time(), width=console.width))
        if err is not None and resyncs:
            err.write("".join(line + "\n" for line in resyncs))
            err.flush()


async def _show_live(
    console: Console, state: WatchState, consume: Callable[[], Coroutine[Any, Any, int]]
) -> int:
    """Run ``consume`` while the screen shows ``state``; return what it returns."""
    with Live(console=console, screen=True, auto_refresh=False, redirect_stderr=False) as live:

        async def redraw() -> None:
            while True:
                now = time.time()
                state.expire(now)
                width, height = _terminal_size(console)
                live.update(render_screen(state, now, width=width, height=height), refresh=True)
                await asyncio.sleep(REFRESH_INTERVAL)

        drawer = asyncio.create_task(redraw())
        consumer = asyncio.create_task(consume())
        try:
            # The drawer only ever ends by failing: its error is raised, as the consumer's is.
            await asyncio.wait({drawer, consumer}, return_when=asyncio.FIRST_COMPLETED)
            if drawer.done():
                drawer.result()
            return consumer.result()
        finally:
            drawer.cancel()
            consumer.cancel()
            await asyncio.wait({drawer, consumer})


def _terminal_size(console: Console) -> tuple[int, int]:
    """The terminal's size now, and make ``console`` draw at it.

    Rich prefers ``COLUMNS``/``LINES`` from the environment, which many shells export
    once and never update: a full-screen view that trusted them would draw at a stale
    size after every resize.
    """
    try:
        size = os.get_terminal_size(console.file.fileno())
    except (AttributeError, OSError, ValueError):
        return console.size.width, console.size.height
    console.size = (size.columns, size.lines)
    return size.columns, size.lines


async def run_json(
    locate: Locate,
    *,
    since: int | None,
    event_filter: EventFilter,
    count: int | None,
    out: IO[str],
    err: IO[str],
    known_projects: Iterable[Mapping[str, Any]] = (),
    say_connected: bool = True,
    source: Source | None = None,
    tally: Tally | None = None,
) -> int:
    """Print matching events as JSON Lines, exactly as received; return how many matched.

    Returns after ``count`` matches (never, when ``count`` is ``None``).
    ``snapshot`` and ``resync`` messages are printed too unless ``--event`` filters.
    Connection changes go to ``err`` (``connected to ...`` only with ``say_connected``:
    a person at a terminal wants it, a script's log does not). ``known_projects`` are the
    projects before the first event, so a filter on type, status or owner can judge a deletion.
    ``source``, when given, is followed instead of the server ``locate`` finds. ``tally``
    (if given) counts the matching events as they are printed.
    """
    known: dict[str, dict[str, Any]] = {str(p["project_id"]): dict(p) for p in known_projects}
    matched = 0
    last_seq = since
    messages = (
        follow(locate, since=since, give_up_after=GIVE_UP_AFTER)
        if source is None
        else source(since, False)
    )
    async for item in messages:
        if isinstance(item, Connection):
            if say_connected or item.state != "connected":
                err.write(_connection_line(item) + "\n")
                err.flush()
            continue
        if item.event_type == "resync":
            err.write(resync_line(last_seq, item.seq, count=count, matched=matched) + "\n")
            err.flush()
        last_seq = item.seq if item.seq is not None else last_seq
        before = events.apply(known, item.data)
        if item.event_type in PROJECTS_MESSAGE_TYPES:
            if not event_filter.event_types:
                out.write(item.text + "\n")
                out.flush()
            continue
        if event_filter.matches(item.data, before):
            out.write(item.text + "\n")
            out.flush()
            matched += 1
            if tally is not None:
                tally.matched = matched
        if count is not None and matched >= count:
            return matched
    return matched


def resync_line(after: int | None, seq: int | None, *, count: int | None, matched: int) -> str:
    """What watch says when a ``resync`` replaced events it never got: they left the journal
    (or the database was replaced), so they cannot be shown, matched or counted."""
    gone = "some events" if after is None else f"the events after seq {after}"
    line = (
        f"projctl watch: {gone} are no longer in the journal; the server sent every project "
        f"as of seq {'?' if seq is None else seq} instead (resync), so they were not seen"
    )
    if count is not None and matched < count:
        line += f" and do not count toward --count ({matched} of {count} matched so far)"
    return line


def _connection_line(connection: Connection) -> str:
    if connection.state == "connected":
        return f"projctl watch: connected to {connection.url}"
    if connection.state == "starting":
        return "projctl watch: starting a server"
    return (
        f"projctl watch: disconnected ({visible(connection.error or '')}); "
        f"reconnecting in {connection.retry_in or 0:.1f}s"
    )
