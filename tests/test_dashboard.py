"""The dashboard in a real browser: Playwright drives the system's Chromium against real servers.

Every server here is the database's background server, started and fed by the installed
``projctl``, exactly as a user's terminal would; the page is read as a user sees it.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from projctl import model, runtime
from projctl.cli.serving import dashboard_url
from projctl.model import STATUSES
from projctl.runtime import ServerState, pid_alive, runtime_paths
from projctl.store import ProjectStore

from .conftest import require_tool, server_up, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("broadcasting")]

Run = Callable[..., subprocess.CompletedProcess[str]]
OpenPage = Callable[..., Page]

#: Every Playwright wait in this file is bounded by this (milliseconds).
TIMEOUT_MS = 10_000
#: The promise the dashboard makes: a change is on screen this soon after its command returns.
LIVE_MS = 1_000
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The data-testid hooks the page promises.
CONNECTION = "[data-testid=connection]"
SHOWN_COUNT = "[data-testid=shown-count]"
TABLE = "[data-testid=projects-table]"

# Everything about the table in one read (page.evaluate works under the page's CSP).
READ_ROWS = """() => Array.from(
  document.querySelectorAll('[data-testid=projects-table] tr[data-project-id]'),
  (tr) => ({
    id: tr.getAttribute('data-project-id'),
    classes: Array.from(tr.classList),
    cells: Object.fromEntries(Array.from(
      tr.querySelectorAll('td[data-field]'), (td) => [td.dataset.field, td.textContent])),
    changed: Array.from(tr.querySelectorAll('td.cell-changed'), (td) => td.dataset.field),
  }))"""
READ_COUNTS = """() => Object.fromEntries(Array.from(
  document.querySelectorAll('[data-testid=status-counts] li[data-status]'),
  (li) => [li.dataset.status, li.querySelector('[data-count]').textContent]))"""
#: The count chips that filter by one status (the total's shows every status), and those pressed.
STATUS_CHIPS = "[data-testid=status-counts] button[data-status-filter]:not([data-status-filter=''])"
CHIPS_PRESSED = STATUS_CHIPS + "[aria-pressed=true]"
READ_STATUS_FILTER = "(chips) => chips.map((chip) => chip.dataset.statusFilter)"
READ_FEED = """() => Array.from(
  document.querySelectorAll('[data-testid=feed] li'),
  (li) => [li.getAttribute('data-seq'), li.getAttribute('data-event-type')])"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (each test gets its own context): the system's, never a
    downloaded one."""
    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """``open_page(url, width=..., height=...)``: a fresh context and page at ``url``.

    An uncaught error in any page fails the test at teardown.
    """
    contexts = []
    errors: list[str] = []

    def open_at(url: str, *, width: int = 1280, height: int = 800, **hooks: Any) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        for event, hook in hooks.items():
            page.on(event, hook)  # before the page loads: nothing it does is missed
        page.goto(url)
        return page

    yield open_at
    for context in contexts:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def ok(projctl: Run, *args: str) -> str:
    """Run a command that must succeed without a word on stderr (no broadcast warning)."""
    done = projctl(*args)
    assert (done.returncode, done.stderr) == (0, ""), (args, done.stderr)
    return done.stdout.strip()


def start_server(projctl: Run) -> str:
    """Start the database's background server; the dashboard's URL."""
    return dashboard_url(ok(projctl, "server", "start"), None)


def server_state(db_path: Path) -> ServerState:
    state = runtime.read_server_state(runtime_paths(db_path))
    assert state is not None, "no server is running"
    return state


def wait_for_seq(page: Page, seq: int, timeout: float = TIMEOUT_MS) -> None:
    """Until the page has rendered every event up to ``seq`` (the page's own marker)."""
    page.wait_for_selector(f'body[data-last-seq="{seq}"]', state="attached", timeout=timeout)


def rows(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(READ_ROWS)
    return result


def status_counts(page: Page) -> dict[str, int]:
    return {status: int(count) for status, count in page.evaluate(READ_COUNTS).items()}


def row(project_id: str, *classes: str) -> str:
    return f'{TABLE} tr[data-project-id="{project_id}"]' + "".join(f".{c}" for c in classes)


def test_existing_projects_are_shown_newest_change_first(projctl: Run, open_page: OpenPage) -> None:
    alpha = ok(projctl, "create", "alpha", "--status", "in_progress")
    beta = ok(projctl, "create", "beta", "--status", "completed", "--owner", "ann")
    gamma = ok(projctl, "create", "gamma")
    ok(projctl, "update", alpha, "--status", "on_hold")  # the newest change, not the newest project

    page = open_page(start_server(projctl))
    wait_for_seq(page, 4)
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    shown = rows(page)
    assert [r["id"] for r in shown] == [alpha, gamma, beta]
    assert [r["cells"]["name"] for r in shown] == ["alpha", "gamma", "beta"]
    assert [r["cells"]["status"] for r in shown] == ["on_hold", "created", "completed"]
    assert [r["cells"]["owner_id"] for r in shown] == ["tester", "tester", "ann"]
    # Loaded from the snapshot: nothing is highlighted as a live change.
    assert all(set(r["classes"]) == {"row"} and r["changed"] == [] for r in shown)
    assert status_counts(page) == {
        "created": 1,
        "in_progress": 0,
        "on_hold": 1,
        "completed": 1,
        "archived": 0,
    }
    assert page.text_content("[data-testid=total-count] [data-count]") == "3"
    assert page.text_content(SHOWN_COUNT) == "3 of 3 shown"
    assert page.text_content("[data-testid=last-seq]") == "4"
    assert page.evaluate("() => window.projctlDashboard.projectCount") == 3


def test_create_update_delete_show_within_a_second_with_their_highlight(
    projctl: Run, open_page: OpenPage
) -> None:
    kept = ok(projctl, "create", "kept")
    page = open_page(start_server(projctl))
    wait_for_seq(page, 1)

    created = ok(projctl, "create", "Billing API", "--type", "web")
    page.wait_for_selector(row(created, "row-new"), timeout=LIVE_MS)
    first = rows(page)[0]
    assert first["id"] == created
    assert first["cells"]["name"] == "Billing API"
    assert first["cells"]["last_change"] == "new"
    assert first["changed"] == []
    assert page.text_content(SHOWN_COUNT) == "2 of 2 shown"

    ok(projctl, "update", created, "--status", "in_progress", "--owner", "bob")
    page.wait_for_selector(row(created, "row-updated"), timeout=LIVE_MS)
    first = rows(page)[0]
    assert first["id"] == created
    assert "row-new" not in first["classes"]
    assert sorted(first["changed"]) == ["owner_id", "status"]  # only the changed fields
    assert first["cells"]["status"] == "in_progress"
    assert first["cells"]["owner_id"] == "bob"
    assert first["cells"]["last_change"] == "updated status, owner_id"
    assert status_counts(page)["in_progress"] == 1

    ok(projctl, "update", kept, "--description", "a field the table does not show")
    page.wait_for_selector(row(kept, "row-updated"), timeout=LIVE_MS)
    assert rows(page)[0]["changed"] == []  # no shown cell changed

    ok(projctl, "delete", created)
    page.wait_for_selector(row(created, "row-deleted"), timeout=LIVE_MS)
    struck = page.locator(row(created) + " td[data-field=name]").evaluate(
        "(td) => getComputedStyle(td).textDecorationLine"
    )
    assert "line-through" in struck
    assert page.text_content(SHOWN_COUNT) == "1 of 1 shown"
    assert status_counts(page)["in_progress"] == 0
    # It lingers struck through for a while, then goes.
    page.wait_for_selector(row(created), state="detached", timeout=TIMEOUT_MS)
    assert [r["id"] for r in rows(page)] == [kept]


def test_a_hostile_name_shows_as_text(projctl: Run, open_page: OpenPage) -> None:
    loaded_name = "<img src=x onerror=alert(1)>"
    live_name = '"><svg onload=alert(2)><script>alert(3)</script>'
    loaded = ok(projctl, "create", loaded_name)
    dialogs: list[str] = []
    requests: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page = open_page(
        start_server(projctl),
        dialog=on_dialog,
        request=lambda request: requests.append(request.url),
    )
    wait_for_seq(page, 1)  # from the snapshot
    live = ok(projctl, "create", live_name)
    wait_for_seq(page, 2)  # from a live event (it is in the feed too)
    for project_id, name in ((loaded, loaded_name), (live, live_name)):
        assert page.text_content(row(project_id) + " td[data-field=name]") == name
    # The live event, then the journal's event from before the page was opened.
    expect(page.locator("[data-testid=feed] .feed-name")).to_have_text([live_name, loaded_name])
    # No script but the page's own modules and its contract (JSON data, never run).
    assert page.locator("img, svg, script:not([src]):not(#contract)").count() == 0
    assert page.locator("#contract").get_attribute("type") == "application/json"
    assert (
        page.locator(f"{TABLE} *").evaluate_all(
            "(nodes) => nodes.filter((n) => !['TR', 'TD', 'TH', 'THEAD', 'TBODY', 'CAPTION', "
            "'SPAN', 'TIME'].includes(n.tagName)).map((n) => n.tagName)"
        )
        == []
    )
    assert dialogs == []  # (the page's CSP would block an inline handler too)
    assert not [url for url in requests if url.rstrip("/").endswith("/x")]


def test_every_event_exactly_once_across_a_kill_9(
    projctl: Run, open_page: OpenPage, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page reconnects to the address it was loaded from: the restarted server must
    # come back on the same port. The first binds any free port (no probe to race with);
    # the restart asks for the one it had.
    url = start_server(projctl)
    port = server_state(db_path).port
    assert url == f"http://127.0.0.1:{port}/"
    monkeypatch.setenv("PROJCTL_PORT", str(port))
    page = open_page(url)
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    alpha = ok(projctl, "create", "alpha")
    beta = ok(projctl, "create", "beta")
    wait_for_seq(page, 2)

    first = server_state(db_path)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(first.pid), what="the killed server gone")
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^reconnecting"))

    gamma = ok(projctl, "create", "gamma")  # starts a new server, on the same port
    second = server_up(db_path)  # the create does not wait for the server it starts
    assert second.pid != first.pid
    assert second.url == first.url
    ok(projctl, "update", alpha, "--status", "completed", "--name", "alpha 2")
    ok(projctl, "delete", beta)
    delta = ok(projctl, "create", "delta", "--owner", "ann")
    ok(projctl, "update", gamma, "--type", "web")

    latest = ProjectStore(db_path).latest_seq()
    assert latest == 7
    wait_for_seq(page, latest)
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    dashboard = page.evaluate(
        "() => ({lastSeq: window.projctlDashboard.lastSeq,"
        " events: window.projctlDashboard.events,"
        " projectCount: window.projctlDashboard.projectCount})"
    )
    # Every event applied once: none missed, none replayed twice, no resync.
    assert dashboard == {"lastSeq": latest, "events": latest, "projectCount": 3}
    feed = page.evaluate(READ_FEED)
    assert [seq for seq, _ in feed] == [str(seq) for seq in range(latest, 0, -1)]
    assert {kind for _, kind in feed} <= {"project_created", "project_updated", "project_deleted"}

    # The table (live rows) is the database.
    stored = orjson.loads(ok(projctl, "list", "--json"))
    live_rows = [r for r in rows(page) if "row-deleted" not in r["classes"]]
    assert sorted(
        tuple(r["cells"][field] for field in ("project_id", "name", "type", "status", "owner_id"))
        for r in live_rows
    ) == sorted((p["project_id"], p["name"], p["type"], p["status"], p["owner_id"]) for p in stored)
    assert {p["project_id"] for p in stored} == {alpha, gamma, delta}
    assert page.text_content(SHOWN_COUNT) == "3 of 3 shown"


def test_filters_in_the_url_are_applied_on_load_and_kept_there(
    projctl: Run, open_page: OpenPage
) -> None:
    for name, status, owner in (
        ("alpha", "completed", "ann"),
        ("beta", "completed", "bob"),
        ("gamma", "created", "ann"),
        ("delta", "completed", "ann"),
    ):
        ok(projctl, "create", name, "--status", status, "--owner", owner)
    base = start_server(projctl)
    page = open_page(base + "?status=completed&owner=ann")
    wait_for_seq(page, 4)
    assert [r["cells"]["name"] for r in rows(page)] == ["delta", "alpha"]
    assert page.text_content(SHOWN_COUNT) == "2 of 4 shown"
    # The count chips are the status filter: the URL's status is pressed, the label says so.
    assert page.locator(CHIPS_PRESSED).evaluate_all(READ_STATUS_FILTER) == ["completed"]
    expect(page.locator("[data-testid=status-label]")).to_have_text(
        re.compile(r"^Status: completed\b")
    )
    expect(page.locator("[data-testid=filter-owner]")).to_have_value("ann")
    expect(page.locator("[data-testid=filter-type]")).to_have_value("")
    expect(page.locator("[data-testid=filter-search]")).to_have_value("")
    # The counts stay those of the whole database.
    assert status_counts(page)["completed"] == 3

    page.fill("[data-testid=filter-search]", "del")
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 4 shown")
    assert [r["cells"]["name"] for r in rows(page)] == ["delta"]
    expect(page).to_have_url(re.compile(r"[?&]q=del\b"))  # once typing pauses
    assert "status=completed" in page.url
    assert "owner=ann" in page.url
    # The URL is the view: loading it again shows the same.
    page.reload()
    wait_for_seq(page, 4)
    expect(page.locator("[data-testid=filter-search]")).to_have_value("del")
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 4 shown")


def test_a_token_server_asks_for_the_token_and_never_sends_it_in_a_url(
    projctl: Run, open_page: OpenPage, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROJCTL_REQUIRE_TOKEN", "1")
    base = start_server(projctl)
    token = server_state(db_path).subscriber_token
    assert token
    project = ok(projctl, "create", "secret plans")
    urls: list[str] = []
    hooks: dict[str, Any] = {
        "request": lambda request: urls.append(request.url),
        "websocket": lambda ws: urls.append(ws.url),
    }

    page = open_page(base, **hooks)
    form = page.locator("[data-testid=token-form]")
    expect(form).to_be_visible()
    expect(page.locator(CONNECTION)).not_to_have_text(re.compile(r"^connected"))
    assert rows(page) == []
    # A wrong token is refused and the form says so.
    page.fill("[data-testid=token-input]", "not-the-token")
    page.click("[data-testid=token-submit]")
    expect(page.locator("[data-testid=token-message]")).to_have_text(re.compile("refused"))
    page.fill("[data-testid=token-input]", token)
    page.click("[data-testid=token-submit]")
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    expect(form).to_be_hidden()
    assert "token" not in page.url  # kept in the tab, never in the address bar
    wait_for_seq(page, 1)
    assert [r["id"] for r in rows(page)] == [project]

    # A link with the token in the fragment connects at once, and the token leaves the URL.
    direct = open_page(base + "#token=" + quote(token, safe=""), **hooks)
    expect(direct.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    wait_for_seq(direct, 1)
    expect(direct.locator("[data-testid=token-form]")).to_be_hidden()
    assert direct.url == base
    # A filtered view is shared without the token; a reload of the tab keeps it.
    direct.fill("[data-testid=filter-search]", "secret")
    expect(direct.locator(SHOWN_COUNT)).to_have_text("1 of 1 shown")
    expect(direct).to_have_url(base + "?q=secret")
    shared = direct.url
    direct.reload()
    expect(direct.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    wait_for_seq(direct, 1)
    elsewhere = open_page(shared, **hooks)  # another browser opening the shared view
    expect(elsewhere.locator("[data-testid=token-form]")).to_be_visible()
    assert rows(elsewhere) == []

    sockets = [url for url in urls if url.startswith("ws://")]
    assert len(sockets) >= 3  # without a token, with the wrong one, with the right one (x2)
    assert [url for url in urls if token in url] == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_page_works_from_either_loopback_name(
    projctl: Run, open_page: OpenPage, host: str, db_path: Path
) -> None:
    first = ok(projctl, "create", "first")
    url = start_server(projctl).replace("127.0.0.1", host)
    page = open_page(url)
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    wait_for_seq(page, 1)
    # The header names the database (its file), not the address the page came from.
    expect(page.locator("[data-testid=database-name]")).to_have_text(db_path.name)
    second = ok(projctl, "create", "second")
    page.wait_for_selector(row(second, "row-new"), timeout=LIVE_MS)
    assert [r["id"] for r in rows(page)] == [second, first]


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixel rows of an 8-bit, non-interlaced RGB or RGBA PNG
    (what Chromium writes), decoded with the standard library."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, header, data = 8, b"", b""
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        body = png[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour in (2, 6), colour  # RGB or RGBA
    step = 3 if colour == 2 else 4
    stride = width * step
    raw = zlib.decompress(data)
    previous = bytearray(stride)
    lines = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(step, stride):
                line[i] = (line[i] + line[i - step]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - step] if i >= step else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - step] if i >= step else 0
                b = previous[i]
                c = previous[i - step] if i >= step else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        lines.append(bytes(line))
        previous = line
    return width, height, lines


def colours(png: bytes) -> tuple[int, int, collections.Counter[bytes]]:
    """The width and height of a PNG, and how many of its pixels have each colour."""
    width, height, lines = png_pixels(png)
    step = len(lines[0]) // width
    counted = collections.Counter(
        line[i : i + step] for line in lines for i in range(0, len(line), step)
    )
    return width, height, counted


def test_a_screenshot_shows_the_table(projctl: Run, open_page: OpenPage) -> None:
    for name, status in (("alpha", "in_progress"), ("beta", "completed"), ("gamma", "on_hold")):
        ok(projctl, "create", name, "--status", status)
    page = open_page(start_server(projctl), width=800, height=600)
    wait_for_seq(page, 3)
    assert len(rows(page)) == 3

    # The whole page, then the table alone: text, pills and borders make hundreds of
    # colours, where a blank page or area has one.
    width, height, whole = colours(page.screenshot())
    assert (width, height) == (800, 600)
    assert len(whole) >= 50, f"only {len(whole)} colours on the page"
    _, _, table = colours(page.locator(TABLE).screenshot())
    assert len(table) >= 50, f"only {len(table)} colours in the table"
    background_share = table.most_common(1)[0][1] / table.total()
    assert background_share < 0.95, f"{background_share:.0%} of the table is one colour"


@pytest.mark.parametrize(("width", "height"), [(375, 740), (1920, 1080)])
def test_readable_on_a_phone_and_a_wide_screen(
    projctl: Run, open_page: OpenPage, width: int, height: int
) -> None:
    project = ok(projctl, "create", "A project with a rather long name to wrap", "--owner", "ann")
    page = open_page(start_server(projctl), width=width, height=height)
    wait_for_seq(page, 1)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    # Nor does the table scroll sideways in its box: columns are dropped instead.
    table = page.locator(TABLE)
    assert table.evaluate("(t) => t.parentElement.scrollWidth <= t.parentElement.clientWidth")
    for cell in (f"{TABLE} th.col-id", row(project) + " td[data-field=project_id]"):
        expect(page.locator(cell)).to_be_visible()
        box = page.locator(cell).bounding_box()
        assert box is not None
        assert box["x"] >= 0, (cell, box)
        assert box["x"] + box["width"] <= width, (cell, box)
    id_cell = page.locator(row(project) + " td[data-field=project_id]")
    assert id_cell.text_content() == project
    # The whole id is on screen: wrapped if need be, never cut off.
    assert id_cell.evaluate("(td) => td.scrollWidth <= td.clientWidth")
    name_cell = page.locator(row(project) + " td[data-field=name]")
    expect(name_cell).to_be_visible()
    assert name_cell.evaluate("(td) => td.scrollWidth <= td.clientWidth")
    if width >= 1400:
        for field in ("type", "status", "owner_id", "updated_at", "last_change"):
            expect(page.locator(row(project) + f" td[data-field={field}]")).to_be_visible()


def test_the_page_runs_as_es_modules_under_its_policy(projctl: Run, open_page: OpenPage) -> None:
    """Its modules load as JavaScript and its contract as data: nothing the policy refuses."""
    ok(projctl, "create", "alpha", "--status", "on_hold")
    console: list[str] = []
    scripts: dict[str, str] = {}

    def on_response(response: Any) -> None:
        if response.url.endswith(".js"):
            scripts[response.url.rpartition("/")[2]] = response.headers["content-type"]

    page = open_page(
        start_server(projctl),
        console=lambda message: console.append(f"{message.type}: {message.text}"),
        response=on_response,
    )
    wait_for_seq(page, 1)
    assert page.evaluate("() => Array.from(document.scripts, (s) => [s.type, s.src])") == [
        ["application/json", ""],
        ["module", page.url + "dashboard.js"],
    ]
    page_files = Path(model.__file__).parent / "dashboard"
    assert scripts == {
        path.name: "text/javascript; charset=utf-8" for path in page_files.glob("*.js")
    }
    # The counts and the status filter come from the contract, in the model's order.
    counts = page.locator("[data-testid=status-counts] li[data-status]")
    assert counts.evaluate_all("(lis) => lis.map((li) => li.dataset.status)") == list(STATUSES)
    assert status_counts(page)["on_hold"] == 1
    assert page.locator(STATUS_CHIPS).evaluate_all(READ_STATUS_FILTER) == list(STATUSES)
    # A refused script, style or connection shows as an error in the console.
    assert [line for line in console if line.startswith("error")] == []
