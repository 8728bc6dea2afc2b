"""The Typer app: parse arguments, call the core, print results, map errors to exit codes.

stdout carries results (an id, JSON, a table); stderr carries messages. Every
failure is one ``Error: ...`` line on stderr and an :class:`ExitCode`, never a
traceback. Heavy modules (rich) are imported inside the commands that need them
so that ``projctl create`` starts fast.
"""

# No `from __future__ import annotations` here, unlike the other modules: typer reads
# these signatures at every start, and evaluating string annotations cost ~15 ms of it.

import os
import sys
from collections.abc import Coroutine, Sequence
from enum import Enum, IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click.core import ParameterSource  # typer vendors click; no public alias
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from projctl import __version__
from projctl.errors import (
    InvalidInputError,
    ProjctlError,
    ProjectNotFoundError,
    ServerError,
    StoreError,
)
from projctl.events import EVENT_TYPES
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, EDITABLE_FIELDS, STATUSES, Project, Status

if TYPE_CHECKING:
    from projctl import client
    from projctl.events import Event
    from projctl.store import ProjectStore

__all__ = ["ExitCode", "app", "main"]


class ExitCode(IntEnum):
    """Exit codes of every projctl command; the README documents them."""

    OK = 0
    FAILURE = 1  #: an unexpected failure (a bug, or an OS error we did not foresee)
    INVALID_INPUT = 2  #: invalid input or usage
    NOT_FOUND = 3  #: no project with the given id
    STORE_ERROR = 4  #: database unreadable, corrupt, locked too long, or folder unwritable
    SERVER_ERROR = 5  #: the broadcast server cannot start, be reached or be stopped
    TIMEOUT = 124  #: ``watch --timeout`` ran out before ``--count`` events arrived
    INTERRUPTED = 130  #: Ctrl-C


# Typer takes a list of choices only as an Enum (a list of Literal is not supported).
EventChoice = Enum("EventChoice", {name: name for name in EVENT_TYPES}, type=str)  # type: ignore[misc]
StatusChoice = Enum("StatusChoice", {name: name for name in STATUSES}, type=str)  # type: ignore[misc]


def exit_code_for(error: ProjctlError) -> ExitCode:
    """The exit code that reports ``error``."""
    if isinstance(error, InvalidInputError):
        return ExitCode.INVALID_INPUT
    if isinstance(error, ProjectNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, StoreError):
        return ExitCode.STORE_ERROR
    if isinstance(error, ServerError):
        return ExitCode.SERVER_ERROR
    return ExitCode.FAILURE


def _report(message: str) -> None:
    # One line, whatever the message holds: scripts grep for it.
    sys.stderr.write("Error: " + " ".join(message.split()) + "\n")
    sys.stderr.flush()


