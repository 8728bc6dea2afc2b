"""``emit``: record an event about a project (tests ran, docs were built), then print its seq."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from projctl.cli._lazy import command
from projctl.cli._options import (
    DbOption,
    IdempotencyKeyOption,
    JsonFlag,
    NoBroadcastFlag,
    ProjectArgument,
    QuietFlag,
    complete_emitted_types,
    open_database,
    print_json,
)
from projctl.errors import InvalidInputError
from projctl.events import EMIT_DATA_MAX_BYTES, validate_emit_data, validate_event_type

#: The most ``--data @FILE`` or ``--data -`` reads: room for pretty-printed JSON whose
#: compact form is within the data limit, and no more.
DATA_READ_LIMIT = 16 * EMIT_DATA_MAX_BYTES


@command("emit")
def emit(
    project: ProjectArgument,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="EVENT_TYPE",
            help="3-64 of a-z, 0-9 or '_', starting with a letter; not one of the lifecycle "
            "events. Conventional: project_modified, documentation_generated, "
            "tests_generated, tests_run.",
            autocompletion=complete_emitted_types,
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="JSON|@FILE|-",
            help="The event's data: a JSON object of at most 64 KiB, given inline, read "
            "from a regular file (@FILE) or from stdin (-). It must not set project_id or name.",
        ),
    ] = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    idempotency_key: IdempotencyKeyOption = None,
    db: DbOption = None,
) -> None:
    """Record an event about a project and print its seq.

    The event is journaled and broadcast like create, update and delete (same seq,
    replay and watch --event filter); it changes no field of the project. Its data is
    the project's id and name, then --data. With --json, print the event instead.

    \b
    Example:
        projctl emit "$id" tests_run --data '{"passed": 41, "failed": 0, "duration_s": 12.5}'
    """
    kind = validate_event_type(event_type)
    extra = validate_emit_data({} if data is None else _parse_data(data))
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    event = database.emit(project, kind, extra, idempotency_key=idempotency_key)
    if quiet:
        return
    if json_output:
        print_json(event)
    else:
        typer.echo(str(event["seq"]))


def _parse_data(given: str) -> Any:
    """``--data``: inline JSON, ``@FILE`` (a regular file) or ``-`` (stdin), parsed; each
    read is bounded by :data:`DATA_READ_LIMIT`."""
    import orjson

    if given == "-":
        raw = sys.stdin.buffer.read(DATA_READ_LIMIT + 1)
        source = "--data: stdin"
    elif given.startswith("@"):
        raw = _read_file(given[1:])
        source = f"--data: {given[1:]}"
    else:
        raw = given.encode("utf-8")
        source = "--data"
    if len(raw) > DATA_READ_LIMIT:
        raise InvalidInputError(f"{source} holds more than {DATA_READ_LIMIT:,} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{source} is not valid JSON ({error})") from None


def _read_file(name: str) -> bytes:
    """The bytes of ``--data @FILE``: a regular file only (a FIFO or device is never
    opened for long, nor read past the limit)."""
    from projctl import _files

    if not name:
        raise InvalidInputError("--data @FILE: give a file name after @")
    try:
        found = _files.read_regular(Path(name), limit=DATA_READ_LIMIT)
    except _files.NotRegularFile:
        raise InvalidInputError(f"--data: {name} is not a regular file") from None
    except OSError as error:
        raise InvalidInputError(f"--data: cannot read {name}: {error.strerror or error}") from None
    if found is None:
        raise InvalidInputError(f"--data: no file {name}")
    return found[0]
