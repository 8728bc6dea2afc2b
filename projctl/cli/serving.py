"""``serve``, ``server status``, ``server stop``: the database's broadcast server."""

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from projctl.cli._lazy import ExitCode, command, report
from projctl.cli._options import (
    REPORT_FORMATS,
    DbOption,
    HostOption,
    JsonFlag,
    PortOption,
    QuietFlag,
    ReportOutputOption,
    any_database,
    local_database,
    output_format,
    print_json,
)
from projctl.config import parse_count, parse_file, parse_seconds
from projctl.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from projctl.runtime import ServerState


@command("serve")
def serve(
    host: HostOption = None,
    port: PortOption = None,
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
        str,
        typer.Option(
            "--idle-timeout",
            metavar="DURATION",
            help="Stop after this long (30s, 15m, 1h, or seconds) with no subscribers and no "
            "events (0: never). Background servers use $PROJCTL_IDLE_TIMEOUT, default 900.",
        ),
    ] = "0",
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token",
            help="Every subscriber must present the server's token, on loopback too "
            "(watch and the Python API pass it by themselves). [env: PROJCTL_REQUIRE_TOKEN]",
        ),
    ] = False,
    certfile: Annotated[
        str | None,
        typer.Option("--certfile", metavar="PEM", help="TLS certificate (chain): serve wss://."),
    ] = None,
    keyfile: Annotated[
        str | None, typer.Option("--keyfile", metavar="PEM", help="TLS private key.")
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="Read and write tokens, one 'read: TOKEN' or 'write: TOKEN' a line; mode 0600 "
            "or stricter. [default: fresh tokens, written to a 0600 file whose path is printed]",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Allow plain ws:// beyond loopback (tokens travel in the clear)."
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Run the broadcast server for a database in the foreground until Ctrl-C.

    Subscribers connect to ws://HOST:PORT/ws (?since=N to resume, ?snapshot=1 for
    the current projects first); GET /healthz reports status; / is the dashboard.
    Commands start a server in the background by themselves; run this one to choose
    its address, or to serve a team: beyond loopback it needs TLS (or --insecure),
    and other machines run commands against it with PROJCTL_URL and a token.
    With --db nats://... it is a stateless gateway to the stream: run any number.

    \b
    Example:
        projctl serve --host 0.0.0.0 --port 8443 --certfile cert.pem --keyfile key.pem
    """
    from projctl import runtime
    from projctl.server import configure_logging

    seconds = parse_seconds(idle_timeout, "--idle-timeout")
    database = local_database(db, host=host, port=port)
    settings = database.settings
    if host is None and not runtime.is_loopback(settings.host):
        raise InvalidInputError(
            f"listening beyond loopback ({settings.host}) needs --host on the command line, "
            "not only PROJCTL_HOST"
        )
    if (certfile is None) != (keyfile is None):
        raise InvalidInputError("--certfile and --keyfile go together")
    tls = None
    if certfile is not None and keyfile is not None:
        from projctl.server import check_key_file

        tls = (parse_file(certfile, "--certfile"), parse_file(keyfile, "--keyfile"))
        check_key_file(tls[1])
    if tls is None and not runtime.is_loopback(settings.host):
        if not insecure:
            raise InvalidInputError(
                f"listening beyond loopback ({settings.host}) without TLS sends tokens and data "
                "in the clear: give --certfile and --keyfile, or --insecure"
            )
        report(
            "serving plain ws:// beyond loopback: tokens and data cross the network unencrypted",
            prefix="Warning",
        )
    tokens = None if token_file is None else parse_file(token_file, "--token-file")
    configure_logging()
    written: list[Path] = []

    def announce(server: Any) -> None:
        # Never on stderr, which is the log (under systemd, the journal): fresh tokens go to
        # a file only this user may read, in the private runtime folder, and only its path
        # is printed. The file is in the --token-file format, so it can be reused.
        if tokens is None:
            path = write_fresh_tokens(server.paths, server.config, port=server.port)
            written.append(path)
            sys.stderr.write(f"projctl: fresh tokens are in {path} (mode 0600)\n")
        sys.stderr.flush()

    try:
        database.serve(
            allow_origins=allow_origin or (),
            idle_timeout=seconds,
            require_token=True if require_token else None,
            tls=tls,
            token_file=tokens,
            on_ready=announce,
        )
    finally:
        for path in written:  # they die with the server
            path.unlink(missing_ok=True)


def fresh_tokens_path(paths: Any, *, port: int = 0) -> Path:
    """Where ``serve`` without ``--token-file`` keeps the tokens it made: beside the
    server's state file in the private runtime folder (a gateway, which has no state
    file, names the file after its port)."""
    if paths is None:
        from projctl import runtime

        folder = runtime.private_folder()
        runtime.check_private_folder(folder, create=True)
        return folder / f"gateway-{port}.tokens"
    found: Path = paths.folder
    return found / f"{paths.key}.tokens"


def write_fresh_tokens(paths: Any, config: Any, *, port: int = 0) -> Path:
    """Write a server's tokens, ``read: TOKEN`` / ``write: TOKEN`` lines, to a new 0600 file
    (replaced atomically, never followed through a symlink); return its path."""
    from projctl._files import atomic_write

    lines = ["# tokens of this projctl server; they end when it stops"]
    for kind, known in (("read", config.read_tokens), ("write", config.write_tokens)):
        lines += [f"{kind}: {token}" for token in sorted(known)]
    path = fresh_tokens_path(paths, port=port)
    atomic_write(path, ("\n".join(lines) + "\n").encode(), mode=0o600, keep_mode=False)
    return path


@command("open")
def open_dashboard(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Only print the dashboard's URL.")
    ] = False,
    quiet: QuietFlag = False,
    db: DbOption = None,
) -> None:
    """Open the live dashboard of the database in a browser (starting its server if needed).

    Prints the dashboard's URL; opens it in the default browser when there is a display.
    A server that needs a token gets it in the URL's fragment (#token=...), which the
    browser never sends to the server; the page then takes it out of the address bar.

    \b
    Example:
        projctl open --no-browser
    """
    database = any_database(db)
    if database.settings.url is not None:
        # A team server's page; the token given (a read token is enough) in the fragment.
        database.server_status()  # there, and answering: or one line and exit 5
        url = dashboard_url(database.settings.url + "/ws", database.settings.token)
    else:
        state = database.ensure_server()
        url = dashboard_url(state.url, state.subscriber_token)
    if not quiet:
        typer.echo(url)
    if not no_browser and _has_display():
        import webbrowser

        webbrowser.open(url)


def dashboard_url(ws_url: str, token: str | None) -> str:
    """``ws://host:port/ws`` as the dashboard's ``http://host:port/``, the token in the fragment."""
    from urllib.parse import quote

    from projctl.config import http_address

    base = http_address(ws_url) + "/"
    return base + (f"#token={quote(token, safe='')}" if token else "")


