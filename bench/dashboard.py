"""Benchmark: the browser dashboard: a first load of 1,000 projects, then a 5,000-event burst.

Run by hand:  python bench/dashboard.py [--projects 1000] [--events 5000] [--runs 5] [--quick]

Needs Chromium (the system's, found on PATH as ``chromium`` or ``chromium-browser``;
nothing is downloaded), driven headless through Playwright at 1280 x 800.

"On screen" below means: the page has drawn it (``body[data-last-seq]``, which the
page sets in the animation frame that rendered that seq) and a later animation frame
has begun, so the drawing frame's style, layout and paint are done. Playwright polls
once per frame, so that costs at most one frame more than the exact moment.

(a) A database of N projects (written to the file in one go, as bench/memory.py
    does) and its server (loopback, a free port). Each run opens the page in a
    fresh browser context and times it until the table holds every project:
    ``projectCount == N``, the rows drawn (at most 500; the rest are counted) and
    the seq marked. Two clocks: this process's ``time.monotonic()`` from just before
    ``page.goto`` to Playwright reporting it (includes Playwright's round trips: an
    upper bound); and the page's ``performance.now()``, from navigation start to
    the frame that drew the table and to the frame after it. Beside them, first paint
    from the Performance API (which paints the page before the snapshot arrives).
    Target: median open to table on screen <= 500 ms.
(b) With the page open and connected, a burst of M events (the mix of
    bench/watch_burst.py: 60% updates, 25% creates, 15% deletes) forwarded
    through the server's Unix socket one at a time, as fast as the replies come.
    Both ends are measured in this process, on its monotonic clock: the moment the
    last forward's reply arrived, and the moment Playwright reports the last seq
    on screen (including its round trip). Target: <= 1 s. Also reported: whether
    the page applied every event (no cut-off, no resync), how many frames rendered
    the burst, and the long animation frames' split between scripts and rendering.

--quick: 50 projects, 200 events, 1 run (figures that only show it still runs).
Everything binds 127.0.0.1 and every wait is bounded; the browser and the server
are stopped however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import bench_database, start_server
from fanout import LineClient, projctl_target
from memory import add_projects, described_project
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from watch_burst import make_events

from projctl import rpc, runtime
from projctl.cli.serving import dashboard_url
from projctl.store import ProjectStore

LOAD_TARGET = 0.500  # seconds, open to the table on screen
BURST_TARGET = 1.0  # seconds, the last event's reply to the page showing it
#: Rows the page draws at most (MAX_ROWS in render.js); the rest are counted.
MAX_ROWS = 500
IDLE_TIMEOUT = 600
LOAD_TIMEOUT_MS = 30_000
BURST_TIMEOUT_MS = 60_000
PAINT_TIMEOUT_MS = 5_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def on_screen(condition: str, key: str) -> str:
    """A ``wait_for_function`` predicate (polled once per frame): false until ``condition``
    (a JS expression over ``arg``) holds in one frame and a later frame has begun; then
    ``[drawn, after]``, the page's ``performance.now()`` at those two frames (ms).

    ``key`` names the page's note of the first moment; each wait needs its own.
    """
    return f"""(arg) => {{
  if (!({condition})) return false;
  const seen = (window.projctlBench = window.projctlBench || {{}});
  if (seen.{key} === undefined) {{
    seen.{key} = performance.now();
    return false;
  }}
  return [seen.{key}, performance.now()];
}}"""


#: Every project in the model (arg[0]), the rows drawn (arg[1]) and the seq marked.
TABLE_ON_SCREEN = on_screen(
    "window.projctlDashboard !== undefined && document.body.dataset.lastSeq !== undefined"
    " && window.projctlDashboard.projectCount === arg[0]"
    " && window.projctlDashboard.rowsShown === arg[1]",
    "table",
)
#: The seq ``arg`` (a string) marked as rendered.
SEQ_ON_SCREEN = on_screen("document.body.dataset.lastSeq === arg", "burst")
#: True once first paint and first contentful paint are reported.
PAINTED = """() => performance.getEntriesByType("paint").length >= 2"""
#: Named paint entries (first-paint, first-contentful-paint), ms from navigation start.
PAINTS = """() => Object.fromEntries(
  performance.getEntriesByType("paint").map((entry) => [entry.name, entry.startTime]))"""
#: Records the long animation frames (> 50 ms) from now on; false when not supported.
OBSERVE_FRAMES = """() => {
  window.projctlBenchFrames = [];
  if (!PerformanceObserver.supportedEntryTypes.includes("long-animation-frame")) return false;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      window.projctlBenchFrames.push({
        duration: entry.duration,
        scripts: entry.scripts.reduce((sum, script) => sum + script.duration, 0),
        rendering: entry.styleAndLayoutStart
          ? entry.startTime + entry.duration - entry.styleAndLayoutStart : 0,
      });
    }
  }).observe({type: "long-animation-frame"});
  return true;
}"""
COUNTERS = """() => {
  const d = window.projctlDashboard;
  return {renders: d.renders, events: d.events, projects: d.projectCount, state: d.state};
}"""


def find_chromium() -> str:
    """The system's Chromium; ``SystemExit`` without one (a browser is never downloaded)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("needs Chromium on PATH (apt-get install chromium)")


