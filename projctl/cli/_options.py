"""Options shared by several commands, and the few helpers every command uses.

Option values are taken as given and parsed by ``projctl.config``, which owns
every rule: ``--port abc`` and ``PROJCTL_PORT=abc`` get the same one-line error.
"""

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

import projctl
from projctl.cli._lazy import (
    completion_shell,
    context_override,
    report,
    token_file_override,
    url_override,
)
from projctl.config import Settings, check_db_folder, load_settings
from projctl.errors import InvalidInputError, ProjctlError, ServerError
from projctl.events import CONVENTIONAL_EVENT_TYPES, EVENT_TYPES, Event
from projctl.model import STATUSES, Project, visible

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="PATH",
        help="Database file; overrides $PROJCTL_DB. "
        "[default: <user data dir>/projctl/projects.json]",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text (-o json).")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        metavar="KEY",
        help="Apply this change once: run again with the same KEY, it prints the first "
        "result and writes nothing (a different change under KEY exits 2).",
        show_default=False,
    ),
]

#: Every ``-o/--output`` format, as kubectl names them; ``name``: ids only.
OUTPUT_FORMATS: tuple[str, ...] = ("json", "jsonl", "tsv", "table", "wide", "name")
#: The formats of a command that prints one report, not projects (``info``, ``server status``).
REPORT_FORMATS: tuple[str, ...] = ("json", "jsonl")


def _complete_formats(formats: tuple[str, ...]) -> Any:
    def complete(incomplete: str) -> list[str]:
        return [name for name in formats if name.startswith(incomplete)]

    return complete


def output_option(formats: tuple[str, ...], meaning: str) -> Any:
    """The ``-o/--output FORMAT`` option of a command that prints ``formats``."""
    return typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help=f"Output format: {meaning}. --json is -o json.",
        show_default=False,
        autocompletion=_complete_formats(formats),
    )


OutputOption = Annotated[
    str | None,
    output_option(
        OUTPUT_FORMATS,
        "json, jsonl (an object a line), tsv, table, wide (a table with every field) "
        "or name (ids only)",
    ),
]
ReportOutputOption = Annotated[
    str | None, output_option(REPORT_FORMATS, "json or jsonl (the same object, one line)")
]


def output_format(
    output: str | None,
    json_output: bool,
    quiet: bool = False,
    *,
    formats: tuple[str, ...] = OUTPUT_FORMATS,
    owner_option: bool = False,
) -> str | None:
    """The format ``-o``/``--json`` ask for (``None``: the command's own text).

    Raises :class:`InvalidInputError` for a format the command does not print, for
    ``--json`` with another ``-o``, and for ``--quiet`` with either: quiet and JSON
    cannot both be honoured, and a script asking for both has a bug worth seeing.
    ``owner_option``: the command has ``--owner``, which ``-o`` meant before.
    """
    chosen = output.strip().lower() if output is not None else None
    if chosen is not None and chosen not in formats:
        message = f"-o is the output format ({', '.join(formats)}), not {output!r}"
        if chosen not in OUTPUT_FORMATS and owner_option:
            message = f"-o is the output format ({', '.join(formats)}); for the owner use --owner"
        raise InvalidInputError(message)
    if json_output:
        if chosen not in (None, "json"):
            raise InvalidInputError(f"--json and -o {chosen} contradict each other: give one")
        chosen = "json"
    if quiet and chosen is not None:
        flag = "--json" if json_output else f"-o {chosen}"
        raise InvalidInputError(f"--quiet and {flag} contradict each other: give one")
    return chosen


NoBroadcastFlag = Annotated[
    bool,
    typer.Option(
        "--no-broadcast",
        help="Commit and journal only; contact and start no server. [env: PROJCTL_NO_BROADCAST]",
    ),
]
HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        metavar="HOST",
        help="Address the server listens on; beyond loopback, subscribers need a token. "
        "[env: PROJCTL_HOST; default: localhost]",
        show_default=False,
    ),
]
PortOption = Annotated[
    str | None,
    typer.Option(
        "--port",
        metavar="PORT",
        help="Port of the server, 0-65535 (0: any free port). [env: PROJCTL_PORT; default: 8000]",
        show_default=False,
    ),
]
TYPE_HELP = "Lowercase slug: 1-32 of a-z, 0-9, '_' or '-'."
STATUS_HELP = ", ".join(STATUSES) + "."
OWNER_HELP = "Owner id (1-100 characters)."