def _has_display() -> bool:
    import os

    return sys.platform == "darwin" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


@command("server status")
def server_status(
    output: ReportOutputOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
    db: DbOption = None,
) -> None:
    """Show whether a server runs for the database, and its health.

    Exits 0 when one runs and 3 when none does, so it works in `if`; for a team server
    ($PROJCTL_URL), 0 when it answers and 5 when it cannot be reached, with
    "team_server": true. -o json (--json) or jsonl: one JSON object.

    \b
    Example:
        if projctl server status >/dev/null; then echo up; fi
    """
    chosen = output_format(output, json_output, quiet, formats=REPORT_FORMATS)
    database = any_database(db, looks_only=True)
    status = database.server_status()
    if quiet:
        pass
    elif chosen is not None:
        print_json({"running": status is not None, **(status or {})})
    elif status is None:
        typer.echo(f"no server is running for {database.path}")
    elif status.get("team_server"):
        detail = f", {status['subscribers']} subscriber(s)" if "subscribers" in status else ""
        typer.echo(
            f"running: team server {status['url']}, latest seq {status['latest_seq']}{detail}"
        )
    else:
        typer.echo(
            f"running: pid {status['pid']}, {status['url']}, latest seq {status['latest_seq']}, "
            f"{status['subscribers']} subscriber(s)"
        )
    if status is None:
        raise typer.Exit(ExitCode.NOT_FOUND)