class _ProjctlGroup(TyperGroup):
    """Runs the app and reports every failure as one ``Error:`` line and a documented exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else ExitCode.OK
        except ClickException as error:  # usage errors: bad option, missing argument, ...
            message = error.format_message()
            context = getattr(error, "ctx", None)
            if context is not None:
                message += f" (see '{context.command_path} --help')"
            _report(message)
            code = ExitCode.INVALID_INPUT if error.exit_code == 2 else error.exit_code
        except ProjctlError as error:
            _report(str(error))
            code = exit_code_for(error)
        except typer.Abort:
            _report("aborted")
            code = ExitCode.FAILURE
        except Exception as error:
            if os.environ.get("PROJCTL_DEBUG"):
                raise
            _report(f"unexpected {type(error).__name__}: {error} (set PROJCTL_DEBUG=1 for details)")
            code = ExitCode.FAILURE
        if standalone_mode:
            sys.exit(code)
        return code

    # Commands are built from their signatures only when used: typer would build all
    # of them (every option of every command) at every start, ~8 ms of each run.

    def list_commands(self, ctx: Any) -> list[str]:
        return [*_command_infos(), *_SUBGROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            info = _command_infos().get(cmd_name)
            if info is not None:
                self.commands[cmd_name] = typer.main.get_command_from_info(
                    info, pretty_exceptions_short=True, rich_markup_mode=None
                )
            elif cmd_name in _SUBGROUPS:
                self.commands[cmd_name] = typer.main.get_command(_SUBGROUPS[cmd_name])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list of ``--help``, from docstrings, without building the commands."""
        from typer._click.utils import make_default_short_help

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(name, make_default_short_help(_summary(name), limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _command_infos() -> dict[str, Any]:
    """The registered commands by name, in the order they are defined."""
    return {
        info.name or typer.main.get_command_name(info.callback.__name__): info
        for info in commands.registered_commands
        if info.callback is not None
    }


def _summary(name: str) -> str:
    info = _command_infos().get(name)
    if info is not None:
        doc = info.help or info.callback.__doc__ or ""
    else:
        doc = _SUBGROUPS[name].info.help or ""
    return str(doc).strip().split("\n", 1)[0]


#: Every command registers here; ``app`` (see ``_ProjctlGroup``) builds one when it is run.
commands = typer.Typer()

app = typer.Typer(
    cls=_ProjctlGroup,
    name="projctl",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="PROJCTL_DB",
        show_envvar=True,
        metavar="PATH",
        dir_okay=False,
        help="Database file. [default: <user data dir>/projctl/projects.json]",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NoBroadcastFlag = Annotated[
    bool,
    typer.Option(
        "--no-broadcast",
        envvar="PROJCTL_NO_BROADCAST",
        show_envvar=True,
        help="Commit and journal only; contact and start no server.",
    ),
]
HostOption = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="PROJCTL_HOST",
        show_envvar=True,
        help="Address the server listens on; beyond loopback, subscribers need a token.",
    ),
]
PortOption = Annotated[
    int,
    typer.Option(
        "--port",
        envvar="PROJCTL_PORT",
        show_envvar=True,
        min=0,
        max=65535,
        help="Port of the server (0: any free port).",
    ),
]
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8000
DEFAULT_IDLE_TIMEOUT = 900.0


def _complete_project_ids(context: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Existing ids starting with what was typed, each with its project's name as description.

    Runs on every TAB: it reads the database and nothing else (no rich, no server).
    """
    db = context.params.get("db")
    try:
        projects = _open_store(db).list_projects()
    except ProjctlError:
        return []
    return [(p.project_id, p.name) for p in projects if p.project_id.startswith(incomplete)]


ProjectIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="PROJECT_ID",
        help="Id of the project, e.g. proj_20231119_120000.",
        autocompletion=_complete_project_ids,
    ),
]
QuietFlag = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print nothing but errors."),
]
TypeHelp = "Lowercase slug: 1-32 of a-z, 0-9, '_' or '-'."
OwnerHelp = "Owner id (1-100 characters)."


def _open_store(db: Path | None) -> "ProjectStore":
    # Imported here: `--help` and `--version` need no database (and no tinydb, no orjson).
    from projctl.store import DEFAULT_JOURNAL_LIMIT, ProjectStore, default_db_path

    raw_limit = os.environ.get("PROJCTL_JOURNAL_LIMIT")
    journal_limit = DEFAULT_JOURNAL_LIMIT
    if raw_limit:
        try:
            journal_limit = int(raw_limit)
        except ValueError:
            raise InvalidInputError(
                f"PROJCTL_JOURNAL_LIMIT must be a whole number, got {raw_limit!r}"
            ) from None
        if journal_limit < 1:
            raise InvalidInputError(
                f"PROJCTL_JOURNAL_LIMIT must be at least 1, got {journal_limit}"
            )
    return ProjectStore(db or default_db_path(), journal_limit=journal_limit)


def _env_number(name: str, default: float, *, minimum: float = 0) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise InvalidInputError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _start_options() -> "client.StartOptions":
    """How commands start a background server: PROJCTL_HOST/PORT/IDLE_TIMEOUT or defaults."""
    from projctl import client

    return client.StartOptions(
        host=os.environ.get("PROJCTL_HOST") or DEFAULT_HOST,
        port=int(os.environ.get("PROJCTL_PORT") or DEFAULT_PORT),
        idle_timeout=_env_number("PROJCTL_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT),
    )


def _broadcast(
    store: "ProjectStore", event: "Event | None", *, no_broadcast: bool, quiet: bool = False
) -> None:
    """Forward a committed event to the database's server, starting one if none runs.

    The change is committed whatever happens here, so failure is a warning, not an error.
    """
    if event is None or no_broadcast:
        return
    from projctl import client

    try:
        start = _start_options()
        # A server reachable from other machines is only ever started on purpose (serve --host).
        client.forward(
            store.path,
            event,
            store.last_written_version,
            start=start if client.is_loopback(start.host) else None,
        )
    except (ServerError, InvalidInputError, ValueError) as error:
        if quiet:
            return
        sys.stderr.write(
            f"Warning: event {event['seq']} is committed but was not broadcast: {error}; "
            "subscribers resuming with ?since= will still receive it\n"
        )


def _print_json(value: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(value).decode())


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"projctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Manage projects from the terminal and CI; every change is journaled as an event.

    Results go to stdout, messages to stderr; every command that prints data takes --json.

    \b
    Environment:
      PROJCTL_DB             database file, like --db
                             [default: <user data dir>/projctl/projects.json]
      PROJCTL_OWNER          owner of new projects [default: your user name]
      PROJCTL_HOST           address of the broadcast server [default: localhost]
      PROJCTL_PORT           port of the broadcast server (0: any free) [default: 8000]
      PROJCTL_NO_BROADCAST   1: commit and journal only, contact no server
      PROJCTL_IDLE_TIMEOUT   seconds before an idle background server stops [default: 900]
      PROJCTL_JOURNAL_LIMIT  how many events the journal keeps [default: 1000]
      NO_COLOR               no colour in tables

    \b
    Exit codes:
      0 ok, 1 unexpected failure, 2 invalid input or usage, 3 project not found,
      4 database error, 5 server error, 124 watch timed out, 130 interrupted
    """


@commands.command()
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Project name (1-200 characters).")],
    type: Annotated[str, typer.Option("--type", "-t", help=TypeHelp)] = DEFAULT_TYPE,
    status: Annotated[
        Status, typer.Option("--status", "-s", help="Initial status.")
    ] = DEFAULT_STATUS,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            "-o",
            help=OwnerHelp + " [default: $PROJCTL_OWNER, else your user name]",
            show_default=False,
        ),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", "-d", help="Up to 10,000 characters.")
    ] = "",
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
) -> None:
    """Create a project and print its id.

    With --json, print the stored project as one JSON object instead.

    \b
    Example:
        id=$(projctl create "Billing API" --type api --owner alice)
    """
    store = _open_store(db)
    project, event = store.create(
        name, type=type, status=status, owner_id=owner, description=description
    )
    _broadcast(store, event, no_broadcast=no_broadcast, quiet=quiet)
    if quiet:
        return
    if json_output:
        _print_json(project.to_dict())
    else:
        typer.echo(project.project_id)


