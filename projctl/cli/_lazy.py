"""The app, its exit codes, and the only module that touches typer's and click's internals.

Commands are registered with :func:`command` under a name listed in
:data:`COMMANDS`, which also says which module defines it. The group imports a
command's module and builds the command only when it runs, so ``projctl create``
pays for ``create`` alone (typer would otherwise build every option of every
command at every start), and ``--help`` lists the commands from :data:`SUMMARIES`
without importing any of them. Registering a name that is not listed, or from a
module other than the listed one, fails at import: a command cannot be silently lost.

Every failure is reported here as one ``Error:`` line on stderr and an
:class:`ExitCode`; nothing else in projctl picks an exit code.
"""

# No `from __future__ import annotations` in the command modules: typer reads their
# signatures at every start, and evaluating string annotations costs ~15 ms.
from __future__ import annotations

import atexit
import functools
import gc
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer._click.utils import make_default_short_help
from typer.core import TyperArgument, TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from projctl import config
from projctl._version import __version__
from projctl.errors import (
    InvalidInputError,
    NotFoundError,
    NotThisMachinesError,
    ProjctlError,
    ServerError,
    StoreError,
)

__all__ = [
    "ALIASES",
    "COMMANDS",
    "EXIT_CODE_MEANINGS",
    "GLOBAL_OPTIONS",
    "GROUPS",
    "SUMMARIES",
    "ExitCode",
    "QuietInterrupt",
    "app",
    "command",
    "completion_shell",
    "context_override",
    "exit_code_for",
    "main",
    "move_global_options",
    "report",
    "token_file_override",
    "url_override",
]


class ExitCode(IntEnum):
    """Exit codes of every projctl command; the README documents them."""

    OK = 0
    FAILURE = 1  #: an unexpected failure (a bug, or an OS error we did not foresee)
    INVALID_INPUT = 2  #: invalid input, usage or setting
    NOT_FOUND = 3  #: no project with the given id
    STORE_ERROR = 4  #: database unreadable, corrupt, locked too long, or folder unwritable
    SERVER_ERROR = 5  #: the broadcast server cannot start, be reached or be stopped
    NOT_THIS_MACHINES = 6  #: ``server stop``/``logs`` asked of a team server, which runs elsewhere
    TIMEOUT = 124  #: ``watch --timeout`` or ``wait --timeout`` ran out first
    INTERRUPTED = 130  #: Ctrl-C


#: What each exit code means, as ``--help`` and the README say it.
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.FAILURE: "unexpected failure",
    ExitCode.INVALID_INPUT: "invalid input, usage or setting",
    ExitCode.NOT_FOUND: "project not found (server status: no server running)",
    ExitCode.STORE_ERROR: "database error",
    ExitCode.SERVER_ERROR: "server error",
    ExitCode.NOT_THIS_MACHINES: "the server is a team server, managed where it runs",
    ExitCode.TIMEOUT: "timed out (watch, wait)",
    ExitCode.INTERRUPTED: "interrupted",
}

