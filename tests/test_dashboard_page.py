"""The dashboard page against a scripted feed: the system's Chromium loads the page's own files
and Playwright plays the server's WebSocket, so each test sends exactly the frames it needs
(a gap in seq, a name full of invisible characters). Nothing listens on any port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, Page, Route, WebSocketRoute, expect, sync_playwright

import projctl
from projctl.events import dashboard_contract
from projctl.model import PROJECT_FIELDS, STATUSES

from .conftest import require_tool, wait_until
from .test_dashboard import (
    CHROMIUM_ARGS,
    READ_FEED,
    READ_STATUS_FILTER,
    STATUS_CHIPS,
    TIMEOUT_MS,
    rows,
    wait_for_seq,
)

pytestmark = pytest.mark.slow

#: The page's origin: every request to it is answered by the test, none reaches a network.
ORIGIN = "http://127.0.0.1:9"
PAGE_FILES = Path(projctl.__file__).parent / "dashboard"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
#: The page's contract, as the server embeds it.
CONTRACT = dashboard_contract(project_fields=PROJECT_FIELDS, statuses=STATUSES)
STAMP = "2023-11-19T12:00:00.000000"


def record(project_id: str, name: str | None = None, **fields: str) -> dict[str, str]:
    return {
        "project_id": project_id,
        "name": name or f"name of {project_id}",
        "type": "api",
        "status": "created",
        "owner_id": "ann",
        "description": "",
        "created_at": STAMP,
        "updated_at": STAMP,
        **fields,
    }


def snapshot(seq: int, *projects: dict[str, str]) -> str:
    message = {"event_type": "snapshot", "timestamp": STAMP, "seq": seq}
    return orjson.dumps({**message, "data": {"projects": list(projects)}}).decode()


def created(seq: int, project: dict[str, str]) -> str:
    message = {"event_type": "project_created", "timestamp": STAMP, "seq": seq, "data": project}
    return orjson.dumps(message).decode()


class Feed:
    """Plays the server's ``/ws``: records every connection the page opens, in order.

    Playwright calls :meth:`accept` on the test's own thread, during a call into it.
    """

    def __init__(self) -> None:
        self.sockets: list[WebSocketRoute] = []
        #: Whether to pass the page's connections on to the origin, where nothing listens.
        self.refuse = False

    def accept(self, socket: WebSocketRoute) -> None:
        self.sockets.append(socket)
        if self.refuse:
            socket.connect_to_server()

    def queries(self) -> list[str]:
        return [socket.url.partition("?")[2] for socket in self.sockets]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
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
def contract() -> dict[str, Any]:
    """The contract embedded in the page (a test may parametrize another)."""
    return CONTRACT


@pytest.fixture
def page_and_feed(browser: Browser, contract: dict[str, Any]) -> Iterator[tuple[Page, Feed]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    feed = Feed()

    def serve_file(route: Route) -> None:
        path = route.request.url[len(ORIGIN) :].partition("?")[0]
        file = PAGE_FILES / ("index.html" if path == "/" else path.lstrip("/"))
        if file.parent != PAGE_FILES or not file.is_file():
            route.fulfill(status=404, body="not found")
            return
        body = file.read_bytes()
        if file.name == "index.html":
            body = body.replace(b"@CONTRACT@", orjson.dumps(contract))
        route.fulfill(status=200, body=body, content_type=CONTENT_TYPES[file.suffix])

    page.route(f"{ORIGIN}/**", serve_file)
    page.route_web_socket("**/ws**", feed.accept)
    page.goto(ORIGIN + "/")
    try:
        yield page, feed
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def last_seq(page: Page) -> Any:
    return page.evaluate("() => window.projctlDashboard.lastSeq")


def wait_for_connections(page: Page, feed: Feed, number: int) -> None:
    """Until the page has opened its ``number``-th connection (from 1)."""

    def opened() -> bool:
        page.evaluate("() => 0")  # a round trip to the browser delivers Playwright's callbacks
        return len(feed.sockets) >= number

    wait_until(opened, what=f"connection {number} (so far: {feed.queries()})")


def test_every_gap_resumes_from_the_last_seq_and_is_never_applied(
    page_and_feed: tuple[Page, Feed],
) -> None:
    page, feed = page_and_feed
    wait_for_connections(page, feed, 1)
    first = feed.sockets[0]
    first.send(snapshot(1, record("proj_a")))
    wait_for_seq(page, 1)
    first.send(created(3, record("proj_c")))  # seq 2 is missing
    wait_for_connections(page, feed, 2)
    assert feed.queries() == ["snapshot=1", "since=1"]
    # The same gap again, on the new connection: still not applied, still resumed.
    feed.sockets[1].send(created(3, record("proj_c")))
    wait_for_connections(page, feed, 3)
    assert feed.queries() == ["snapshot=1", "since=1", "since=1"]
    assert last_seq(page) == 1
    assert [row["id"] for row in rows(page)] == ["proj_a"]
    # And again: every gap, not only the first ones.
    feed.sockets[2].send(created(3, record("proj_c")))
    wait_for_connections(page, feed, 4)
    assert feed.queries()[-1] == "since=1"
    assert last_seq(page) == 1
    # What the server replays from there fills the hole.
    feed.sockets[3].send(created(2, record("proj_b")))
    feed.sockets[3].send(created(3, record("proj_c")))
    wait_for_seq(page, 3)
    assert sorted(row["id"] for row in rows(page)) == ["proj_a", "proj_b", "proj_c"]


INVISIBLE = {
    "\u202e": "\\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u200e": "\\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f": "\\u200f",  # RIGHT-TO-LEFT MARK
    "\u061c": "\\u061c",  # ARABIC LETTER MARK
    "\u200b": "\\u200b",  # ZERO WIDTH SPACE
    "\ufeff": "\\ufeff",  # BYTE ORDER MARK
    "\u00ad": "\\xad",  # SOFT HYPHEN
    "\U000e0041": "\\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\u2028": "\\u2028",  # LINE SEPARATOR
    "\x1b": "\\x1b",  # ESC
}


def test_invisible_and_direction_characters_show_as_escapes(
    page_and_feed: tuple[Page, Feed],
) -> None:
    page, feed = page_and_feed
    names = {f"proj_{number}": f"bidi {char}gnp.exe" for number, char in enumerate(INVISIBLE)}
    loaded = [record(project_id, name, owner_id=name) for project_id, name in names.items()]
    wait_for_connections(page, feed, 1)
    feed.sockets[0].send(snapshot(1, *loaded[1:]))
    feed.sockets[0].send(created(2, loaded[0]))  # the feed shows names too
    wait_for_seq(page, 2)
    shown = {row["id"]: row["cells"] for row in rows(page)}
    for (project_id, name), escape in zip(names.items(), INVISIBLE.values(), strict=True):
        expected = name.replace(name[5], escape)
        assert shown[project_id]["name"] == expected
        assert shown[project_id]["owner_id"] == expected
    feed_names = page.locator("[data-testid=feed] .feed-name").all_text_contents()
    assert feed_names == ["bidi \\u202egnp.exe"]
    # Nothing on the page holds any of them (the JSON the model keeps is exact).
    body = page.evaluate("() => document.body.textContent")
    assert not any(char in body for char in INVISIBLE)


#: Another contract: the page must take its statuses, fields and event names from it (and what
#: an emitted event's type looks like: here, no name of the usual contract is one).
OTHER_CONTRACT = {
    **CONTRACT,
    "statuses": ["created", "blocked"],
    "events": {"created": "thing_created", "updated": "thing_updated", "deleted": "thing_gone"},
    "emitted_type_pattern": "custom_[a-z]+",
}


@pytest.mark.parametrize("contract", [OTHER_CONTRACT])
def test_the_page_takes_statuses_and_event_names_from_its_contract(
    page_and_feed: tuple[Page, Feed],
) -> None:
    page, feed = page_and_feed
    wait_for_connections(page, feed, 1)
    socket = feed.sockets[0]
    socket.send(snapshot(1, record("proj_a", status="blocked")))
    socket.send(created(2, record("proj_b")))  # not an event type of this contract: ignored
    thing = orjson.loads(created(2, record("proj_c")))
    socket.send(orjson.dumps({**thing, "event_type": "thing_created"}).decode())
    wait_for_seq(page, 2)
    assert sorted(row["id"] for row in rows(page)) == ["proj_a", "proj_c"]
    counts = page.locator("[data-testid=status-counts] li[data-status]")
    assert counts.evaluate_all("(lis) => lis.map((li) => li.dataset.status)") == [
        "created",
        "blocked",
    ]
    assert counts.all_text_contents() == ["created 1", "blocked 1"]
    assert page.locator(STATUS_CHIPS).evaluate_all(READ_STATUS_FILTER) == ["created", "blocked"]
    # A status of the contract is a known one (not "status-other"): none of it is retyped.
    assert page.locator('[data-project-id="proj_a"] .pill').get_attribute("class") == (
        "pill status-blocked"
    )


def emitted(seq: int, project: dict[str, str], event_type: str, **data: Any) -> str:
    """An emitted event (projctl emit) about ``project``, as the server sends it."""
    payload = {"project_id": project["project_id"], "name": project["name"], **data}
    message = {"event_type": event_type, "timestamp": STAMP, "seq": seq, "data": payload}
    return orjson.dumps(message).decode()


def test_emitted_events_are_shown_and_keep_the_seq_order(
    page_and_feed: tuple[Page, Feed],
) -> None:
    """An emitted event highlights its project's row (whose fields stay as they are) and goes in
    the feed with a summary of its data; it is never taken for a gap, so no event after it is
    held back and no resume is asked for."""
    page, feed = page_and_feed
    alpha, beta = record("proj_a"), record("proj_b")
    wait_for_connections(page, feed, 1)
    socket = feed.sockets[0]
    socket.send(snapshot(1, alpha, beta))
    socket.send(emitted(2, alpha, "tests_run", passed=41, failed=0, files=["a.py", "b.py"]))
    socket.send(created(3, record("proj_c")))
    socket.send(emitted(4, record("proj_gone"), "documentation_generated", pages=3))
    socket.send(emitted(5, beta, "project_modified", commit="9f2c1e0"))
    wait_for_seq(page, 5)
    assert feed.queries() == ["snapshot=1"]  # no gap was seen
    assert page.evaluate("() => window.projctlDashboard.events") == 4
    shown = {row["id"]: row for row in rows(page)}
    assert list(shown) == ["proj_b", "proj_c", "proj_a"]  # the newest change on top
    assert "row-emitted" in shown["proj_a"]["classes"]
    assert shown["proj_a"]["cells"]["last_change"] == "tests_run passed=41 failed=0 files=[2 items]"
    assert shown["proj_b"]["cells"]["last_change"] == "project_modified commit=9f2c1e0"
    assert shown["proj_a"]["cells"]["status"] == alpha["status"]  # no field changed
    assert shown["proj_a"]["changed"] == []
    assert page.evaluate(READ_FEED) == [
        ["5", "project_modified"],
        ["4", "documentation_generated"],
        ["3", "project_created"],
        ["2", "tests_run"],
    ]
    item = page.locator('[data-testid=feed] li[data-seq="2"]')
    assert "feed-emitted" in (item.get_attribute("class") or "")
    assert item.locator(".feed-detail").text_content() == "passed=41 failed=0 files=[2 items]"
    # The highlight fades like any other (the page's clock, not the test's, decides).
    page.wait_for_selector(
        '[data-project-id="proj_a"]:not(.row-emitted)', timeout=CONTRACT["highlight_ms"] + 5_000
    )


class Api:
    """Plays the server's REST routes the page asks besides ``/ws``: records each request
    as ``(method, path, If-Match)``; ``answers`` maps ``"METHOD path"`` to a list of
    ``(status, body, etag)`` given in turn (the last one again once they run out)."""

    def __init__(self, answers: dict[str, list[tuple[int, Any, str | None]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, str | None]] = []

    def handle(self, route: Route) -> None:
        request = route.request
        path = request.url[len(ORIGIN) :]
        self.requests.append((request.method, path, request.headers.get("if-match")))
        queue = self.answers.get(f"{request.method} {path.partition('?')[0]}")
        if not queue:
            route.fulfill(status=404, json={"error": "not_found", "message": path})
            return
        status, body, etag = queue.pop(0) if len(queue) > 1 else queue[0]
        headers = {"ETag": etag} if etag else {}
        route.fulfill(status=status, json=body, headers=headers)


def test_a_write_refused_with_412_says_the_project_changed_and_refreshes(
    page_and_feed: tuple[Page, Feed],
) -> None:
    """The PATCH carries the ETag of the version the panel shows; a 412 (another change came
    first) says so, shows the project as it is, and the next save asks for the new tag."""
    page, feed = page_and_feed
    alpha = record("proj_a", status="created", owner_id="ann")
    changed = {**alpha, "status": "on_hold", "updated_at": "2023-11-19T12:00:05.000000"}
    api = Api(
        {
            "GET /api/whoami": [(200, {"may_read": True, "may_write": True}, None)],
            "GET /api/info": [(200, {"database": {"id": "x", "name": "team.json"}}, None)],
            "GET /api/events": [(200, {"events": [], "latest_seq": 1, "resync": False}, None)],
            "GET /api/projects/proj_a": [(200, alpha, '"v1"'), (200, changed, '"v2"')],
            "PATCH /api/projects/proj_a": [(412, {"error": "precondition_failed"}, None)],
        }
    )
    page.route(f"{ORIGIN}/api/**", api.handle)
    wait_for_connections(page, feed, 1)
    feed.sockets[0].send(snapshot(1, alpha))
    wait_for_seq(page, 1)
    expect(page.locator("[data-testid=database-name]")).to_have_text("team.json")
    page.click('tr[data-project-id="proj_a"]')
    expect(page.locator("[data-testid=detail-edit]")).to_be_visible()
    page.select_option("[data-testid=edit-status]", "completed")
    page.click("[data-testid=edit-save]")
    expect(page.locator("[data-testid=edit-message]")).to_have_text(
        re.compile("^Not saved: this project changed meanwhile")
    )
    assert ("PATCH", "/api/projects/proj_a", '"v1"') in api.requests
    # The change that came first reaches the page: the panel and its form show it.
    updated = {
        "event_type": "project_updated",
        "timestamp": STAMP,
        "seq": 2,
        "data": {**changed, "updated_fields": ["status"]},
    }
    feed.sockets[0].send(orjson.dumps(updated).decode())
    wait_for_seq(page, 2)
    status_field = page.locator("[data-testid=detail-fields] [data-field=status] dd")
    expect(status_field).to_have_text("on_hold")
    expect(page.locator("[data-testid=edit-status]")).to_have_value("on_hold")
    # The next save asks for the tag of what is shown now, and sends it.
    page.select_option("[data-testid=edit-status]", "completed")
    page.click("[data-testid=edit-save]")
    wait_until(
        lambda: (
            page.evaluate("() => 0") == 0
            and ("PATCH", "/api/projects/proj_a", '"v2"') in api.requests
        ),
        what=f"a PATCH with the new tag (so far: {api.requests})",
    )


#: A contract whose page says where to look after one second without a server.
QUICK_LOST = {**CONTRACT, "lost_hint_ms": 1000, "backoff_first_ms": 100, "backoff_max_ms": 200}


@pytest.mark.parametrize("contract", [QUICK_LOST])
def test_a_page_without_its_server_for_a_while_says_run_projctl_open(
    page_and_feed: tuple[Page, Feed],
) -> None:
    page, feed = page_and_feed
    hint = page.locator("[data-testid=lost-hint]")
    wait_for_connections(page, feed, 1)
    feed.sockets[0].send(snapshot(1, record("proj_a")))
    wait_for_seq(page, 1)
    expect(hint).to_be_hidden()
    # The server goes; nothing answers where the page looks (the port of the page's
    # origin, 9, where nothing listens), connection after connection.
    feed.refuse = True
    feed.sockets[0].close()
    expect(page.locator("[data-testid=connection]")).to_have_text(re.compile("^reconnecting"))
    expect(hint).to_be_visible(timeout=QUICK_LOST["lost_hint_ms"] + 5_000)
    expect(hint).to_have_text(re.compile(r"run projctl open to find the server"))
    assert hint.locator("code").text_content() == "projctl open"
    # Back: the page's next try (every 200 ms here) connects, and the hint goes. (Its
    # "Reconnect now" button is hidden during each try: clicking it would race them.)
    feed.refuse = False
    expect(page.locator("[data-testid=connection]")).to_have_text(re.compile("^connected"))
    expect(hint).to_be_hidden()
