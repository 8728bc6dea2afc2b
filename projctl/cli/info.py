"""``info``: which database this is, where that came from, and how its server is."""

import typer

from projctl.cli._lazy import command
from projctl.cli._options import (
    REPORT_FORMATS,
    DbOption,
    JsonFlag,
    QuietFlag,
    ReportOutputOption,
    open_database,
    output_format,
    print_json,
)

_SOURCES = {
    "--db": "from --db",
    "PROJCTL_DB": "from PROJCTL_DB",
    "context": "from the context",
    "default": "the default",
}


@command("info")
def info(
    output: ReportOutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    db: DbOption = None,
) -> None:
    """Show which database commands use and where that came from, and its server.

    The context in force (if any) and what chose it; the database's path and its source
    (--db, PROJCTL_DB, the context or the default), whether it
    exists, how many projects it holds, its last seq, how many events its journal keeps,
    and whether its server runs and at which URL. A mistyped path shows here as a
    database that does not exist. -o json (--json) or jsonl: one JSON object.

    \b
    Example:
        projctl info --json
    """
    chosen = output_format(output, json_output, quiet, formats=REPORT_FORMATS)
    database = open_database(db, looks_only=True)
    report = database.info()
    settings = database.settings
    report["context"] = (
        None
        if settings.context is None
        else {"name": settings.context, "source": settings.context_source}
    )
    if quiet:
        return
    if chosen is not None:
        print_json(report)
        return
    where = report["database"]
    server = report["server"]
    if where.get("backend") == "jetstream":
        located = (
            f"{where['url']} (a NATS JetStream stream, {where['stream']}, "
            f"{_SOURCES[where['source']]})" + ("" if where["exists"] else ", no stream yet")
        )
    elif "url" in where:
        located = f"{where['url']} (a team server, from {where['source']})"
    else:
        located = f"{where['path']} ({_SOURCES[where['source']]})" + (
            "" if where["exists"] else ", does not exist yet"
        )
    journal = report["journal"]
    no_server = (
        "none: commands and watch talk to the NATS cluster"
        if where.get("backend") == "jetstream"
        else "not running (commands start one when they need it)"
    )
    rows = {
        **(
            {"context": f"{settings.context} (from {settings.context_source})"}
            if settings.context is not None
            else {}
        ),
        "database": located,
        "projects": str(report["projects"]),
        "last seq": str(report["latest_seq"]),
        "journal": f"{journal['events']} events kept (limit {journal['limit']})",
        "server": f"not answering (pid {server['pid']}, {server['url']}); changes are "
        "journaled and reach subscribers once it answers again"
        if server.get("answering") is False
        else f"running at {server['url']}"
        + (
            f" (pid {server['pid']}, {server['subscribers']} subscriber(s))"
            if "pid" in server
            else ""
        )
        if server["running"]
        else no_server,
    }
    width = max(map(len, rows))
    for name, value in rows.items():
        typer.echo(f"{name:<{width}}  {value}")
