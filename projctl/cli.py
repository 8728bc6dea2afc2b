"""The Typer app: parse arguments, call the core, print results, map errors to exit codes.

stdout carries results (an id, JSON, a table); stderr carries messages. Every
failure is one ``Error: ...`` line on stderr and an :class:`ExitCode`, never a
traceback. Heavy modules (rich) are imported inside the commands that need them
so that ``projctl create`` starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from typer._click.exceptions import ClickException  # typer vendors click; no public alias
from typer.core import TyperGroup

from projctl import __version__
from projctl.errors import (
    InvalidInputError,
    ProjctlError,
    ProjectNotFoundError,
    StoreError,
)
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, EDITABLE_FIELDS, Project, Status
from projctl.store import DEFAULT_JOURNAL_LIMIT, ProjectStore, default_db_path

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["ExitCode", "app", "main"]


class ExitCode(IntEnum):
    """Exit codes of every projctl command; the README documents them."""

    OK = 0
    FAILURE = 1  #: an unexpected failure (a bug, or an OS error we did not foresee)
    INVALID_INPUT = 2  #: invalid input or usage
    NOT_FOUND = 3  #: no project with the given id
    STORE_ERROR = 4  #: database unreadable, corrupt, locked too long, or folder unwritable
    INTERRUPTED = 130  #: Ctrl-C


def exit_code_for(error: ProjctlError) -> ExitCode:
    """The exit code that reports ``error``."""
    if isinstance(error, InvalidInputError):
        return ExitCode.INVALID_INPUT
    if isinstance(error, ProjectNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, StoreError):
        return ExitCode.STORE_ERROR
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


app = typer.Typer(
    cls=_ProjctlGroup,
    name="projctl",
    help="Manage projects from the terminal and CI; every change is journaled as an event.",
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
ProjectIdArgument = Annotated[
    str, typer.Argument(metavar="PROJECT_ID", help="Id of the project, e.g. proj_20231119_120000.")
]
TypeHelp = "Lowercase slug: 1-32 of a-z, 0-9, '_' or '-'."
OwnerHelp = "Owner id (1-100 characters)."


def _open_store(db: Path | None) -> ProjectStore:
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


def _print_json(value: Any) -> None:
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

    Exit codes: 0 ok, 1 unexpected failure, 2 invalid input or usage,
    3 project not found, 4 database error.
    """


@app.command()
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
    db: DbOption = None,
) -> None:
    """Create a project and print its id.

    With --json, print the stored project as one JSON object instead.

    \b
    Example:
        id=$(projctl create "Billing API" --type api --owner alice)
    """
    project, _event = _open_store(db).create(
        name, type=type, status=status, owner_id=owner, description=description
    )
    if json_output:
        _print_json(project.to_dict())
    else:
        typer.echo(project.project_id)


@app.command()
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
    project, updated_fields, _event = _open_store(db).update(project_id, changes)
    if json_output:
        _print_json({"project": project.to_dict(), "updated_fields": updated_fields})
    elif updated_fields:
        typer.echo(f"{project.project_id}: updated {', '.join(updated_fields)}")
    else:
        typer.echo(f"{project.project_id}: unchanged")


@app.command()
def delete(
    project_id: ProjectIdArgument,
    missing_ok: Annotated[
        bool, typer.Option("--missing-ok", help="Exit 0 when the project does not exist.")
    ] = False,
    json_output: JsonFlag = False,
    db: DbOption = None,
) -> None:
    """Delete a project.

    With --json, print {"project_id": ..., "name": ...} of the deleted project.

    \b
    Example:
        projctl delete "$id" --missing-ok
    """
    try:
        project, _event = _open_store(db).delete(project_id)
    except ProjectNotFoundError:
        if not missing_ok:
            raise
        typer.echo(f"{project_id}: not found, nothing deleted", err=True)
        return
    if json_output:
        _print_json({"project_id": project.project_id, "name": project.name})
    else:
        typer.echo(f"{project.project_id}: deleted")


@app.command("list")
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

        console = Console()
        if projects:
            console.print(render_projects_table(projects))
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


STATUS_STYLES: dict[str, str] = {
    "created": "cyan",
    "in_progress": "yellow",
    "on_hold": "magenta",
    "completed": "green",
    "archived": "dim",
}


def render_projects_table(projects: Sequence[Project]) -> Table:
    """The projects as a Rich table, status coloured."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(projects)} project{'s' if len(projects) != 1 else ''}")
    for column in ("ID", "Name", "Type", "Status", "Owner", "Updated (UTC)"):
        table.add_column(column, overflow="fold")
    for project in projects:
        table.add_row(
            project.project_id,
            Text(project.name),
            project.type,
            Text(project.status, style=STATUS_STYLES.get(project.status, "")),
            Text(project.owner_id),
            project.updated_at[:19].replace("T", " "),
        )
    return table


@app.command()
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="projctl")