def open_database(
    db: str | None,
    *,
    no_broadcast: bool = False,
    quiet: bool = False,
    host: str | None = None,
    port: str | None = None,
    looks_only: bool = False,
) -> projctl.Database:
    """The database the options and ``PROJCTL_*`` settings name (on a team server when
    ``PROJCTL_URL`` or ``--url`` is set, else the local file: the commands need not know).
    Committed events that cannot be broadcast get one ``Warning:`` line (none with
    ``--quiet``). Unless ``looks_only`` (a command that creates nothing: no database, no
    server), the folder of a path given by ``--db`` or ``PROJCTL_DB`` must exist."""
    settings = _settings(db, no_broadcast=no_broadcast, host=host, port=port)
    return _database(settings, quiet=quiet, looks_only=looks_only)


def local_database(
    db: str | None,
    *,
    host: str | None = None,
    port: str | None = None,
    looks_only: bool = False,
) -> projctl.Database:
    """The local database, for commands that run or manage this machine's server."""
    settings = _settings(db, host=host, port=port)
    if settings.url is not None:
        raise InvalidInputError(
            f"this command works on a local database; {settings.url_source} points at a "
            "team server (unset it, or run it on the server's machine)"
        )
    return _database(settings, quiet=False, looks_only=looks_only)


def any_database(db: str | None, *, looks_only: bool = False) -> projctl.Database:
    """The database, local or a team server's, for commands that answer for both."""
    settings = _settings(db)
    return _database(settings, quiet=False, looks_only=looks_only)


def database_missing(database: projctl.Database) -> bool:
    """Whether a local database given by ``--db`` or ``PROJCTL_DB`` does not exist yet (the
    default one is expected to be missing until the first change)."""
    settings = database.settings
    return (
        settings.url is None
        and settings.db_source != "default"
        and not os.path.lexists(database.path)
    )


def say_if_missing(database: projctl.Database) -> bool:
    """Say on stderr that a database given by ``--db`` or ``PROJCTL_DB`` does not exist yet
    (a mistyped path must not look like an empty registry); return whether it is missing."""
    if not database_missing(database):
        return False
    sys.stderr.write(f"projctl: no database at {database.path} yet\n")
    sys.stderr.flush()
    return True


def _settings(
    db: str | None,
    *,
    no_broadcast: bool = False,
    host: str | None = None,
    port: str | None = None,
) -> Settings:
    return load_settings(
        db=db,
        host=host,
        port=port,
        no_broadcast=True if no_broadcast else None,
        url=url_override(),
        context=context_override(),
        token_file=token_file_override(),
    )


def _database(settings: Settings, *, quiet: bool, looks_only: bool = False) -> projctl.Database:
    def warn(event: Event, error: ServerError) -> None:
        if not quiet:
            report(
                f"event {event['seq']} is committed but was not broadcast: {error}; "
                "subscribers resuming with ?since= will still receive it",
                prefix="Warning",
            )

    def waiting(lock: Path) -> None:
        from projctl._files import lock_holder

        holder = lock_holder(lock)
        by = f" (held by pid {holder})" if holder is not None else ""
        sys.stderr.write(f"projctl: waiting for the database lock {lock}{by}...\n")
        sys.stderr.flush()

    if not looks_only:
        check_db_folder(settings)  # before a change or a server creates a folder for it
    database = projctl.Database(settings, on_broadcast_error=warn, on_lock_wait=waiting)
    database.check_file()  # before any lock file, log or server is made for it
    return database