@contextlib.contextmanager
def chromium(home: Path) -> Iterator[Browser]:
    """A headless Chromium, closed (with Playwright's driver) however the block ends.

    Its ``HOME`` and XDG folders are ``home``: Chromium writes crash-report settings
    and a dconf cache there, which must not land in the user's home.
    """
    executable = find_chromium()
    home.mkdir(exist_ok=True)
    env: dict[str, str | float | bool] = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=CHROMIUM_ARGS,
            env=env,
            headless=True,
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a new browser context (no cache, no storage), closed on exit."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(LOAD_TIMEOUT_MS)
        yield page
    finally:
        context.close()


def open_table(page: Page, url: str, projects: int) -> list[float]:
    """Open ``url`` and return once all ``projects`` are on screen: ``[drawn, after]`` (ms)."""
    # "commit": return as soon as the navigation is under way; the wait is the measure.
    page.goto(url, wait_until="commit")
    handle = page.wait_for_function(TABLE_ON_SCREEN, arg=[projects, min(projects, MAX_ROWS)])
    moments: list[float] = handle.json_value()
    return moments


@dataclass(frozen=True)
class Load:
    """One first load of the page. Seconds."""

    #: This process: just before ``page.goto`` to Playwright reporting the table on screen.
    wall: float
    #: The page: navigation start to the frame that drew the table.
    drawn: float
    #: The page: navigation start to the next frame (the drawing frame's paint is done).
    shown: float
    first_paint: float | None


def load_once(browser: Browser, url: str, projects: int) -> Load:
    """Open ``url`` in a fresh page and time it until all ``projects`` are on screen."""
    with fresh_page(browser) as page:
        started = time.monotonic()
        drawn, shown = open_table(page, url, projects)
        seen = time.monotonic()
        # Paint entries come once a frame was presented; wait for them (untimed).
        with contextlib.suppress(PlaywrightTimeoutError):
            page.wait_for_function(PAINTED, timeout=PAINT_TIMEOUT_MS)
        paints: dict[str, float] = page.evaluate(PAINTS)
    first_paint = paints.get("first-paint")
    return Load(
        wall=seen - started,
        drawn=drawn / 1000,
        shown=shown / 1000,
        first_paint=None if first_paint is None else first_paint / 1000,
    )


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def against(seconds: float, target: float) -> str:
    return f"{ms(seconds)} ({seconds / target:.2f}x, {verdict(seconds <= target)})"


def first_load(browser: Browser, url: str, projects: int, runs: int) -> None:
    """Part (a): ``runs`` first loads, each in a fresh page; their figures and medians."""
    runs_text = "1 run" if runs == 1 else f"{runs} runs"
    print(f"(a) open the page to a table of {projects} projects: {runs_text}, each a fresh page")
    loads = []
    for number in range(1, runs + 1):
        load = load_once(browser, url, projects)
        loads.append(load)
        print(
            f"    run {number}: open to table on screen {ms(load.wall)} (this process); "
            f"in the page from navigation start: drawn {ms(load.drawn)}, on screen "
            f"{ms(load.shown)}, first paint {ms(load.first_paint)}"
        )
    paints = [load.first_paint for load in loads if load.first_paint is not None]
    first_paint = ms(statistics.median(paints)) if paints else "not reported"
    print(
        f"    median (target <= {LOAD_TARGET * 1000:g} ms): open to table on screen "
        f"{against(statistics.median(load.wall for load in loads), LOAD_TARGET)} in this "
        f"process; navigation start to on screen "
        f"{against(statistics.median(load.shown for load in loads), LOAD_TARGET)} in the page; "
        f"first paint {first_paint}"
    )