@commands.command()
def update(
    project_id: ProjectIdArgument,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New name.")] = None,
    type: Annotated[str | None, typer.Option("--type", "-t", help=TypeHelp)] = None,
    status: Annotated[Status | None, typer.Option("--status", "-s", help="New status.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", "-o", help=OwnerHelp)] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="New description.")
    ] = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
) -> None:
    """Change the given fields of a project.

    Prints which fields really changed, or that the project is unchanged (then
    no event is recorded). With --json, print {"project": {...}, "updated_fields": [...]}.

    \b
    Example:
        projctl update "$id" --status in_progress --description "Sprint 4"
    """
    given = (name, type, status, owner, description)
    changes = {
        field: value
        for field, value in zip(EDITABLE_FIELDS, given, strict=True)
        if value is not None
    }
    if not changes:
        raise InvalidInputError(
            "nothing to update: give at least one of "
            "--name, --type, --status, --owner, --description"
        )
    store = _open_store(db)
    project, updated_fields, event = store.update(project_id, changes)
    _broadcast(store, event, no_broadcast=no_broadcast, quiet=quiet)
    if quiet:
        return
    if json_output:
        _print_json({"project": project.to_dict(), "updated_fields": updated_fields})
    elif updated_fields:
        typer.echo(f"{project.project_id}: updated {', '.join(updated_fields)}")
    else:
        typer.echo(f"{project.project_id}: unchanged")


@commands.command()
def delete(
    project_id: ProjectIdArgument,
    missing_ok: Annotated[
        bool, typer.Option("--missing-ok", help="Exit 0 when the project does not exist.")
    ] = False,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
) -> None:
    """Delete a project.

    With --json, print {"project_id": ..., "name": ...} of the deleted project.

    \b
    Example:
        projctl delete "$id" --missing-ok
    """
    store = _open_store(db)
    try:
        project, event = store.delete(project_id)
    except ProjectNotFoundError:
        if not missing_ok:
            raise
        if not quiet:
            typer.echo(f"{project_id}: not found, nothing deleted", err=True)
        return
    _broadcast(store, event, no_broadcast=no_broadcast, quiet=quiet)
    if quiet:
        return
    if json_output:
        _print_json({"project_id": project.project_id, "name": project.name})
    else:
        typer.echo(f"{project.project_id}: deleted")


