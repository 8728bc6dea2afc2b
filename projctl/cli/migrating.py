"""``migrate``: move a database file into a NATS JetStream stream."""

from typing import Annotated

import typer

from projctl.cli._lazy import command
from projctl.cli._options import QuietFlag, _database, _settings
from projctl.errors import InvalidInputError, NotFoundError


@command("migrate")
def migrate(
    source: Annotated[
        str,
        typer.Option("--from", metavar="PATH", help="The database file to copy from (unchanged)."),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="NATS_URL",
            help="The stream to copy into: nats://HOST:PORT[,HOST:PORT...]/NAME (or tls://), "
            "empty or holding an earlier run of this same migration.",
        ),
    ],
    quiet: QuietFlag = False,
) -> None:
    """Copy every project of a database file into a NATS JetStream database.

    Each project keeps its id, fields and timestamps and enters the stream as one
    project_created event, in creation order (the file's journal is not copied: the
    stream's seqs start at 1). Running it again writes only what is missing, so an
    interrupted run is finished by running it again. The stream must be empty
    otherwise; the file is only read.

    \b
    Example:
        projctl migrate --from projects.json --to nats://127.0.0.1:4222/team
    """
    from projctl.jetstream import JetStreamBackend

    settings = _settings(source)
    if settings.nats is not None or settings.url is not None:
        raise InvalidInputError(f"--from {source!r}: give the path of a database file")
    into = _settings(target)
    if into.nats is None:
        raise InvalidInputError(f"--to {target!r}: give a nats:// or tls:// database location")
    reading = _database(settings, quiet=True, looks_only=True)
    if not reading.path.exists():
        raise NotFoundError(f"no database at {reading.path}")
    projects = reading.list()
    source_id = reading.database_id() or "empty"
    backend = _database(into, quiet=True, looks_only=True).backend
    assert isinstance(backend, JetStreamBackend)
    written = backend.import_projects(projects, source_id=source_id)
    if not quiet:
        already = len(projects) - written
        typer.echo(
            f"copied {written} project(s) from {reading.path} into {backend.location}"
            + (f" ({already} were there already)" if already else "")
        )
