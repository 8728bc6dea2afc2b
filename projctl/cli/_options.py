"""Options shared by several commands, and the few helpers every command uses.

Option values are taken as given and parsed by ``projctl.config``, which owns
every rule: ``--port abc`` and ``PROJCTL_PORT=abc`` get the same one-line error.
"""

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import projctl
from projctl.cli._lazy import report, url_override
from projctl.config import Settings, load_settings
from projctl.errors import InvalidInputError, ProjctlError, ServerError
from projctl.events import CONVENTIONAL_EVENT_TYPES, EVENT_TYPES, Event
from projctl.model import STATUSES

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
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
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
) -> projctl.Database:
    """The database the options and ``PROJCTL_*`` settings name (on a team server when
    ``PROJCTL_URL`` or ``--url`` is set, else the local file: the commands need not know).
    Committed events that cannot be broadcast get one ``Warning:`` line (none with
    ``--quiet``)."""
    return _database(_settings(db, no_broadcast=no_broadcast, host=host, port=port), quiet=quiet)


def local_database(
    db: str | None, *, host: str | None = None, port: str | None = None
) -> projctl.Database:
    """The local database, for commands that run or manage this machine's server."""
    settings = _settings(db, host=host, port=port)
    if settings.url is not None:
        raise InvalidInputError(
            f"this command works on a local database; {settings.url_source} points at a "
            "team server (unset it, or run it on the server's machine)"
        )
    return _database(settings, quiet=False)


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
    )


def _database(settings: Settings, *, quiet: bool) -> projctl.Database:
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

    database = projctl.Database(settings, on_broadcast_error=warn, on_lock_wait=waiting)
    database.check_file()  # before any lock file, log or server is made for it
    return database


def complete_projects(context: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Existing ids and names starting with what was typed, each with a description (the
    name for an id, the id for a name). Names with spaces or shell characters are left
    out: typed by hand, they need quotes.

    Runs on every TAB: it reads the database and nothing else (no rich, no server).
    """
    try:
        projects = open_database(context.params.get("db")).list()
    except ProjctlError:
        return []
    ids = [(p.project_id, p.name) for p in projects if p.project_id.startswith(incomplete)]
    # Only names a shell takes as one word as they are: the completion scripts insert a
    # candidate unquoted, and "Billing API" would become two arguments.
    names = [
        (p.name, p.project_id)
        for p in projects
        if p.name.startswith(incomplete) and _SHELL_WORD.fullmatch(p.name)
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