#: Every command, by its full name, and the module that defines it, in help order.
COMMANDS: dict[str, str] = {
    "create": "projctl.cli.projects",
    "update": "projctl.cli.projects",
    "delete": "projctl.cli.projects",
    "list": "projctl.cli.projects",
    "show": "projctl.cli.projects",
    "emit": "projctl.cli.emitting",
    "watch": "projctl.cli.watching",
    "wait": "projctl.cli.waiting",
    "migrate": "projctl.cli.migrating",
    "open": "projctl.cli.serving",
    "serve": "projctl.cli.serving",
    "server status": "projctl.cli.serving",
    "server start": "projctl.cli.serving",
    "server stop": "projctl.cli.serving",
    "server logs": "projctl.cli.serving",
    "server url": "projctl.cli.serving",
    "server token": "projctl.cli.serving",
    "info": "projctl.cli.info",
    "context add": "projctl.cli.contexts",
    "context use": "projctl.cli.contexts",
    "context list": "projctl.cli.contexts",
    "context show": "projctl.cli.contexts",
    "context remove": "projctl.cli.contexts",
}
#: Each command's summary, as ``--help`` lists it: the first line of its docstring, which a
#: test keeps equal. Written out here so that listing the commands imports none of them.
SUMMARIES: dict[str, str] = {
    "create": "Create a project and print its id.",
    "update": "Change the given fields of one or more projects.",
    "delete": "Delete one or more projects: all of them, or none when one is missing.",
    "list": "List projects, oldest first unless --sort says otherwise.",
    "show": "Show one or more projects.",
    "emit": "Record an event about a project and print its seq.",
    "watch": "Watch projects change live: a table on a terminal, JSON Lines for scripts.",
    "wait": "Wait until a project meets a condition, then print it.",
    "migrate": "Copy a database file's projects and journal into a NATS JetStream database.",
    "open": "Open the live dashboard of the database in a browser (starting its server if needed).",
    "serve": "Run the broadcast server for a database in the foreground until Ctrl-C.",
    "server status": "Show whether a server runs for the database, and its health.",
    "server start": "Start the database's background server now (if none runs) and print its URL.",
    "server stop": "Stop the database's server and wait until it has exited.",
    "server logs": "Show the log of the database's background server.",
    "server url": "Print the address of the database's server, starting one if none runs.",
    "server token": "Print the write token of the database's running server (it starts none).",
    "info": "Show which database commands use and where that came from, and its server.",
    "context add": "Add (or replace) a context: a database file, or a team server.",
    "context use": "Make a context the current one: commands use it unless told otherwise.",
    "context list": "List the contexts, marking the current one.",
    "context show": "Show the context in force, and what chose it.",
    "context remove": "Remove a context.",
}
#: Short names, as docker and kubectl users type them: each runs the command it names.
ALIASES: dict[str, str] = {"ls": "list", "rm": "delete", "get": "show"}
#: Command groups and their one-line help.
GROUPS: dict[str, str] = {
    "server": "Start, inspect, stop the database's server, or read its log or write token.",
    "context": "Name the databases and team servers you work with, and switch between them.",
}

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_registered: dict[str, CommandInfo] = {}
_Callback = TypeVar("_Callback", bound=Callable[..., Any])


def command(name: str) -> Callable[[_Callback], _Callback]:
    """Register the decorated function as the command ``name`` (``"server status"`` for a
    subcommand). Its docstring is its help; the first line is its summary."""

    def register(callback: _Callback) -> _Callback:
        listed = COMMANDS.get(name)
        if listed is None:
            raise RuntimeError(f"command {name!r} is not listed in projctl.cli._lazy.COMMANDS")
        if listed != callback.__module__:
            raise RuntimeError(f"command {name!r} is listed in {listed}, not {callback.__module__}")
        _registered[name] = CommandInfo(
            name=name.rpartition(" ")[2], callback=callback, context_settings=_CONTEXT
        )
        return callback

    return register


class QuietInterrupt(Exception):
    """Ctrl-C where it is the ordinary way to stop (``watch``): exit 130 without a line."""


def exit_code_for(error: ProjctlError) -> ExitCode:
    """The exit code that reports ``error``."""
    if isinstance(error, InvalidInputError):
        return ExitCode.INVALID_INPUT
    if isinstance(error, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, StoreError):
        return ExitCode.STORE_ERROR
    if isinstance(error, ServerError):
        return ExitCode.SERVER_ERROR
    if isinstance(error, NotThisMachinesError):
        return ExitCode.NOT_THIS_MACHINES
    return ExitCode.FAILURE


def report(message: str, prefix: str = "Error") -> None:
    """Write one ``Error: ...`` (or ``Warning: ...``) line on stderr, whatever ``message`` holds."""
    from projctl.model import visible

    # One line, whatever the message holds: scripts grep for it. Only line breaks are
    # folded; a quoted value keeps its own spaces.
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    # A message may quote what a server or a file said: no raw controls on the terminal.
    line = visible(line)
    sys.stderr.write(f"{prefix}: {line}\n")
    sys.stderr.flush()


