"""``create``, ``update``, ``delete``, ``list``, ``show``: parse, call the library, print."""

import contextlib
import sys
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from projctl.cli._lazy import command, report
from projctl.cli._options import (
    OWNER_HELP,
    STATUS_HELP,
    TYPE_HELP,
    DbOption,
    IdempotencyKeyOption,
    JsonFlag,
    NoBroadcastFlag,
    OutputOption,
    ProjectsArgument,
    QuietFlag,
    database_missing,
    open_database,
    output_format,
    print_json,
    print_json_lines,
    print_projects,
    say_if_missing,
)
from projctl.config import parse_count
from projctl.errors import (
    InvalidInputError,
    NameTakenError,
    NotFoundError,
    ProjectNotFoundError,
)
from projctl.model import DEFAULT_STATUS, DEFAULT_TYPE, Project, Status, visible

if TYPE_CHECKING:
    import projctl

#: What -o formats other than JSON print for a command whose result is a project.
PROJECT_FORMATS = ("tsv", "table", "wide")

UniqueFlag = Annotated[
    bool,
    typer.Option(
        "--unique",
        help="Refuse (exit 2) a name another project has; without it, a Warning names it. "
        "[env: PROJCTL_UNIQUE_NAMES]",
    ),
]


@contextlib.contextmanager
def names_checked() -> Iterator[None]:
    """A name refused for ``--unique`` says how it came to be refused."""
    try:
        yield
    except NameTakenError as error:
        raise NameTakenError(
            f"{error}; names are unique (--unique or PROJCTL_UNIQUE_NAMES)"
        ) from None


def warn_same_name(name: str, others: Sequence[str]) -> None:
    """One ``Warning:`` naming the projects that already had ``name``."""
    if others:
        report(
            f"another project is named {name.strip()!r} too: {', '.join(others)}",
            prefix="Warning",
        )


def _references(
    database: "projctl.Database",
    references: list[str],
    *,
    exact: bool,
    missing_ok: bool = False,
) -> list[str]:
    """What each reference names, for a change (one each, in order): an id, or the
    reference as given.

    ``exact`` (a change under an idempotency key): as given, ids and exact names, which
    the commit resolves in its own transaction, so that a run again is the very same
    request. Else an id prefix is resolved here too; with ``missing_ok`` a reference that
    names nothing is kept as given (the commit skips it).
    """
    if exact:
        return list(references)
    found = []
    for reference in references:
        try:
            found.append(database.resolve(reference))
        except ProjectNotFoundError:
            if not missing_ok:
                raise
            found.append(reference)
    return found


def _nth_key(key: str | None, n: int, ids: list[str]) -> str | None:
    """The idempotency key of the ``n``-th of several updates made under ``key``."""
    return key if key is None or len(ids) == 1 else f"{key}/{n + 1}"


