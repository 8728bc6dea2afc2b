"""``watch``: a live table on a terminal, JSON Lines for scripts."""

import os
import sys
import time
from collections.abc import Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from projctl.cli._lazy import ExitCode, QuietInterrupt, command, report
from projctl.cli._options import (
    STATUS_HELP,
    DbOption,
    complete_event_types,
    complete_projects,
    open_database,
    output_format,
    output_option,
    say_if_missing,
)
from projctl.config import parse_count, parse_seconds
from projctl.errors import InvalidInputError, ProjectNotFoundError
from projctl.events import EVENT_TYPES, is_event_type
from projctl.model import STATUSES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import projctl
    from projctl.runtime import Endpoint
    from projctl.subscribe import Connection, Message
    from projctl.watch.loops import Source

# Typer takes a list of choices only as an Enum (a list of Literal is not supported).
StatusChoice = Enum("StatusChoice", {name: name for name in STATUSES}, type=str)  # type: ignore[misc]


#: ``watch -o``: JSON Lines (json and jsonl alike: a stream prints one object a line) or
#: the live table.
WATCH_FORMATS = ("json", "jsonl", "table")


@command("watch")
def watch(
    output: Annotated[
        str | None,
        output_option(
            WATCH_FORMATS,
            "json or jsonl (JSON Lines, the default when stdout is not a terminal) or "
            "table (the live table, the default on a terminal)",
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print each event as one JSON object per line, exactly as received. "
            "Automatic when stdout is not a terminal.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="SEQ",
            help="Replay journaled events after SEQ first (0: all retained); "
            "without it, only new events. On a terminal the table starts from the "
            "projects as they are and shows the replayed events as changes.",
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            "-e",
            metavar="EVENT",
            help="Only this event type (repeatable): "
            + ", ".join(EVENT_TYPES)
            + ", or an emitted one (see emit), e.g. tests_run.",
            autocompletion=complete_event_types,
        ),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            "-p",
            metavar="PROJECT_ID",
            help="Only this project (repeatable).",
            autocompletion=complete_projects,
        ),
    ] = None,
    status: Annotated[
        list[StatusChoice] | None,
        typer.Option(
            "--status", "-s", metavar="STATUS", help="Only projects in this status: " + STATUS_HELP
        ),
    ] = None,
    owner: Annotated[
        list[str] | None,
        typer.Option("--owner", metavar="OWNER", help="Only projects of this owner."),
    ] = None,
    type: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", metavar="TYPE", help="Only projects of this type."),
    ] = None,
    count: Annotated[
        str | None,
        typer.Option(
            "--count",
            "-n",
            metavar="N",
            help="Exit 0 after N matching events (replayed ones count).",
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Stop after DURATION (30s, 5m, 1h, 1m30s, or seconds): exit 0, or with "
            "--count exit 124 if N matching events have not arrived by then.",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print no events, only errors: with --count, a wait for N matching events.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Watch projects change live: a table on a terminal, JSON Lines for scripts.

    Filters: the same filter repeated means OR, different filters mean AND.
    Every option means the same on a terminal and in JSON mode.
    Reconnects by itself and resumes where it left off; Ctrl-C exits with 130.
    "connected to URL" is said on stderr only when it is a terminal.

    \b
    Example:
        projctl watch --json --event project_deleted --project "$id" --count 1 --timeout 30
    """
    # Here, not at the top: `projctl --help` imports this module for its summary.
    import asyncio

    from projctl import watch as watching

    event_types = frozenset(_event_type(name) for name in event or ())
    chosen = output_format(output, json_output, quiet, formats=WATCH_FORMATS, owner_option=True)
    if chosen == "table" and not sys.stdout.isatty():
        raise InvalidInputError("watch -o table needs a terminal; use -o json in a pipe")
    since_seq = None if since is None else parse_count(since, "--since")
    wanted = None if count is None else parse_count(count, "--count", minimum=1)
    seconds = None if timeout is None else parse_seconds(timeout, "--timeout")
    # One deadline for the whole command: finding or asking the server (which runs in a
    # thread that a cancelled wait cannot interrupt) never waits past it either.
    deadline = None if seconds is None else time.monotonic() + seconds
    database = open_database(db)
    if not quiet:
        say_if_missing(database)

    def locate() -> "Endpoint":
        return database.locate_server(deadline=deadline)

    source = _own_feed(database)

    event_filter = watching.EventFilter(
        event_types=event_types,
        project_ids=frozenset(_project_ids(database, project or (), say=not quiet)),
        statuses=frozenset(choice.value for choice in status or ()),
        owners=frozenset(owner or ()),
        types=frozenset(type or ()),
    )
    # What matched so far, for the timeout's message: the cancelled job returns nothing.
    tally = watching.Tally()
    job: Coroutine[Any, Any, object]
    if quiet or chosen in ("json", "jsonl") or not sys.stdout.isatty():
        known = database.list() if (status or owner or type) else []
        job = watching.run_json(
            locate,
            since=since_seq,
            event_filter=event_filter,
            count=wanted,
            out=open(os.devnull, "w") if quiet else sys.stdout,  # noqa: SIM115 (dies with us)
            err=sys.stderr,
            known_projects=[project.to_dict() for project in known],
            say_connected=sys.stderr.isatty() and not quiet,
            source=source,
            tally=tally,
        )
    else:
        from rich.console import Console

        # With --since the replayed events are changes on top of the projects as they
        # are now; the server's snapshot cannot serve, as it comes only instead of a replay.
        current = database.list() if since_seq is not None else []
        job = watching.run_live(
            locate,
            console=Console(),
            event_filter=event_filter,
            since=since_seq,
            count=wanted,
            projects=[project.to_dict() for project in current],
            err=sys.stderr,
            source=source,
            tally=tally,
        )
    try:
        asyncio.run(
            asyncio.wait_for(job, None if deadline is None else deadline - time.monotonic())
        )
    except (asyncio.TimeoutError, TimeoutError):
        if wanted is None:
            return  # a time-boxed watch: its time is up, nothing failed
        report(
            f"timed out after {seconds:g}s: {tally.matched} of {watching.plural(wanted, 'event')}"
        )
        raise typer.Exit(ExitCode.TIMEOUT) from None
    except BrokenPipeError:
        # The reader went away (`| head -1`): nothing left to do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends: 130, and no line saying so.
        raise QuietInterrupt from None


def _own_feed(database: "projctl.Database") -> "Source | None":
    """The storage itself as the feed when it is one (a JetStream stream), else ``None``:
    the database's server is followed."""
    from projctl.backend import Follower

    backend = database.backend
    if not isinstance(backend, Follower):
        return None
    follower = backend

    async def messages(since: int | None, snapshot: bool) -> "AsyncIterator[Message | Connection]":
        import contextlib

        import orjson

        from projctl.subscribe import Message

        feed = follower.follow(since=since, snapshot=snapshot)
        async with contextlib.aclosing(feed):
            async for data in feed:
                yield Message(orjson.dumps(data).decode(), data)

    return messages


def _event_type(name: str) -> str:
    """An ``--event`` value: a lifecycle event or a valid emitted event's type."""
    if not is_event_type(name):
        raise InvalidInputError(
            f"--event {name!r} is not an event type: {', '.join(EVENT_TYPES)}, or an emitted "
            "one (3-64 of a-z, 0-9 or '_', starting with a letter)"
        )
    return name


def _project_ids(
    database: "projctl.Database", references: "list[str] | tuple[()]", *, say: bool = True
) -> list[str]:
    """``--project`` values as ids: an existing project's exact name becomes its id; anything
    else is kept as given (an id not created yet can be watched for), and with ``say`` one
    line on stderr says so: a typo would otherwise wait in silence."""
    from projctl.model import visible

    ids = []
    for reference in references:
        try:
            ids.append(database.resolve(reference))
        except ProjectNotFoundError:
            ids.append(reference)
            if say:
                sys.stderr.write(
                    f"projctl watch: no project matches {visible(repr(reference))} yet; waiting\n"
                )
                sys.stderr.flush()
    return ids