def _registered_info(name: str) -> CommandInfo:
    if name not in _registered:
        importlib.import_module(COMMANDS[name])
    return _registered[name]


def _summary(full_name: str) -> str:
    return GROUPS[full_name] if full_name in GROUPS else SUMMARIES[full_name]


class ProjctlGroup(TyperGroup):
    """A group whose commands are listed in :data:`COMMANDS` and built on first use.

    The top-level group also runs the app: every failure becomes one ``Error:``
    line and a documented exit code.
    """

    def __init__(self, *, prefix: str = "", **attrs: Any) -> None:
        super().__init__(**attrs)
        self.prefix = prefix

    def _full_name(self, name: str) -> str:
        return f"{self.prefix} {name}" if self.prefix else name

    def list_commands(self, ctx: Any) -> list[str]:
        names: list[str] = []
        for full_name in COMMANDS:
            group, _, rest = full_name.rpartition(" ")
            name = rest if group == self.prefix else None
            if not self.prefix and group:
                name = group.split(" ")[0]
            if name is not None and name not in names:
                names.append(name)
        return names

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if not self.prefix and cmd_name in ALIASES:
            cmd_name = ALIASES[cmd_name]
        if cmd_name not in self.commands:
            full_name = self._full_name(cmd_name)
            if full_name in COMMANDS:
                command = get_command_from_info(
                    _registered_info(full_name),
                    pretty_exceptions_short=True,
                    rich_markup_mode=None,
                )
                _plain_argument_metavars(command)
                _refuse_undecodable_text(command)
                _suggest_close_choices(command)
                self.commands[cmd_name] = command
            elif full_name in GROUPS:
                self.commands[cmd_name] = ProjctlGroup(
                    name=cmd_name,
                    prefix=full_name,
                    help=GROUPS[full_name],
                    no_args_is_help=True,
                    rich_markup_mode=None,
                    context_settings=_CONTEXT,
                )
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib  # only for a mistyped command

            message = f"No such command {name!r}."
            known = self.list_commands(ctx) + ([] if self.prefix else list(ALIASES))
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                message += f" Did you mean {close[0]!r}?"
            raise UsageError(message, ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list of ``--help``, from docstrings, without building the commands."""
        names = self.list_commands(ctx)
        shown = {
            name: ", ".join(
                [name] + [a for a, n in ALIASES.items() if n == name and not self.prefix]
            )
            for name in names
        }
        limit = formatter.width - 6 - max(map(len, shown.values()))
        rows = [
            (shown[name], make_default_short_help(_summary(self._full_name(name)), limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if args is None:
            args = sys.argv[1:]
        args = move_global_options(list(args))
        if completion_shell() == "bash":
            _escape_bash_candidates()
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else ExitCode.OK
            if code == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into a bare exit code
                report("interrupted")
        except NoArgsIsHelpError as error:  # `projctl` or `projctl server` alone: the help
            if error.ctx is not None:
                typer.echo(error.ctx.get_help())
            code = ExitCode.OK
        except ClickException as error:  # usage errors: bad option, missing argument, ...
            message = error.format_message()
            context = getattr(error, "ctx", None)
            if context is not None:
                message += f" (see '{context.command_path} --help')"
            report(message)
            code = ExitCode.INVALID_INPUT if error.exit_code == 2 else error.exit_code
        except ProjctlError as error:
            report(str(error))
            code = exit_code_for(error)
        except QuietInterrupt:
            code = ExitCode.INTERRUPTED
        except (typer.Abort, KeyboardInterrupt):
            report("interrupted")
            code = ExitCode.INTERRUPTED
        except Exception as error:
            if _debug():
                raise
            report(_unexpected(error))
            code = ExitCode.FAILURE
        if standalone_mode:
            sys.exit(code)
        return code


#: Options every command takes that may also come before the command, as in
#: ``projctl --db X list``: they are moved behind the command before parsing.
GLOBAL_OPTIONS: dict[str, bool] = {"--db": True, "--quiet": False, "-q": False, "--json": False}


def move_global_options(args: list[str]) -> list[str]:
    """``projctl --db X -q delete ID`` as ``projctl delete --db X -q ID``.

    Only options before the command move, and only those in :data:`GLOBAL_OPTIONS`
    (the value says whether one takes a value); anything else is left for the usual
    error. ``--`` and what follows it are never touched.
    """
    moved: list[str] = []
    position = 0
    while position < len(args):
        arg = args[position]
        name = arg.split("=", 1)[0]
        if arg == "--" or not arg.startswith("-") or name not in GLOBAL_OPTIONS:
            break
        takes_value = GLOBAL_OPTIONS[name] and "=" not in arg
        moved += args[position : position + (2 if takes_value else 1)]
        position += 2 if takes_value else 1
    if not moved:
        return args
    rest = args[position:]
    command_end = 1 if rest else 0
    if rest and rest[0] in GROUPS and len(rest) > 1 and not rest[1].startswith("-"):
        command_end = 2  # ``server status``: the options go after the subcommand
    return rest[:command_end] + moved + rest[command_end:]


def _plain_argument_metavars(command: Any) -> None:
    """Show a required argument as ``NAME`` in usage lines, as people write it (typer writes
    ``{NAME}``), an optional one as ``[NAME]``, and repeatable ones with ``...``."""
    for param in command.params:
        if isinstance(param, TyperArgument) and param.metavar:
            shown = param.metavar + ("..." if param.nargs == -1 else "")
            shown = shown if param.required else f"[{shown}]"
            param.make_metavar = functools.partial(_metavar, shown)  # type: ignore[method-assign]


def _suggest_close_choices(command: Any) -> None:
    """Make a mistyped choice (``--status inprogress``) say ``did you mean in_progress?``."""
    for param in command.params:
        kind = param.type
        message_for = getattr(kind, "get_invalid_choice_message", None)
        choices = getattr(kind, "choices", None)
        if message_for is None or not choices or getattr(kind, "_suggests", False):
            continue
        names = [str(getattr(choice, "value", choice)) for choice in choices]

        def suggesting(
            value: Any, ctx: Any, *, message_for: Any = message_for, names: list[str] = names
        ) -> str:
            import difflib  # only for a value that is not one of the choices

            message = str(message_for(value=value, ctx=ctx))
            close = difflib.get_close_matches(str(value).lower(), names, n=1, cutoff=0.6)
            return message.rstrip(".") + f"; did you mean {close[0]}?" if close else message

        kind.get_invalid_choice_message = suggesting
        kind._suggests = True


#: Parameters that hold a file's path: bytes that are not UTF-8 still name a file.
PATH_PARAMETERS = frozenset({"db", "certfile", "keyfile", "token_file"})


def _refuse_undecodable_text(command: Any) -> None:
    """Make ``command`` refuse, before it runs, a text value that is not valid UTF-8.

    Python decodes the arguments with ``surrogateescape``, so such bytes arrive as lone
    surrogates that no JSON, database or terminal takes: the error names the option
    (``--owner``) or the argument (``NAME``) that held them. Paths are exempt.
    """
    labels = {
        param.name: param.metavar
        if param.param_type_name == "argument"
        else max(param.opts, key=len)
        for param in command.params
        if param.name not in PATH_PARAMETERS
    }
    callback = command.callback

    @functools.wraps(callback)
    def checked(**params: Any) -> Any:
        from projctl.model import check_utf8  # every command module has imported it by now

        for name, value in params.items():
            if name in labels:
                for text in value if isinstance(value, list | tuple) else (value,):
                    if isinstance(text, str):
                        check_utf8(text, labels[name])
        return callback(**params)

    command.callback = checked


def _metavar(shown: str, ctx: Any = None, *, usage: bool = False) -> str:
    return shown


def completion_shell() -> str | None:
    """The shell asking for completions at this TAB (``bash``, ``zsh``, ``fish``), or
    ``None`` when projctl is not completing."""
    asked = os.environ.get("_PROJCTL_COMPLETE", "")
    return asked.removeprefix("complete_") or None


def _escape_bash_candidates() -> None:
    """Make bash candidates one shell word each: typer's bash script inserts a candidate
    as it is, so a project named ``Billing API`` must come as ``Billing\\ API``. Typer
    matches candidates against what was typed (unescaped) before they are formatted, so
    escaping here keeps that match."""
    from typer._click.shell_completion import add_completion_class
    from typer._completion_classes import BashComplete

    class EscapingBashComplete(BashComplete):
        def format_completion(self, item: Any) -> str:
            return _SHELL_SPECIAL.sub(r"\\\g<0>", str(item.value))

    add_completion_class(EscapingBashComplete, "bash")


#: What bash would split a word at or expand: escaped in a bash candidate.
_SHELL_SPECIAL = re.compile(r"[^\w.@%+=:,/-]")


def _debug() -> bool:
    return config.debug_enabled()


def _unexpected(error: Exception) -> str:
    return f"unexpected {type(error).__name__}: {error} (set {config.DEBUG.name}=1 for details)"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"projctl {__version__}")
        raise typer.Exit()


def _root_help() -> str:
    width = max(len(variable.name) for variable in config.VARIABLES) + 2
    environment = "\n".join(
        f"  {variable.name:<{width}} {variable.meaning} [default: {variable.default}]"
        for variable in config.VARIABLES
    )
    codes = ", ".join(f"{code.value} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    return (
        "Manage projects from the terminal and CI; every change is journaled as an event.\n\n"
        "Results go to stdout, messages to stderr; every command that prints data takes "
        "-o/--output FORMAT (json, jsonl, tsv, table, wide, name) and --json (-o json)."
        "\n\n\b\nEnvironment:\n" + environment + "\n\nExit codes: " + codes + "."
    )


app = typer.Typer(
    cls=ProjctlGroup,
    name="projctl",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=_CONTEXT,
    help=_root_help(),
)


#: ``--url`` as given before the command (the app's callback runs first), for
#: :func:`url_override`.
_url_given: list[str | None] = [None]
#: ``--context`` and ``--token-file``, given before the command.
_context_given: list[str | None] = [None]
_token_file_given: list[str | None] = [None]


def url_override() -> str | None:
    """The ``--url`` given before the command, if any (it wins over ``PROJCTL_URL``)."""
    return _url_given[0]


def context_override() -> str | None:
    """The ``--context`` given before the command, if any (it wins over ``PROJCTL_CONTEXT``)."""
    return _context_given[0]


def token_file_override() -> str | None:
    """The ``--token-file`` given before the command (it wins over ``PROJCTL_TOKEN_FILE``)."""
    return _token_file_given[0]


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        metavar="URL",
        help="Run the command against the team server at URL (wss://host:port) instead of a "
        "local database, with $PROJCTL_TOKEN. [env: PROJCTL_URL]",
        show_default=False,
    ),
    context: str | None = typer.Option(
        None,
        "--context",
        metavar="NAME",
        help="Run the command against the context NAME (see projctl context). "
        "[env: PROJCTL_CONTEXT]",
        show_default=False,
    ),
    token_file: str | None = typer.Option(
        None,
        "--token-file",
        metavar="FILE",
        help="Read the team server's token from FILE (mode 0600): never put a token on a "
        "command line, where others can read it. [env: PROJCTL_TOKEN_FILE]",
        show_default=False,
    ),
) -> None:
    from projctl.model import check_utf8

    _url_given[0] = None if url is None else check_utf8(url, "--url")
    _context_given[0] = None if context is None else check_utf8(context, "--context")
    _token_file_given[0] = token_file


def main() -> None:
    """Console-script entry point."""
    # At exit the interpreter runs full garbage collections over every object still alive
    # (typer's, click's, ours) as it tears the modules down: about 20 ms of every command,
    # as long as the rest of a `create`. A frozen heap is passed over; the modules are
    # still torn down, and what a collection would have freed goes with the process.
    atexit.register(gc.freeze)
    try:
        app(prog_name="projctl")
    except Exception as error:  # raised while building the app, before ProjctlGroup runs
        if _debug():
            raise
        report(_unexpected(error))
        sys.exit(ExitCode.FAILURE)
