"""The dashboard's views against real servers, at a wide screen (1400 px) and a phone (375 px):
the count chips as the status filter, the feed and last changes from the journal, the URL as
you type, the detail panel (and its writes with a write token), the filters folded on a phone.

Each server is the database's background server, started and fed by the installed ``projctl``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from playwright.sync_api import Page, expect

from projctl.model import PROJECT_FIELDS

from .test_dashboard import (
    CHIPS_PRESSED,
    CONNECTION,
    LIVE_MS,
    READ_FEED,
    READ_STATUS_FILTER,
    SHOWN_COUNT,
    OpenPage,
    Run,
    browser,
    ok,
    open_page,
    row,
    rows,
    start_server,
    wait_for_seq,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("broadcasting")]
#: test_dashboard's fixtures, used here by name: one Chromium a module, a context a page.
FIXTURES = (browser, open_page)

#: A wide screen (the feed beside the table) and a phone.
SCREENS = [pytest.param(1400, 900, id="1400px"), pytest.param(375, 740, id="375px")]
STATUS_LABEL = "[data-testid=status-label]"
DETAIL = "[data-testid=detail]"


def chip(status: str) -> str:
    """The count chip of ``status`` ("" : the total's)."""
    return f'[data-testid=status-counts] button[data-status-filter="{status}"]'


def names(page: Page) -> list[str]:
    return [r["cells"]["name"] for r in rows(page)]


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_the_count_chips_are_the_status_filter(
    projctl: Run, open_page: OpenPage, db_path: Path, width: int, height: int
) -> None:
    for name, status in (("alpha", "completed"), ("beta", "on_hold"), ("gamma", "created")):
        ok(projctl, "create", name, "--status", status)
    base = start_server(projctl)
    page = open_page(base, width=width, height=height)
    wait_for_seq(page, 3)
    expect(page.locator("[data-testid=database-name]")).to_have_text(db_path.name)
    expect(page.locator(STATUS_LABEL)).to_have_text(re.compile(r"^Status: all\b"))
    assert page.locator(chip("")).get_attribute("aria-pressed") == "true"
    assert page.locator("[data-testid=filter-status]").count() == 0  # the list box is gone

    page.click(chip("completed"))
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 3 shown")
    assert names(page) == ["alpha"]
    expect(page.locator(STATUS_LABEL)).to_have_text(re.compile(r"^Status: completed\b"))
    assert page.locator(chip("")).get_attribute("aria-pressed") == "false"
    page.click(chip("on_hold"))
    expect(page.locator(SHOWN_COUNT)).to_have_text("2 of 3 shown")
    assert page.locator(CHIPS_PRESSED).evaluate_all(READ_STATUS_FILTER) == ["on_hold", "completed"]
    expect(page.locator(STATUS_LABEL)).to_have_text(re.compile(r"^Status: on_hold, completed\b"))
    expect(page).to_have_url(base + "?status=on_hold&status=completed")
    page.click(chip("completed"))  # a second click takes it out
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 3 shown")
    assert names(page) == ["beta"]
    # The counts stay those of the whole database.
    assert page.locator(chip("completed") + " [data-count]").text_content() == "1"
    page.click(chip(""))  # the total: every status
    expect(page.locator(SHOWN_COUNT)).to_have_text("3 of 3 shown")
    expect(page.locator(STATUS_LABEL)).to_have_text(re.compile(r"^Status: all\b"))
    expect(page).to_have_url(base)


def test_recent_events_and_last_changes_start_from_the_journal(
    projctl: Run, open_page: OpenPage
) -> None:
    alpha = ok(projctl, "create", "alpha")
    beta = ok(projctl, "create", "beta")
    gamma = ok(projctl, "create", "gamma")
    for owner in ("bob", "carol", "dan"):
        ok(projctl, "update", alpha, "--owner", owner)
    ok(projctl, "update", beta, "--status", "completed")
    ok(projctl, "emit", gamma, "tests_run", "--data", '{"passed": 41}')
    latest = 8
    page = open_page(start_server(projctl))
    wait_for_seq(page, latest)
    feed = page.locator("[data-testid=feed] li")
    expect(feed).to_have_count(latest)  # before it, the journal's
    assert page.evaluate(READ_FEED)[0] == [str(latest), "tests_run"]
    assert [int(seq) for seq, _ in page.evaluate(READ_FEED)] == list(range(latest, 0, -1))
    shown = {r["id"]: r for r in rows(page)}
    assert shown[alpha]["cells"]["last_change"] == "updated owner_id"
    assert shown[beta]["cells"]["last_change"] == "updated status"
    assert shown[gamma]["cells"]["last_change"] == "tests_run passed=41"
    # History, not live changes: nothing highlighted, nothing applied twice.
    assert all(set(r["classes"]) == {"row"} for r in shown.values())
    assert page.evaluate("() => window.projctlDashboard.events") == 0
    # And the feed goes on from there, live.
    delta = ok(projctl, "create", "delta")
    page.wait_for_selector(row(delta, "row-new"), timeout=LIVE_MS)
    assert page.evaluate(READ_FEED)[:2] == [
        [str(latest + 1), "project_created"],
        [str(latest), "tests_run"],
    ]


def test_every_filter_reaches_the_url_as_you_type(projctl: Run, open_page: OpenPage) -> None:
    ok(projctl, "create", "Billing API", "--owner", "ann", "--type", "web")
    ok(projctl, "create", "Search", "--owner", "bob")
    base = start_server(projctl)
    page = open_page(base)
    wait_for_seq(page, 2)
    entries = page.evaluate("() => history.length")
    page.locator("[data-testid=filter-search]").press_sequentially("bill", delay=20)
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 2 shown")  # the table at once
    expect(page).to_have_url(base + "?q=bill")  # the URL once typing pauses
    page.locator("[data-testid=filter-owner]").press_sequentially("ann", delay=20)
    expect(page).to_have_url(base + "?owner=ann&q=bill")
    page.locator("[data-testid=filter-type]").press_sequentially("web", delay=20)
    expect(page).to_have_url(base + "?owner=ann&type=web&q=bill")
    page.click(chip("created"))
    expect(page).to_have_url(base + "?status=created&owner=ann&type=web&q=bill")
    # Replaced, never pushed: Back leaves the dashboard instead of undoing keystrokes.
    assert page.evaluate("() => history.length") == entries
    page.click("[data-testid=clear-filters]")
    expect(page).to_have_url(base)
    expect(page.locator(SHOWN_COUNT)).to_have_text("2 of 2 shown")


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_a_row_opens_a_panel_with_every_field_and_its_events(
    projctl: Run, open_page: OpenPage, width: int, height: int
) -> None:
    description = "Charges cards.\nSecond line: <b>bold</b> \u202egnp.exe"
    project = ok(projctl, "create", "Billing API", "--owner", "ann", "--description", description)
    other = ok(projctl, "create", "other")
    ok(projctl, "update", project, "--status", "in_progress")
    ok(projctl, "emit", project, "tests_run", "--data", '{"passed": 3}')
    page = open_page(start_server(projctl), width=width, height=height)
    wait_for_seq(page, 4)
    detail = page.locator(DETAIL)
    expect(detail).to_be_hidden()
    page.click(row(project))
    expect(detail).to_be_visible()
    box = detail.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= width
    expect(page.locator("[data-testid=detail-title]")).to_have_text("Billing API")
    fields = page.locator("[data-testid=detail-fields] [data-field]")
    assert fields.evaluate_all("(divs) => divs.map((d) => d.dataset.field)") == list(PROJECT_FIELDS)
    stored = orjson.loads(ok(projctl, "show", project, "--json"))
    stored = stored[0] if isinstance(stored, list) else stored

    def shown(field: str) -> str | None:
        return page.locator(f"[data-testid=detail-fields] [data-field={field}] dd").text_content()

    assert shown("project_id") == project
    assert shown("status") == "in_progress"
    assert shown("owner_id") == "ann"
    assert shown("created_at") == stored["created_at"].replace("T", " ") + " UTC"
    # The description whole: its lines as lines, markup as text, a bidi override visible.
    assert shown("description") == "Charges cards.Second line: <b>bold</b> \\u202egnp.exe"
    description_cell = page.locator("[data-testid=detail-fields] [data-field=description] dd")
    assert description_cell.locator("br").count() == 1
    assert description_cell.locator("b").count() == 0
    events = page.locator("[data-testid=detail-events] li")
    expect(events).to_have_count(3)  # from the journal: created, updated, emitted
    assert events.evaluate_all("(lis) => lis.map((li) => li.dataset.eventType)") == [
        "tests_run",
        "project_updated",
        "project_created",
    ]
    # Live: a change shows in the panel, its event on top; another project's does not.
    ok(projctl, "update", project, "--owner", "bob")
    ok(projctl, "update", other, "--owner", "bob")
    wait_for_seq(page, 6)
    expect(page.locator("[data-testid=detail-fields] [data-field=owner_id] dd")).to_have_text("bob")
    expect(events).to_have_count(4)
    assert events.first.get_attribute("data-seq") == "5"
    # No write token: no control to change anything.
    expect(page.locator("[data-testid=detail-edit]")).to_be_hidden()
    assert (
        detail.locator("select, input").evaluate_all(
            "(controls) => controls.filter((c) => c.offsetParent !== null).length"
        )
        == 0
    )
    # Escape closes it, and the row has the focus back.
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    assert page.evaluate("() => document.activeElement.dataset.projectId") == project
    # The keyboard opens it too.
    page.keyboard.press("Enter")
    expect(detail).to_be_visible()
    page.click("[data-testid=detail-close]")
    expect(detail).to_be_hidden()


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_a_write_token_changes_status_and_owner_from_the_panel(
    projctl: Run, open_page: OpenPage, width: int, height: int
) -> None:
    project = ok(projctl, "create", "Billing API", "--owner", "ann")
    base = start_server(projctl)
    token = ok(projctl, "server", "token")
    patches: list[dict[str, str]] = []

    def on_request(request: object) -> None:
        method = getattr(request, "method", "")
        if method == "PATCH":
            patches.append(getattr(request, "headers", {}))

    page = open_page(
        base + "#token=" + quote(token, safe=""), width=width, height=height, request=on_request
    )
    expect(page.locator(CONNECTION)).to_have_text(re.compile(r"^connected"))
    wait_for_seq(page, 1)
    assert page.url == base  # the token left the address bar
    page.click(row(project))
    edit = page.locator("[data-testid=detail-edit]")
    expect(edit).to_be_visible()
    expect(page.locator("[data-testid=edit-status]")).to_have_value("created")
    expect(page.locator("[data-testid=edit-owner]")).to_have_value("ann")
    page.select_option("[data-testid=edit-status]", "in_progress")
    page.fill("[data-testid=edit-owner]", "bob")
    page.click("[data-testid=edit-save]")
    expect(page.locator("[data-testid=edit-message]")).to_have_text("Saved: status, owner_id.")
    # Through the feed, like any change: the row, the counts, the panel.
    page.wait_for_selector(row(project, "row-updated"), timeout=LIVE_MS)
    assert rows(page)[0]["cells"]["status"] == "in_progress"
    status = page.locator("[data-testid=detail-fields] [data-field=status] dd")
    expect(status).to_have_text("in_progress")
    stored = orjson.loads(ok(projctl, "show", project, "--json"))
    stored = stored[0] if isinstance(stored, list) else stored
    assert (stored["status"], stored["owner_id"]) == ("in_progress", "bob")
    # Guarded by the version the panel showed, with the token in a header only.
    assert len(patches) == 1
    assert re.fullmatch(r'"[0-9a-f]+"', patches[0]["if-match"])
    assert patches[0]["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_on_a_phone_the_filters_fold_behind_one_button(
    projctl: Run, open_page: OpenPage, width: int, height: int
) -> None:
    for number in range(12):
        ok(projctl, "create", f"project {number:02}", "--owner", "ann")
    page = open_page(start_server(projctl), width=width, height=height)
    wait_for_seq(page, 12)
    form = page.locator("#filters")
    toggle = page.locator("[data-testid=filters-toggle]")
    first = page.locator("[data-testid=projects-table] tr[data-project-id]").first
    box = first.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= height, f"the first project is below the screen: {box}"
    if width >= 700:
        expect(toggle).to_be_hidden()
        expect(form).to_be_visible()
        return
    expect(form).to_be_hidden()
    assert toggle.get_attribute("aria-expanded") == "false"
    # Several projects on the first screen, not just one.
    visible_rows = page.locator("[data-testid=projects-table] tr[data-project-id]").evaluate_all(
        f"(trs) => trs.filter((tr) => tr.getBoundingClientRect().bottom <= {height}).length"
    )
    assert visible_rows >= 5, visible_rows
    toggle.click()
    expect(form).to_be_visible()
    assert toggle.get_attribute("aria-expanded") == "true"
    expect(page.locator("[data-testid=filter-search]")).to_be_focused()
    page.keyboard.type("project 07")
    expect(page.locator(SHOWN_COUNT)).to_have_text("1 of 12 shown")
    toggle.click()
    expect(form).to_be_hidden()
    expect(toggle).to_have_text("Filters (1 on)")  # folded, it says a filter is on
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
