"""Invisible and direction-changing characters reach the terminal as escapes, never as they are.

Names and owners may hold format characters (category Cf) and separators (Zl, Zp): the
rules allow them, and another program may write anything. On a terminal they would make
two different names look the same, so ``list``, ``show`` and ``watch`` show each as an
escape; ``--json`` keeps the exact value.
"""

from __future__ import annotations

import io
import time
import unicodedata
from collections.abc import Callable

import orjson
import pytest
from rich.console import Console, RenderableType
from typer.testing import Result

from projctl.events import project_created
from projctl.model import visible
from projctl.store import ProjectStore
from projctl.subscribe import Message
from projctl.watch import WatchState, render_projects_table, render_screen

Cli = Callable[..., Result]

#: Each character, and the escape that shows it.
INVISIBLE = {
    "\u200e": "\\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f": "\\u200f",  # RIGHT-TO-LEFT MARK
    "\u061c": "\\u061c",  # ARABIC LETTER MARK
    "\u200b": "\\u200b",  # ZERO WIDTH SPACE
    "\ufeff": "\\ufeff",  # BYTE ORDER MARK
    "\u00ad": "\\xad",  # SOFT HYPHEN
    "\U000e0041": "\\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\u2028": "\\u2028",  # LINE SEPARATOR (Zl)
    "\u2029": "\\u2029",  # PARAGRAPH SEPARATOR (Zp)
    "\u2066": "\\u2066",  # LEFT-TO-RIGHT ISOLATE
}
CHARACTERS = pytest.mark.parametrize(("char", "escape"), list(INVISIBLE.items()))


def rendered(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, height=30, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


@pytest.mark.parametrize("category", ["Cc", "Cf", "Zl", "Zp"])
def test_every_character_of_the_unsafe_categories_is_escaped(category: str) -> None:
    # Whole categories, not a list: every assigned character of each one.
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == category]
    assert chars
    for char in chars:
        shown = visible(f"a{char}b")
        assert char not in shown
        assert shown.startswith("a\\")
        assert shown.endswith("b")


def test_printable_text_is_kept_as_it_is() -> None:
    text = "Ünïcødé 🙂 名前 شبكة a\u00a0b"
    assert visible(text) == text
    assert visible("line\n\tnext", keep_lines=True) == "line\n\tnext"


@CHARACTERS
def test_show_and_list_escape_invisible_characters(
    cli: Cli, store: ProjectStore, char: str, escape: str
) -> None:
    project = store.create(f"pay{char}roll", owner_id=f"an{char}n").project
    shown = cli("show", project.project_id)
    assert shown.exit_code == 0, shown.output
    assert char not in shown.stdout
    assert f"name         pay{escape}roll\n" in shown.stdout
    assert f"owner_id     an{escape}n\n" in shown.stdout
    listed = cli("list")
    assert char not in listed.stdout
    assert listed.stdout.split("\t")[1] == f"pay{escape}roll"
    table = rendered(render_projects_table([project.to_dict()]))
    assert char not in table
    assert escape in table
    # --json keeps the exact value.
    assert orjson.loads(cli("show", project.project_id, "--json").stdout)["name"] == project.name


@CHARACTERS
def test_watch_screen_escapes_invisible_characters(
    store: ProjectStore, char: str, escape: str
) -> None:
    project = store.create(f"pay{char}roll", owner_id=f"an{char}n").project
    state = WatchState()
    event = project_created(project.to_dict(), seq=1, timestamp=project.created_at)
    state.apply(Message(orjson.dumps(event).decode(), dict(event)), time.time())
    screen = rendered(render_screen(state, time.time(), width=200, height=30))
    assert char not in screen
    assert f"pay{escape}roll" in screen  # in the table and in the feed
    assert screen.count(f"pay{escape}roll") == 2


SERVER_SAID = "going away\x1b[2J\u202egnp.exe\u200b"
SERVER_SAID_SHOWN = "going away\\x1b[2J\\u202egnp.exe\\u200b"


def test_watch_connection_messages_escape_what_the_server_said() -> None:
    from projctl.subscribe import Connection
    from projctl.watch import _connection_line

    reconnecting = Connection("reconnecting", "ws://127.0.0.1:1/ws", 0.5, SERVER_SAID)
    assert _connection_line(reconnecting) == (
        f"projctl watch: disconnected ({SERVER_SAID_SHOWN}); reconnecting in 0.5s"
    )
    state = WatchState()
    state.apply(reconnecting, time.time())
    screen = rendered(render_screen(state, time.time(), width=200, height=30))
    assert SERVER_SAID_SHOWN in screen
    assert "\x1b" not in screen
    assert "\u202e" not in screen


def test_error_lines_escape_what_they_quote(capsys: pytest.CaptureFixture[str]) -> None:
    from projctl.cli._lazy import report

    report(f"the server refused: {SERVER_SAID}\nsecond line")
    assert (
        capsys.readouterr().err == f"Error: the server refused: {SERVER_SAID_SHOWN} second line\n"
    )
