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
    """Copy a database file's projects and journal into a NATS JetStream database.

    A stream numbers its events itself, from 1, so the file's history is written as
    the stream's first events, with new seqs: first a project_created for every project
    older than the file's journal, in creation order (as the journal found it, stamped
    with its created_at), then every event the journal keeps, lifecycle and emitted, in
    order and as it was. The last event of each project is its current state; a
    project deleted within the journal keeps its tombstone, so its id is never issued
    again. The line printed says at which seq the journal starts: watch --since one
    before it replays the file's history.

    Ids, fields and timestamps are kept; the file is only read (stop its writers
    first). Running it again writes only what is missing (an interrupted run, or what
    the file gained since while its journal starts where it did). The stream must be
    empty otherwise.

    \b
    Example:
        projctl migrate --from projects.json --to nats://127.0.0.1:4222/team
    """
    from projctl.jetstream import JetStreamBackend
    from projctl.local import TinyDBBackend
    from projctl.model import Project

    settings = _settings(source)
    if settings.nats is not None or settings.url is not None:
        raise InvalidInputError(f"--from {source!r}: give the path of a database file")
    into = _settings(target)
    if into.nats is None:
        raise InvalidInputError(f"--to {target!r}: give a nats:// or tls:// database location")
    reading = _database(settings, quiet=True, looks_only=True)
    if not reading.path.exists():
        raise NotFoundError(f"no database at {reading.path}")
    local = reading.backend
    assert isinstance(local, TinyDBBackend)
    state = local.store.read_state()  # the projects and the journal from one read
    projects = [Project.from_dict(record) for record in state.project_records]
    source_id = state.database_id or "empty"
    backend = _database(into, quiet=True, looks_only=True).backend
    assert isinstance(backend, JetStreamBackend)
    done = backend.import_database(projects, state.journal, source_id=source_id)
    if not quiet:
        already = done.total - done.written
        seqs = f"seq 1 to {done.total}" if done.total else "no events"
        journal = f", the journal from seq {done.baseline + 1}" if done.events else ""
        typer.echo(
            f"copied {done.projects} project(s) and {done.events} journal event(s) from "
            f"{reading.path} into {backend.location}: {seqs}{journal}"
            + (f" ({already} were there already)" if already else "")
        )