def expected_projects(start: int, events: list[dict[str, Any]]) -> int:
    """How many projects live after ``events``, from ``start``."""
    delta = {"project_created": 1, "project_deleted": -1}
    return start + sum(delta.get(str(event["event_type"]), 0) for event in events)


def burst(browser: Browser, url: str, info: runtime.ServerState, db: Path, count: int) -> bool:
    """Part (b): ``count`` events forwarded into an open page; whether it applied them all."""
    store = ProjectStore(db)
    projects = len(store.list_projects())
    events = make_events(store, count)
    lines = [rpc.encode_request(rpc.OP_FORWARD, event=event, version=None) for event in events]
    final_seq = str(events[-1]["seq"])
    final_projects = expected_projects(projects, events)
    target = projctl_target(info)
    with fresh_page(browser) as page:
        open_table(page, url, projects)
        page.wait_for_function("() => window.projctlDashboard.state === 'connected'")
        before: dict[str, Any] = page.evaluate(COUNTERS)
        slow_before = int(target.status()["slow_subscribers_closed"])
        observing = bool(page.evaluate(OBSERVE_FRAMES))
        with LineClient(info.socket) as client:
            started = time.monotonic()
            for line in lines:
                reply = client.call(line)
                if not reply.get("ok"):
                    raise SystemExit(f"forward refused: {reply}")
            accepted = time.monotonic()
        page.wait_for_function(SEQ_ON_SCREEN, arg=final_seq, timeout=BURST_TIMEOUT_MS)
        seen = time.monotonic()
        after: dict[str, Any] = page.evaluate(COUNTERS)
        frames: list[dict[str, float]] = page.evaluate("() => window.projctlBenchFrames")
    slow_closed = int(target.status()["slow_subscribers_closed"]) - slow_before
    lag = seen - accepted
    elapsed = accepted - started
    applied = after["events"] - before["events"]
    print(
        f"(b) a burst of {count} events into the open page ({projects} projects), "
        f"forwarded one at a time in {elapsed:.2f}s ({count / elapsed:,.0f}/s)"
    )
    print(
        f"    last event on screen {ms(lag)} after its forward was accepted "
        f"(target <= {BURST_TARGET * 1000:g} ms: {lag / BURST_TARGET:.2f}x, "
        f"{verdict(lag <= BURST_TARGET)}); both ends time.monotonic() in this process, "
        "the second when Playwright reports it"
    )
    print(
        f"    page: {applied} of {count} events applied, {after['projects']} projects "
        f"(expected {final_projects}), {after['renders'] - before['renders']} frames rendered "
        f"the burst, {after['state']}; subscribers the server cut off as slow: {slow_closed}"
    )
    print(f"    {long_frames(frames) if observing else 'long animation frames: not reported'}")
    return (
        applied == count
        and after["projects"] == final_projects
        and after["state"] == "connected"
        and not slow_closed
    )


def long_frames(frames: list[dict[str, float]]) -> str:
    """The long animation frames of the burst: how long, and where the time went."""
    if not frames:
        return "long animation frames (> 50 ms) during the burst: none"
    total = sum(frame["duration"] for frame in frames)
    scripts = sum(frame["scripts"] for frame in frames)
    rendering = sum(frame["rendering"] for frame in frames)
    durations = sorted(frame["duration"] for frame in frames)
    return (
        f"long animation frames (> 50 ms) during the burst: {len(frames)}, median "
        f"{statistics.median(durations):.0f} ms, longest {durations[-1]:.0f} ms; of their "
        f"{total:.0f} ms, scripts (messages and the page's frame callback) {scripts:.0f} ms, "
        f"style, layout and paint {rendering:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5, help="first loads timed in (a)")
    parser.add_argument("--quick", action="store_true", help="50 projects, 200 events, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.projects, args.events, args.runs = 50, 200, 1
    find_chromium()  # before any set-up: stop at once without it
    started = time.monotonic()
    with bench_database(
        1, serve=False, idle_timeout=IDLE_TIMEOUT, make_project=described_project
    ) as bench:
        if args.projects > 1:
            add_projects(bench.db, args.projects - 1)
        print(f"setup: {args.projects} projects in {time.monotonic() - started:.2f}s")
        info = start_server(bench.db, IDLE_TIMEOUT)
        url = dashboard_url(info.url, info.subscriber_token)
        with chromium(bench.folder / "home") as browser:
            first_load(browser, url, args.projects, args.runs)
            intact = burst(browser, url, info, bench.db, args.events)
    if not intact:
        raise SystemExit("(b): the page did not apply every event of the burst")


if __name__ == "__main__":
    main()