@commands.command("list")
def list_projects(
    status: Annotated[
        Status | None, typer.Option("--status", "-s", help="Only this status.")
    ] = None,
    type: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", "-o", help="Only this owner.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    db: DbOption = None,
) -> None:
    """List projects, oldest first.

    A table on a terminal; one tab-separated line per project (id, name, type,
    status, owner, updated) when piped; a JSON array with --json.

    \b
    Example:
        projctl list --status in_progress --owner alice
    """
    projects = _open_store(db).list_projects(status=status, type=type, owner_id=owner)
    if json_output:
        _print_json([project.to_dict() for project in projects])
    elif sys.stdout.isatty():
        from rich.console import Console

        from projctl.watch import render_projects_table

        console = Console()
        if projects:
            console.print(render_projects_table([project.to_dict() for project in projects]))
        else:
            Console(stderr=True).print("No projects. Create one with: projctl create NAME")
    else:
        for project in projects:
            typer.echo("\t".join(_tsv_fields(project)))


def _tsv_fields(project: Project) -> tuple[str, ...]:
    return (
        project.project_id,
        project.name,
        project.type,
        project.status,
        project.owner_id,
        project.updated_at,
    )


@commands.command()
def show(project_id: ProjectIdArgument, json_output: JsonFlag = False, db: DbOption = None) -> None:
    """Show one project.

    \b
    Example:
        projctl show "$id" --json
    """
    project = _open_store(db).get(project_id)
    if json_output:
        _print_json(project.to_dict())
        return
    record = project.to_dict()
    width = max(map(len, record))
    for field, value in record.items():
        typer.echo(f"{field:<{width}}  {value}")


@commands.command()
def serve(
    context: typer.Context,
    host: HostOption = DEFAULT_HOST,
    port: PortOption = DEFAULT_PORT,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            metavar="ORIGIN",
            help="Also accept browser pages from ORIGIN (repeatable; '*' for any). "
            "Pages on localhost, 127.0.0.1 and [::1] are always accepted.",
        ),
    ] = None,
    idle_timeout: Annotated[
        float,
        typer.Option(
            "--idle-timeout",
            metavar="SECONDS",
            min=0,
            help="Stop after this long with no subscribers and no events (0: never). "
            "Background servers use $PROJCTL_IDLE_TIMEOUT, default 900.",
        ),
    ] = 0,
    db: DbOption = None,
) -> None:
    """Run the broadcast server for a database in the foreground until Ctrl-C.

    Subscribers connect to ws://HOST:PORT/ws (?since=N to resume, ?snapshot=1 for
    the current projects first); GET /healthz reports status. Commands start a
    server in the background by themselves; run this one to choose its address.

    \b
    Example:
        projctl serve --port 8000 --allow-origin https://dashboard.example
    """
    import logging

    from projctl import client
    from projctl.server import ServerConfig, run_server

    if not client.is_loopback(host) and (
        context.get_parameter_source("host") is not ParameterSource.COMMANDLINE
    ):
        raise InvalidInputError(
            f"listening beyond loopback ({host}) needs --host on the command line, "
            "not only PROJCTL_HOST"
        )
    store = _open_store(db)
    paths = client.runtime_paths(store.path)
    client.ensure_private_folder(paths.folder)
    client.ensure_private_folder(paths.socket.parent)
    running = client.read_server_info(paths)
    if running is not None:
        raise ServerError(
            f"a server for this database is already running: pid {running.pid}, {running.url}"
        )
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per connection would drown the log of a server with many subscribers.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    subscriber_token = None
    if not client.is_loopback(host):
        import secrets

        subscriber_token = secrets.token_urlsafe(24)
    config = ServerConfig(
        db_path=paths.db_path,
        state_file=paths.state_file,
        socket_path=paths.socket,
        host=host,
        port=port,
        allow_origins=tuple(allow_origin or ()),
        idle_timeout=idle_timeout or None,
        subscriber_token=subscriber_token,
    )

    def announce(server: Any) -> None:
        sys.stderr.write(f"projctl: serving {server.url} for {store.path} (pid {os.getpid()})\n")
        if subscriber_token is not None:
            sys.stderr.write(
                f"projctl: listening beyond loopback; subscribers need ?token={subscriber_token}\n"
            )
        sys.stderr.flush()

    run_server(store, config, on_ready=announce)


