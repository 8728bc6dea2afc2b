"""``wait``: until a project meets a condition, like ``kubectl wait --for``."""

import sys
import time
from typing import Annotated, Any

import typer

from projctl.cli._lazy import ExitCode, command, report
from projctl.cli._options import (
    DbOption,
    JsonFlag,
    OutputOption,
    ProjectArgument,
    QuietFlag,
    open_database,
    output_format,
    print_json,
    print_projects,
)
from projctl.config import parse_seconds
from projctl.errors import NotFoundError, ProjectNotFoundError
from projctl.model import PROJECT_FIELDS, Project, WaitCondition


@command("wait")
def wait(
    project: ProjectArgument,
    condition: Annotated[
        str,
        typer.Option(
            "--for",
            metavar="CONDITION",
            help="FIELD=VALUE (FIELD: status, type, owner_id, name), or delete.",
        ),
    ],
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Give up after DURATION (30s, 5m, 1h, or seconds) with exit 124 "
            "[default: wait as long as it takes].",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    db: DbOption = None,
) -> None:
    """Wait until a project meets a condition, then print it.

    Returns at once (exit 0) when the project already meets it; otherwise follows the
    live feed, as watch does, until it does. Exits 124 when --timeout runs out, 3 when
    the project does not exist or is deleted while waiting (unless waiting for its
    deletion). Prints "ID: CONDITION"; -o json: the project (as it was, for delete).

    \b
    Example:
        projctl wait "$id" --for status=completed --timeout 5m
    """
    import asyncio

    from projctl.watch.wait import run_wait

    wanted = WaitCondition.parse(condition)
    seconds = None if timeout is None else parse_seconds(timeout, "--timeout")
    chosen = output_format(output, json_output, quiet)
    deadline = None if seconds is None else time.monotonic() + seconds
    database = open_database(db)
    # The seq first: an event between the two reads is replayed, never missed.
    since = database.latest_seq()
    try:
        current = database.get(project).to_dict()
    except ProjectNotFoundError:
        gone = _deleted_in_journal(database, project) if wanted.deletion else None
        if gone is None:
            raise
        _print(gone, wanted, chosen)
        return
    if not wanted.met_by(current):
        job = run_wait(
            lambda: database.locate_server(deadline=deadline),
            current=current,
            condition=wanted,
            since=since,
        )
        try:
            met = asyncio.run(
                asyncio.wait_for(job, None if deadline is None else deadline - time.monotonic())
            )
        except (asyncio.TimeoutError, TimeoutError):
            report(
                f"timed out after {timeout} waiting for {current['project_id']} to meet {wanted}"
            )
            raise typer.Exit(ExitCode.TIMEOUT) from None
        if met is None:
            raise NotFoundError(
                f"project {current['project_id']!r} was deleted while waiting for {wanted}"
            )
        current = met
    if not quiet:
        _print(current, wanted, chosen)


def _deleted_in_journal(database: Any, reference: str) -> "dict[str, Any] | None":
    """The last record of a project the journal shows deleted, by id or name, if any."""
    for event in reversed(database.journal()):
        data = event["data"]
        if event["event_type"] == "project_deleted" and reference in (
            data.get("project_id"),
            data.get("name"),
        ):
            return dict(data)
    return None


def _print(record: "dict[str, Any]", condition: Any, chosen: "str | None") -> None:
    if chosen in ("json", "jsonl"):
        print_json(record)
    elif chosen == "name" or (chosen is not None and set(PROJECT_FIELDS) - set(record)):
        typer.echo(record["project_id"])  # the journal keeps only a deleted one's id and name
    elif chosen is not None:
        print_projects([Project.from_dict(record)], chosen)
    else:
        said = "deleted" if condition.deletion else str(condition)
        typer.echo(f"{record['project_id']}: {said}")
    sys.stdout.flush()
