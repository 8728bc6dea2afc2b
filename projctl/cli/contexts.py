"""``context``: named databases and team servers, and which one commands use, as kubectl's
and docker's contexts switch between a laptop, a team server and a cluster.

The contexts live in ``<user config dir>/projctl/contexts.json``, mode 0600: paths and URLs
only. A team server's token stays in its own file (``--token-file``), read when used.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from projctl._contexts import Context, Contexts, contexts_path, read_contexts
from projctl.cli._lazy import ExitCode, command
from projctl.cli._options import (
    REPORT_FORMATS,
    JsonFlag,
    QuietFlag,
    ReportOutputOption,
    output_format,
    print_json,
)
from projctl.config import (
    load_settings,
    parse_context_name,
    parse_db_location,
    parse_file,
    parse_url,
    read_token_file,
)
from projctl.errors import InvalidInputError, NotFoundError

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The context's name.")]


def _write(contexts: Contexts) -> Path:
    """Replace the contexts file (0600, in a 0700 folder) with ``contexts``."""
    import orjson

    from projctl import _files

    path = contexts_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = {
        "current": contexts.current,
        "contexts": {name: context.to_dict() for name, context in contexts.contexts.items()},
    }
    _files.atomic_write(
        path, orjson.dumps(payload, option=orjson.OPT_INDENT_2), mode=0o600, keep_mode=False
    )
    return path


def _absolute(raw: str) -> str:
    return str(Path(os.path.expanduser(raw)).absolute())


@command("context add")
def context_add(
    name: NameArgument,
    db: Annotated[
        str | None,
        typer.Option("--db", metavar="PATH", help="A database file (its folder must exist)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", help="A team server: wss://host:port."),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="The file (mode 0600) holding the team server's token; read at each use.",
        ),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option("--ca-file", metavar="FILE", help="A CA certificate to trust for it."),
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Make it the current context too.")] = False,
    quiet: QuietFlag = False,
) -> None:
    """Add (or replace) a context: a database file, or a team server.

    Give --db PATH, or --url URL with --token-file FILE (never a token itself: a command
    line can be read by other users) and --ca-file FILE for a private CA. Paths are kept
    absolute. The first context added becomes the current one.

    \b
    Example:
        projctl context add team --url wss://projctl.example:8443 --token-file ~/.team-token
    """
    parse_context_name(name, "NAME")
    if (db is None) == (url is None):
        raise InvalidInputError("give --db PATH or --url URL (one of them)")
    if db is not None and (token_file is not None or ca_file is not None):
        raise InvalidInputError("--token-file and --ca-file go with --url, not --db")
    if db is not None:
        location = parse_db_location(db, "--db")
        # A file is kept absolute; a nats:// location as given (it is no path).
        context = Context(name, db=_absolute(db) if isinstance(location, Path) else db)
    else:
        assert url is not None
        checked_token = None
        if token_file is not None:
            read_token_file(token_file, "--token-file")  # there, private, and a token
            checked_token = _absolute(token_file)
        checked_ca = None if ca_file is None else str(parse_file(ca_file, "--ca-file").absolute())
        context = Context(
            name, url=parse_url(url, "--url"), token_file=checked_token, ca_file=checked_ca
        )
    known = read_contexts()
    current = name if use or not known.contexts else known.current
    path = _write(Contexts(current, {**known.contexts, name: context}))
    if not quiet:
        typer.echo(f"context {name} added to {path}" + (" (current)" if current == name else ""))


@command("context use")
def context_use(name: NameArgument, quiet: QuietFlag = False) -> None:
    """Make a context the current one: commands use it unless told otherwise.

    --db, --url, --context, PROJCTL_CONTEXT, PROJCTL_DB and PROJCTL_URL still win over it.

    \b
    Example:
        projctl context use laptop
    """
    known = read_contexts()
    if name not in known.contexts:
        raise NotFoundError(f"no context named {name!r} (projctl context list shows them)")
    _write(Contexts(name, known.contexts))
    if not quiet:
        typer.echo(f"now using context {name}")


@command("context list")
def context_list(
    output: ReportOutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """List the contexts, marking the current one.

    -o json (--json): {"current": NAME or null, "contexts": {NAME: {...}}}.

    \b
    Example:
        projctl context list
    """
    chosen = output_format(output, json_output, quiet, formats=REPORT_FORMATS)
    known = read_contexts()
    if quiet:
        return
    if chosen is not None:
        print_json(
            {
                "current": known.current,
                "contexts": {name: c.to_dict() for name, c in known.contexts.items()},
            }
        )
        return
    if not known.contexts:
        typer.echo("no contexts yet (projctl context add NAME --db PATH | --url URL)", err=True)
        return
    for name, context in known.contexts.items():
        mark = "*" if name == known.current else " "
        where = context.db if context.db is not None else f"{context.url} (team server)"
        typer.echo(f"{mark} {name}\t{where}")


@command("context show")
def context_show(
    output: ReportOutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Show the context in force, and what chose it.

    Exits 3 when none is: commands then use PROJCTL_DB or PROJCTL_URL, or the default
    database. -o json (--json): {"name", "source", ...the context}.

    \b
    Example:
        projctl context show --json
    """
    from projctl.cli._lazy import context_override

    chosen = output_format(output, json_output, quiet, formats=REPORT_FORMATS)
    settings = load_settings(context=context_override())
    if settings.context is None:
        if not quiet and chosen is None:
            typer.echo("no context is in force", err=True)
        raise typer.Exit(ExitCode.NOT_FOUND)
    context = read_contexts().contexts[settings.context]
    if quiet:
        return
    if chosen is not None:
        print_json({"name": context.name, "source": settings.context_source, **context.to_dict()})
        return
    where = context.db if context.db is not None else f"{context.url} (team server)"
    typer.echo(f"{context.name}: {where} (from {settings.context_source})")


@command("context remove")
def context_remove(name: NameArgument, quiet: QuietFlag = False) -> None:
    """Remove a context.

    \b
    Example:
        projctl context remove old-laptop
    """
    known = read_contexts()
    if name not in known.contexts:
        raise NotFoundError(f"no context named {name!r} (projctl context list shows them)")
    rest = {other: c for other, c in known.contexts.items() if other != name}
    _write(Contexts(None if known.current == name else known.current, rest))
    if not quiet:
        typer.echo(f"context {name} removed")