@command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Project name (1-200 characters).")],
    type: Annotated[
        str, typer.Option("--type", "-t", metavar="TYPE", help=TYPE_HELP)
    ] = DEFAULT_TYPE,
    status: Annotated[
        Status,
        typer.Option("--status", "-s", metavar="STATUS", help="Initial status: " + STATUS_HELP),
    ] = DEFAULT_STATUS,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            metavar="OWNER",
            help=OWNER_HELP + " [default: $PROJCTL_OWNER, else your user name]",
            show_default=False,
        ),
    ] = None,
    description: Annotated[
        str,
        typer.Option("--description", "-d", metavar="TEXT", help="Up to 10,000 characters."),
    ] = "",
    unique: UniqueFlag = False,
    output: OutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Create a project and print its id.

    A name another project has gets one Warning naming it; --unique refuses it.

    With -o json (--json) or jsonl, print the stored project as one JSON object instead;
    -o tsv, table or wide print it as list does.

    \b
    Example:
        id=$(projctl create "Billing API" --type api --owner alice)
    """
    chosen = output_format(output, json_output, quiet, owner_option=True)
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    with names_checked():
        change = database.create(
            name,
            type=type,
            status=status,
            owner_id=owner,
            description=description,
            unique=unique or database.settings.unique_names,
            idempotency_key=idempotency_key,
        )
    warn_same_name(name, change.same_name)
    if quiet:
        return
    if chosen in ("json", "jsonl"):
        print_json(change.project.to_dict())
    elif chosen in PROJECT_FORMATS:
        print_projects([change.project], chosen)
    else:  # the id alone, as -o name prints it
        typer.echo(change.project.project_id)


@command("update")
def update(
    projects: ProjectsArgument,
    name: Annotated[
        str | None, typer.Option("--name", "-n", metavar="NAME", help="New name.")
    ] = None,
    type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help=TYPE_HELP)
    ] = None,
    status: Annotated[
        Status | None,
        typer.Option("--status", "-s", metavar="STATUS", help="New status: " + STATUS_HELP),
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", metavar="OWNER", help=OWNER_HELP)] = None,
    description: Annotated[
        str | None,
        typer.Option("--description", "-d", metavar="TEXT", help="New description."),
    ] = None,
    unique: UniqueFlag = False,
    output: OutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Change the given fields of one or more projects.

    Prints which fields really changed, or that the project is unchanged (then
    no event is recorded), a line per project. Every project is found first: one
    that does not exist changes nothing (exit 3). With -o json (--json), print
    {"project": {...}, "updated_fields": [...]} (an array for several; -o jsonl: one a
    line); -o name prints the ids, -o tsv, table or wide the projects as list does.
    Renaming to a name another project has gets one Warning; --unique refuses it.

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
    chosen = output_format(output, json_output, quiet, owner_option=True)
    if not changes:
        raise InvalidInputError(
            "nothing to update: give at least one of "
            "--name, --type, --status, --owner, --description"
        )
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    ids = list(dict.fromkeys(_references(database, projects, exact=idempotency_key is not None)))
    if name is not None and len(ids) > 1:
        raise InvalidInputError(f"--name would give {len(ids)} projects one name: update one")
    with names_checked():
        changes_made = [
            database.update(
                project_id,
                idempotency_key=_nth_key(idempotency_key, n, ids),
                unique=unique or database.settings.unique_names,
                **changes,
            )
            for n, project_id in enumerate(ids)
        ]
    if name is not None:
        warn_same_name(name, changes_made[0].same_name)
    if quiet:
        return
    results = [
        {"project": change.project.to_dict(), "updated_fields": list(change.updated_fields)}
        for change in changes_made
    ]
    if chosen == "json":
        print_json(results[0] if len(results) == 1 else results)
    elif chosen == "jsonl":
        print_json_lines(results)
    elif chosen is not None:
        print_projects([change.project for change in changes_made], chosen)
    for change in changes_made if chosen is None else ():
        updated = change.project
        if change.updated_fields:
            typer.echo(f"{updated.project_id}: updated {', '.join(change.updated_fields)}")
        else:
            typer.echo(f"{updated.project_id}: unchanged")


@command("delete")
def delete(
    projects: ProjectsArgument,
    missing_ok: Annotated[
        bool,
        typer.Option("--missing-ok", help="Exit 0 when a project does not exist (skip it)."),
    ] = False,
    output: OutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    no_broadcast: NoBroadcastFlag = False,
    db: DbOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Delete one or more projects: all of them, or none when one is missing.

    Unless --missing-ok, a project that does not exist deletes nothing and exits 3.
    With -o json (--json), print {"project_id": ..., "name": ..., "deleted": true} for
    each (one object for one project, an array for several; -o jsonl: one a line); a
    missing one has "deleted": false. -o name prints the deleted ids, -o tsv, table or
    wide the deleted projects as they were.

    \b
    Example:
        projctl delete "$id" --missing-ok
    """
    chosen = output_format(output, json_output, quiet)
    database = open_database(db, no_broadcast=no_broadcast, quiet=quiet)
    references = (
        list(projects)  # a run again under the key repeats the very same request
        if idempotency_key is not None
        else _references(database, projects, exact=False, missing_ok=True)
    )
    changes = database.delete_many(
        references, missing_ok=missing_ok, idempotency_key=idempotency_key
    )
    gone_by = {
        reference: change.project
        for change in changes
        for reference in (change.project.project_id, change.project.name)
    }
    # Each reference as given, with the id of what it deleted (None: it named nothing).
    resolved = []
    for given, reference in zip(projects, references, strict=True):
        gone = gone_by.get(reference)
        resolved.append((given, gone.project_id if gone is not None else None))
    deleted = {change.project.project_id: change.project for change in changes}
    if quiet:
        return
    results: list[dict[str, object]] = []
    for reference, project_id in resolved:
        gone = deleted.get(project_id) if project_id is not None else None
        if gone is None:
            results.append({"project_id": reference, "deleted": False})
            if chosen not in ("json", "jsonl"):
                typer.echo(f"{reference}: not found, nothing deleted", err=True)
        else:
            results.append({"project_id": gone.project_id, "name": gone.name, "deleted": True})
            if chosen is None:
                typer.echo(f"{gone.project_id}: deleted")
    if chosen == "json":
        print_json(results[0] if len(results) == 1 else results)
    elif chosen == "jsonl":
        print_json_lines(results)
    elif chosen is not None:
        print_projects(list(deleted.values()), chosen)


