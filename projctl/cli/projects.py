"""``create``, ``update``, ``delete``, ``list``, ``show``: parse, call the library, print."""

import sys
from typing import Annotated

import typer

from projctl.cli._lazy import command
from projctl.cli._options import (
    OWNER_HELP,
    TYPE_HELP,
    DbOption,
    JsonFlag,
    NoBroadcastFlag,
    ProjectIdArgument,
    QuietFlag,
    open_database,
    print_json,
)
from projctl.errors import InvalidInputError, ProjectNotFoundError
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, Project, Status, visible


@command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Project name (1-200 characters).")],
    type: Annotated[str, typer.Option("--type", "-t", help=TYPE_HELP)] = DEFAULT_TYPE,
    status: Annotated[
        Status, typer.Option("--status", "-s", help="Initial status.")
    ] = DEFAULT_STATUS,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            "-o",
            help=OWNER_HELP + " [default: $PROJCTL_OWNER, else your user name]",
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
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    change = database.create(
        name, type=type, status=status, owner_id=owner, description=description
    )
    if quiet:
        return
    if json_output:
        print_json(change.project.to_dict())
    else:
        typer.echo(change.project.project_id)


@command("update")
def update(
    project_id: ProjectIdArgument,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New name.")] = None,
    type: Annotated[str | None, typer.Option("--type", "-t", help=TYPE_HELP)] = None,
    status: Annotated[Status | None, typer.Option("--status", "-s", help="New status.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", "-o", help=OWNER_HELP)] = None,
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
    given = {
        "name": name,
        "type": type,
        "status": status,
        "owner_id": owner,
        "description": description,
    }
    changes = {field: value for field, value in given.items() if value is not None}
    if not changes:
        raise InvalidInputError(
            "nothing to update: give at least one of "
            "--name, --type, --status, --owner, --description"
        )
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    change = database.update(project_id, **changes)
    if quiet:
        return
    project = change.project
    if json_output:
        print_json({"project": project.to_dict(), "updated_fields": list(change.updated_fields)})
    elif change.updated_fields:
        typer.echo(f"{project.project_id}: updated {', '.join(change.updated_fields)}")
    else:
        typer.echo(f"{project.project_id}: unchanged")


@command("delete")
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
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    try:
        change = database.delete(project_id)
    except ProjectNotFoundError:
        if not missing_ok:
            raise
        if not quiet:
            typer.echo(f"{project_id}: not found, nothing deleted", err=True)
        return
    if quiet:
        return
    project = change.project
    if json_output:
        print_json({"project_id": project.project_id, "name": project.name})
    else:
        typer.echo(f"{project.project_id}: deleted")


@command("list")
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
    projects = open_database(db).list(status=status, type=type, owner_id=owner)
    if json_output:
        print_json([project.to_dict() for project in projects])
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


@command("show")
def show(project_id: ProjectIdArgument, json_output: JsonFlag = False, db: DbOption = None) -> None:
    """Show one project.

    \b
    Example:
        projctl show "$id" --json
    """
    project = open_database(db).get(project_id)
    if json_output:
        print_json(project.to_dict())
        return
    record = project.to_dict()
    width = max(map(len, record))
    for field, value in record.items():
        # The database may have been written by another program: no raw control characters.
        typer.echo(f"{field:<{width}}  {visible(value, keep_lines=field == 'description')}")
