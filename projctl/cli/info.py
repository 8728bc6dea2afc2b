"""``info``: which database this is, where that came from, and how its server is."""

from typing import Any

import typer

from projctl.cli._lazy import command
from projctl.cli._options import DbOption, JsonFlag, open_database, print_json

_SOURCES = {"--db": "from --db", "PROJCTL_DB": "from PROJCTL_DB", "default": "the default"}


@command("info")
def info(json_output: JsonFlag = False, db: DbOption = None) -> None:
    """Show which database commands use and where that came from, and its server.

    The database's path and its source (--db, PROJCTL_DB or the default), whether it
    exists, how many projects it holds, its last seq, how many events its journal keeps,
    and whether its server runs and at which URL. A mistyped path shows here as a
    database that does not exist.

    \b
    Example:
        projctl info --json
    """
    database = open_database(db)
    settings = database.settings
    exists = database.path.exists()
    store = database.store
    journal = store.journal() if exists else []
    status = database.server_status()
    report: dict[str, Any] = {
        "database": {
            "path": str(database.path),
            "source": settings.db_source,
            "exists": exists,
            "id": store.database_id() if exists else "",
        },
        "projects": len(database.list()) if exists else 0,
        "latest_seq": database.latest_seq() if exists else 0,
        "journal": {"events": len(journal), "limit": settings.journal_limit},
        "server": {
            "running": status is not None,
            "url": status.get("url") if status else None,
            "pid": status.get("pid") if status else None,
            "subscribers": status.get("subscribers") if status else None,
        },
    }
    if json_output:
        print_json(report)
        return
    server = report["server"]
    rows = {
        "database": f"{database.path} ({_SOURCES[settings.db_source]})"
        + ("" if exists else ", does not exist yet"),
        "projects": str(report["projects"]),
        "last seq": str(report["latest_seq"]),
        "journal": f"{len(journal)} events kept (limit {settings.journal_limit})",
        "server": f"running at {server['url']} (pid {server['pid']}, "
        f"{server['subscribers']} subscriber(s))"
        if server["running"]
        else "not running (commands start one when they need it)",
    }
    width = max(map(len, rows))
    for name, value in rows.items():
        typer.echo(f"{name:<{width}}  {value}")