def complete_projects(context: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Existing ids and names starting with what was typed, each with a description (the
    name for an id, the id for a name). In bash a name with spaces or shell characters
    comes escaped (``Billing\\ API``); other shells leave such names out.

    Runs on every TAB: it reads the database and nothing else (no rich, no server).
    """
    try:
        projects = open_database(context.params.get("db"), looks_only=True).list()
    except ProjctlError:
        return []
    ids = [(p.project_id, p.name) for p in projects if p.project_id.startswith(incomplete)]
    # bash gets every name: its candidates are escaped as one shell word (Billing\ API).
    # zsh's and fish's scripts insert a name as given: "Billing API" would be two arguments.
    bash = completion_shell() == "bash"
    names = [
        (p.name, p.project_id)
        for p in projects
        if p.name.startswith(incomplete) and (bash or _SHELL_WORD.fullmatch(p.name))
    ]
    return ids + names


def _journaled_types(context: typer.Context) -> list[str]:
    """The event types in the database's journal, oldest first, each once; none when it
    cannot be read."""
    try:
        journal = open_database(context.params.get("db")).journal()
    except ProjctlError:
        return []
    return list(dict.fromkeys(event["event_type"] for event in journal))


def complete_event_types(context: typer.Context, incomplete: str) -> list[str]:
    """``watch --event``: the lifecycle events, then every other type in the journal."""
    known = list(dict.fromkeys([*EVENT_TYPES, *_journaled_types(context)]))
    return [name for name in known if name.startswith(incomplete)]


def complete_emitted_types(context: typer.Context, incomplete: str) -> list[str]:
    """``emit``'s EVENT_TYPE: the conventional names, then every emitted type in the journal."""
    journaled = [name for name in _journaled_types(context) if name not in EVENT_TYPES]
    known = list(dict.fromkeys([*CONVENTIONAL_EVENT_TYPES, *journaled]))
    return [name for name in known if name.startswith(incomplete)]


_SHELL_WORD = re.compile(r"[\w.@%+=:,/-]+")
_PROJECT_HELP = "Id of the project (e.g. proj_20231119_120000), or its exact name."
ProjectArgument = Annotated[
    str,
    typer.Argument(metavar="PROJECT", help=_PROJECT_HELP, autocompletion=complete_projects),
]
ProjectsArgument = Annotated[
    list[str],
    typer.Argument(
        metavar="PROJECT",
        help=_PROJECT_HELP + " Several may be given.",
        autocompletion=complete_projects,
    ),
]


def print_json(value: Any) -> None:
    """One JSON value on stdout."""
    import orjson

    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


def tsv_fields(project: Project) -> tuple[str, ...]:
    """A project's tab-separated line: id, name, type, status, owner, updated."""
    # Made visible: a tab or newline from another program must not break the columns.
    return tuple(
        visible(value)
        for value in (
            project.project_id,
            project.name,
            project.type,
            project.status,
            project.owner_id,
            project.updated_at,
        )
    )


def print_projects(projects: Sequence[Project], output: str) -> None:
    """``projects`` in the ``-o`` format ``output`` (``json``: one array)."""
    if output == "json":
        print_json([project.to_dict() for project in projects])
    elif output == "jsonl":
        print_json_lines([project.to_dict() for project in projects])
    elif output == "name":
        for project in projects:
            typer.echo(project.project_id)
    elif output == "tsv":
        for project in projects:
            typer.echo("\t".join(tsv_fields(project)))
    else:  # table, wide
        from rich.console import Console

        from projctl.watch import render_projects_table

        # In a pipe no terminal sets the width: the table takes what its cells need
        # rather than cutting them at 80 columns. On a terminal, its size now: COLUMNS
        # may have been exported once and gone stale (a terminal of size 0 has none).
        width = None
        if sys.stdout.isatty():
            with contextlib.suppress(OSError, ValueError):
                width = os.get_terminal_size(sys.stdout.fileno()).columns
            width = width or Console().width
        table = render_projects_table(
            [project.to_dict() for project in projects], wide=output == "wide", width=width
        )
        Console(width=width or 10_000).print(table)


def print_json_lines(values: Sequence[Any]) -> None:
    """Each value as one JSON line on stdout."""
    import orjson

    sys.stdout.write("".join(orjson.dumps(value).decode() + "\n" for value in values))
    sys.stdout.flush()
