"""Options shared by several commands, and the few helpers every command uses.

Option values are taken as given and parsed by ``projctl.config``, which owns
every rule: ``--port abc`` and ``PROJCTL_PORT=abc`` get the same one-line error.
"""

import sys
from typing import Annotated, Any

import typer

import projctl
from projctl.cli._lazy import report
from projctl.config import load_settings
from projctl.errors import ProjctlError, ServerError
from projctl.events import Event

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
OWNER_HELP = "Owner id (1-100 characters)."


def open_database(
    db: str | None,
    *,
    no_broadcast: bool = False,
    quiet: bool = False,
    host: str | None = None,
    port: str | None = None,
) -> projctl.Database:
    """The database the options and ``PROJCTL_*`` settings name; committed events that cannot
    be broadcast get one ``Warning:`` line (none with ``--quiet``)."""

    def warn(event: Event, error: ServerError) -> None:
        if not quiet:
            report(
                f"event {event['seq']} is committed but was not broadcast: {error}; "
                "subscribers resuming with ?since= will still receive it",
                prefix="Warning",
            )

    settings = load_settings(
        db=db, host=host, port=port, no_broadcast=True if no_broadcast else None
    )
    return projctl.Database(settings, on_broadcast_error=warn)


def complete_project_ids(context: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Existing ids starting with what was typed, each with its project's name as description.

    Runs on every TAB: it reads the database and nothing else (no rich, no server).
    """
    try:
        projects = open_database(context.params.get("db")).list()
    except ProjctlError:
        return []
    return [(p.project_id, p.name) for p in projects if p.project_id.startswith(incomplete)]


ProjectIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="PROJECT_ID",
        help="Id of the project, e.g. proj_20231119_120000.",
        autocompletion=complete_project_ids,
    ),
]


def print_json(value: Any) -> None:
    """One JSON value on stdout."""
    import orjson

    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()