@command("server start")
def server_start(quiet: QuietFlag = False, db: DbOption = None) -> None:
    """Start the database's background server now (if none runs) and print its URL.

    Commands start it by themselves when they need it; this is for a browser page or a
    subscriber that should connect before the first change. It stops after
    $PROJCTL_IDLE_TIMEOUT (a duration) with no subscribers and no events.

    \b
    Example:
        url=$(projctl server start)
    """
    database = any_database(db)
    if database.settings.url is not None:
        url = str((database.server_status() or {})["url"])  # it runs elsewhere: is it up?
    else:
        url = database.ensure_server().url
    if not quiet:
        typer.echo(url)


@command("server stop")
def server_stop(quiet: QuietFlag = False, db: DbOption = None) -> None:
    """Stop the database's server and wait until it has exited.

    \b
    Example:
        projctl server stop
    """
    database = any_database(db, looks_only=True)
    stale: list[ServerState] = []
    stopped = database.stop_server(on_stale=stale.append)
    if quiet:
        return
    if stale:
        typer.echo(
            f"no server is running for {database.path}: its state entry named pid "
            f"{stale[0].pid}, which is not that server (any more); removed the entry, "
            "signalled nothing",
            err=True,
        )
    elif stopped is None:
        typer.echo(f"no server is running for {database.path}", err=True)
    else:
        typer.echo(f"stopped server pid {stopped.pid}")


@command("server url")
def server_url(
    http: Annotated[
        bool, typer.Option("--http", help="The HTTP address (the API's and the page's).")
    ] = False,
    db: DbOption = None,
) -> None:
    """Print the address of the database's server, starting one if none runs.

    The feed's ws:// (wss://) URL, or with --http the http:// (https://) address of the
    API and the dashboard: the port is the server's own (8000 may be taken), so scripts
    ask for it rather than assume it. For a team server ($PROJCTL_URL), its address.

    \b
    Example:
        curl "$(projctl server url --http)/api/projects"
    """
    database = any_database(db)
    if database.settings.url is not None:
        status = database.server_status() or {}
        typer.echo(str(status["http_url"] if http else status["url"]))
        return
    state = database.ensure_server()
    typer.echo(dashboard_url(state.url, None).rstrip("/") if http else state.url)


@command("server token")
def server_token(db: DbOption = None) -> None:
    """Print the write token of the database's running server (it starts none).

    The token is read from the server's state file in your private runtime folder, so
    only you (and root) can read it; it ends with the server. HTTP writes
    (POST, PUT, PATCH, DELETE /api/projects) send it as Authorization: Bearer.
    Exits 3 when no server runs.

    \b
    Example:
        token=$(projctl server token)
    """
    from projctl import runtime

    database = local_database(db)
    state = runtime.read_server_state(runtime.runtime_paths(database.path))
    if state is None:
        raise NotFoundError(
            f"no server is running for {database.path}; start one with projctl server start"
        )
    if state.write_token is None:
        raise NotFoundError(f"the server of {database.path} (pid {state.pid}) has no write token")
    typer.echo(state.write_token)


@command("server logs")
def server_logs(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    tail: Annotated[
        str | None,
        typer.Option("--tail", "-n", metavar="N", help="Only the last N lines."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Show the log of the database's background server.

    \b
    Example:
        projctl server logs --tail 20 --follow
    """
    lines = None if tail is None else parse_count(tail, "--tail")
    log_file = any_database(db, looks_only=True).log_file()
    try:
        with open(log_file, "rb") as log:
            text = log.read()
            shown = text.splitlines(keepends=True)
            if lines is not None:
                shown = shown[len(shown) - lines :] if lines else []
            _write(b"".join(shown))
            while follow:
                chunk = log.read()
                if chunk:
                    _write(chunk)
                else:
                    time.sleep(0.2)  # the pace of `tail -f`; Ctrl-C ends it
    except FileNotFoundError:
        raise NotFoundError(
            f"no server log yet: no background server has run for this database ({log_file})"
        ) from None


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