#: ``list --sort`` keys: the record field, and whether the newest (largest) comes first.
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "created": ("created_at", True),
    "updated": ("updated_at", True),
    "name": ("name", False),
    "status": ("status", False),
}
SortChoice = Enum("SortChoice", {name: name for name in SORT_KEYS}, type=str)  # type: ignore[misc]


@command("list")
def list_projects(
    status: Annotated[
        Status | None,
        typer.Option("--status", "-s", metavar="STATUS", help="Only this status: " + STATUS_HELP),
    ] = None,
    type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only this type.")
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", metavar="OWNER", help="Only this owner.")
    ] = None,
    sort: Annotated[
        SortChoice | None,
        typer.Option(
            "--sort",
            metavar="FIELD",
            help="Order by created or updated (newest first), name or status "
            "[default: creation order, oldest first].",
            show_default=False,
        ),
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    limit: Annotated[
        str | None,
        typer.Option("--limit", "-n", metavar="N", help="Show at most N projects."),
    ] = None,
    output: OutputOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON array (-o json).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print ids only, as -o name does.")
    ] = False,
    db: DbOption = None,
) -> None:
    """List projects, oldest first unless --sort says otherwise.

    A table on a terminal; one tab-separated line per project (id, name, type,
    status, owner, updated) when piped. -o picks: json (one array), jsonl, tsv,
    table, wide (also created and description) or name (ids only).

    \b
    Example:
        projctl list --status in_progress --sort updated --limit 10
    """
    count = None if limit is None else parse_count(limit, "--limit", minimum=1)
    chosen = output_format(output, json_output, quiet, owner_option=True)
    if quiet:
        chosen = "name"  # as docker ps -q: ids only
    database = open_database(db, looks_only=True)
    missing = say_if_missing(database)
    projects = database.list(status=status, type=type, owner_id=owner)
    if sort is not None:
        field, newest_first = SORT_KEYS[sort.value]
        projects.sort(key=lambda project: project.to_dict()[field], reverse=newest_first)
    if reverse:
        projects.reverse()
    if count is not None:
        projects = projects[:count]
    if chosen is None:
        chosen = "table" if sys.stdout.isatty() else "tsv"
    if chosen not in ("table", "wide") or projects:
        print_projects(projects, chosen)
    elif not missing:
        from rich.console import Console

        filters = [
            f"--{name} {value}"
            for name, value in (("status", status), ("type", type), ("owner", owner))
            if value is not None
        ]
        if filters:
            total = len(database.list())
            message = f"No projects match {' '.join(filters)} ({total} in all)."
        else:
            message = "No projects. Create one with: projctl create NAME"
        Console(stderr=True).print(message, markup=False, highlight=False)


@command("show")
def show(
    projects: ProjectsArgument,
    output: OutputOption = None,
    json_output: JsonFlag = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print nothing: the exit code says if all exist."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Show one or more projects.

    With -o json (--json), one object for one project, an array for several; -o jsonl,
    tsv, table, wide or name print them as list does. A project that does not exist
    is reported (exit 3) after the others are shown; one given twice is shown once.

    \b
    Example:
        projctl show "$id" --json
    """
    chosen = output_format(output, json_output, quiet)
    database = open_database(db, looks_only=True)
    if database_missing(database):
        raise NotFoundError(f"no database at {database.path} yet, so no project {projects[0]!r}")
    found: dict[str, Project] = {}  # by id: a project given twice is shown once
    missing: ProjectNotFoundError | InvalidInputError | None = None
    for reference in projects:
        try:
            project_id = database.resolve(reference)
            found.setdefault(project_id, database.get(project_id))
        except (ProjectNotFoundError, InvalidInputError) as error:
            missing = missing or error
    if quiet:
        pass
    elif chosen == "json":
        records = [project.to_dict() for project in found.values()]
        if records:
            print_json(records[0] if len(set(projects)) == 1 else records)
    elif chosen is not None:
        print_projects(list(found.values()), chosen)
    else:
        for number, project in enumerate(found.values()):
            if number:
                typer.echo("")
            record = project.to_dict()
            width = max(map(len, record))
            for field, value in record.items():
                # Another program may have written the database: no raw control characters.
                shown = visible(value, keep_lines=field == "description")
                typer.echo(f"{field:<{width}}  {shown}")
    if missing is not None:
        raise missing
