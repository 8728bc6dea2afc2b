"""Make docs/dashboard.png: the dashboard of a small database, caught just after live changes.

Run from the repository root, with the project's environment:

    .venv/bin/python docs/make_screenshot.py

A real run, in a temporary folder removed afterwards: a database of 12 projects
(various statuses, owners and types; the older ones back-dated, so the ages read
as they would in use), its server on 127.0.0.1 (a free port), the page in headless
Chromium at 1280 x 800, then live changes through projctl's Python API (a status
change, a create, an update of status and owner, a delete), so the picture shows the
highlighted rows, the struck-through deleted one and the feed. The shot is taken
once the page has drawn the last change (and before the deleted row's 5 s linger
ends).

Nothing outside the temporary folder is touched: ``PROJCTL_DB``, ``XDG_RUNTIME_DIR``
(the server's runtime folder) and, for Chromium, ``HOME``, ``XDG_CONFIG_HOME`` and
``XDG_CACHE_HOME`` all point into it, and every other ``PROJCTL_*`` variable is
cleared. Needs the system's Chromium on PATH (``chromium`` or ``chromium-browser``);
no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from playwright.sync_api import Page, sync_playwright

import projctl
from projctl.cli.serving import dashboard_url
from projctl.events import format_timestamp
from projctl.model import Project, next_project_id

OUTPUT = Path(__file__).resolve().parent / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

#: (name, type, status, owner, description, created ago, last updated ago), ages in hours.
SEED = [
    ("Billing API", "api", "in_progress", "alice", "Invoices and usage-based billing.", 990, 2),
    ("Customer portal", "web", "in_progress", "bob", "Self-service account pages.", 791, 5),
    ("Search indexer", "service", "on_hold", "chen", "Waiting on the new cluster.", 670, 75),
    ("Mobile app 3.0", "mobile", "in_progress", "dana", "Offline mode and push.", 603, 26),
    ("Payments reconciliation", "data", "completed", "alice", "Nightly ledger checks.", 1445, 148),
    ("Status page", "web", "completed", "emeka", "Public uptime page.", 2163, 290),
    ("Legacy SOAP gateway", "api", "archived", "bob", "Replaced by the REST API.", 9611, 1083),
    ("Feature flags service", "api", "created", "chen", "Gradual roll-outs.", 0.95, 0.95),
    ("CI runners on ARM", "infra", "in_progress", "emeka", "Cheaper, faster builds.", 219, 0.7),
    ("Kubernetes upgrade 1.31", "infra", "on_hold", "farah", "Blocked on ingress.", 338, 51),
    ("Warehouse migration", "data", "created", "farah", "From nightly dumps to CDC.", 47, 47),
]


def clean_environment(folder: Path) -> None:
    """Point projctl at ``folder`` only: no setting of the user's leaks in."""
    for name in [name for name in os.environ if name.startswith("PROJCTL_")]:
        del os.environ[name]
    runtime = folder / "run"
    runtime.mkdir(mode=0o700)
    os.environ.update(
        {
            "PROJCTL_DB": str(folder / "projects.json"),
            "PROJCTL_HOST": "127.0.0.1",
            "PROJCTL_PORT": "0",
            "PROJCTL_IDLE_TIMEOUT": "120",  # a server left behind by a crash stops soon
            "PROJCTL_OWNER": "dana",
            "XDG_RUNTIME_DIR": str(runtime),
        }
    )


def seed(db: projctl.Database) -> None:
    """12 projects: one made through the API just now, 11 older ones added to the file.

    ``db`` does not broadcast, so no server starts (and reads the file) yet. The older
    ones are the model's own records (``Project.to_dict``, ids from ``next_project_id``
    for their creation time), written in one rewrite of the projects table, as
    bench/memory.py does.
    """
    db.create("Fraud scoring model", type="ml", owner_id="dana", description="A first model.")
    data = orjson.loads(db.path.read_bytes())
    projects = data["projects"]
    now = datetime.now(timezone.utc)
    for name, kind, status, owner, description, created_hours, updated_hours in SEED:
        # Minutes and seconds that differ per project, as real creation times would.
        created = now - timedelta(hours=created_hours, seconds=len(projects) * 787)
        project_id = next_project_id(created, is_taken=projects.__contains__)
        projects[project_id] = Project(
            project_id=project_id,
            name=name,
            type=kind,
            status=status,
            owner_id=owner,
            description=description,
            created_at=format_timestamp(created),
            updated_at=format_timestamp(now - timedelta(hours=updated_hours)),
        ).to_dict()
    db.path.write_bytes(orjson.dumps(data))


def wait_drawn(page: Page, seq: int, projects: int) -> None:
    """Return once the page shows ``seq`` and ``projects`` projects, and a later frame began."""
    page.wait_for_function(
        """([seq, count]) => {
          const d = window.projctlDashboard;
          if (d === undefined || document.body.dataset.lastSeq !== seq
              || d.projectCount !== count) return false;
          if (window.projctlShotSeen !== seq) {
            window.projctlShotSeen = seq;  // drawn in this frame: look again next frame
            return false;
          }
          return true;
        }""",
        arg=[str(seq), projects],
        timeout=TIMEOUT_MS,
    )


def live_changes(db: projctl.Database) -> None:
    """The changes the picture shows, newest on top: a status change, a create, an update
    of two fields, a delete."""
    db.update(db.resolve("Kubernetes upgrade 1.31"), status="in_progress")
    db.create("Audit log export", type="api", owner_id="alice", description="CSV and JSON.")
    db.update(db.resolve("Customer portal"), status="completed", owner_id="emeka")
    db.delete(db.resolve("Legacy SOAP gateway"))


def screenshot(folder: Path, chromium: str) -> None:
    """Seed, serve, open the page, change things live, take the picture."""
    seed(projctl.open_database(broadcast=False))
    db = projctl.open_database()
    state = db.ensure_server()
    try:
        home = folder / "home"
        home.mkdir()
        browser_env: dict[str, str | float | bool] = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_ARGS, env=browser_env, timeout=60_000
            )
            try:
                context = browser.new_context(
                    viewport={"width": 1280, "height": 800},
                    color_scheme="light",
                    device_scale_factor=1,
                )
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(dashboard_url(state.url, state.subscriber_token))
                wait_drawn(page, db.latest_seq(), len(db.list()))
                page.wait_for_function("() => window.projctlDashboard.state === 'connected'")
                live_changes(db)
                wait_drawn(page, db.latest_seq(), len(db.list()))
                # Finite animations (the flash of a changed cell) jump to their end.
                # The whole page: below 1400 px wide the feed sits under the table.
                page.screenshot(path=str(OUTPUT), full_page=True, animations="disabled")
            finally:
                browser.close()
    finally:
        db.stop_server()


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Chromium on PATH (apt-get install chromium); none is downloaded")
    folder = Path(tempfile.mkdtemp(prefix="projctl-screenshot-"))
    try:
        clean_environment(folder)
        screenshot(folder, chromium)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
