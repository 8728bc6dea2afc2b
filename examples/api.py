"""projctl from Python: the same operations as the command line, and the live feed.

Run it with a database path (a new one is fine):

    python examples/api.py /tmp/demo/projects.json

Each change commits the project and its event, then broadcasts the event to the
database's server (started in the background when none runs), exactly as
`projctl create` does. The feed is then read back from the start with
`subscribe(since=0)`, and the server is stopped.
"""

from __future__ import annotations

import asyncio
import sys

import projctl


async def print_feed(db: projctl.Database, up_to_seq: int) -> None:
    """Print every journaled event, oldest first, until ``up_to_seq`` has been seen."""
    async for message in db.subscribe(since=0):
        data = message["data"]
        print(f"#{message['seq']} {message['event_type']} {data['project_id']} {data['name']}")
        if message["seq"] >= up_to_seq:
            return


def main(path: str) -> None:
    db = projctl.open_database(path)

    created = db.create("Billing API", type="api", owner_id="alice", description="Invoices")
    project_id = created.project.project_id
    print(f"created {project_id} (event seq {created.event['seq']})")

    changed = db.update(project_id, status="in_progress", description="Sprint 4")
    print(f"updated {', '.join(changed.updated_fields)}")

    for project in db.list(status="in_progress"):
        print(f"in progress: {project.project_id} {project.name} (owner {project.owner_id})")

    try:
        db.get("proj_19700101_000000")
    except projctl.ProjectNotFoundError as error:
        print(f"as expected: {error}")

    db.delete(project_id)
    asyncio.run(asyncio.wait_for(print_feed(db, db.latest_seq()), timeout=30))
    stopped = db.stop_server()
    print("server stopped" if stopped else "no server was running")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/api.py DATABASE_PATH")
    main(sys.argv[1])