@commands.command()
def watch(
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print each event as one JSON object per line, exactly as received. "
            "Automatic when stdout is not a terminal.",
        ),
    ] = False,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            metavar="SEQ",
            min=0,
            help="Replay journaled events after SEQ first (0: all retained). "
            "Without it, only new events. JSON mode only: the table starts from a snapshot.",
        ),
    ] = None,
    event: Annotated[
        list[EventChoice] | None,
        typer.Option("--event", "-e", help="Only this event type (repeatable)."),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            "-p",
            metavar="PROJECT_ID",
            help="Only this project (repeatable).",
            autocompletion=_complete_project_ids,
        ),
    ] = None,
    status: Annotated[
        list[StatusChoice] | None,
        typer.Option("--status", "-s", help="Only projects in this status."),
    ] = None,
    owner: Annotated[
        list[str] | None, typer.Option("--owner", "-o", help="Only projects of this owner.")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="Exit 0 after this many matching events."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0,
            help="Exit 124 if --count events have not arrived by then.",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Watch projects change live: a table on a terminal, JSON Lines for scripts.

    Filters: the same filter repeated means OR, different filters mean AND.
    Reconnects by itself and resumes where it left off; Ctrl-C exits with 130.

    \b
    Example:
        projctl watch --json --event project_deleted --project "$id" --count 1 --timeout 30
    """
    import asyncio

    from projctl import watch as watching

    store = _open_store(db)
    event_filter = watching.EventFilter(
        event_types=frozenset(choice.value for choice in event or ()),
        project_ids=frozenset(project or ()),
        statuses=frozenset(choice.value for choice in status or ()),
        owners=frozenset(owner or ()),
    )
    start = _start_options()
    job: Coroutine[Any, Any, object]
    if json_output or not sys.stdout.isatty():
        known = store.list_projects() if (status or owner) else []
        job = watching.run_json(
            store.path,
            since=since,
            start=start,
            event_filter=event_filter,
            count=count,
            out=sys.stdout,
            err=sys.stderr,
            known_projects=[project.to_dict() for project in known],
        )
    else:
        from rich.console import Console

        job = watching.run_live(
            store.path, start=start, console=Console(), event_filter=event_filter
        )
    try:
        asyncio.run(asyncio.wait_for(job, timeout))
    except (asyncio.TimeoutError, TimeoutError):
        _report(f"timed out after {timeout:g}s waiting for events")
        raise typer.Exit(ExitCode.TIMEOUT) from None
    except BrokenPipeError:
        # The reader went away (`| head -1`): nothing left to do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


server_app = typer.Typer(
    name="server",
    help="Inspect or stop the database's background broadcast server.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_SUBGROUPS = {"server": server_app}


@server_app.command("status")
def server_status(json_output: JsonFlag = False, db: DbOption = None) -> None:
    """Show whether a server runs for the database, and its health.

    \b
    Example:
        projctl server status --json
    """
    from projctl import client

    path = _open_store(db).path
    status = client.server_status(path)
    if json_output:
        _print_json({"running": status is not None, **(status or {})})
    elif status is None:
        typer.echo(f"no server is running for {path}")
    else:
        typer.echo(
            f"running: pid {status['pid']}, {status['url']}, latest seq {status['latest_seq']}, "
            f"{status['subscribers']} subscriber(s)"
        )


@server_app.command("stop")
def server_stop(db: DbOption = None) -> None:
    """Stop the database's server and wait until it has exited.

    \b
    Example:
        projctl server stop
    """
    from projctl import client

    path = _open_store(db).path
    stopped = client.stop_server(path)
    if stopped is None:
        typer.echo(f"no server is running for {path}", err=True)
    else:
        typer.echo(f"stopped server pid {stopped.pid}")


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="projctl")
    except Exception as error:  # raised while building the app, before _ProjctlGroup runs
        if os.environ.get("PROJCTL_DEBUG"):
            raise
        _report(f"unexpected {type(error).__name__}: {error} (set PROJCTL_DEBUG=1 for details)")
        sys.exit(ExitCode.FAILURE)
