"""What watch says about the server's messages: a resync that replaced events it was waiting
for, and a message it cannot fold (a malformed snapshot or resync) from a team server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest
from rich.console import Console

from projctl.errors import ServerError
from projctl.runtime import Endpoint
from projctl.subscribe import Connection, Message, follow
from projctl.watch import EventFilter, run_json, run_live

from .conftest import PROJCTL, until
from .test_subscribe import Feed, Locate, fast_backoff, feeding

__all__ = ["fast_backoff"]  # the fixture, used by every test here

Run = Callable[..., subprocess.CompletedProcess[str]]
CREATED_ONLY = EventFilter(event_types=frozenset({"project_created"}))


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 20))


def record(project_id: str) -> dict[str, str]:
    return {
        "project_id": project_id,
        "name": f"name of {project_id}",
        "type": "api",
        "status": "created",
        "owner_id": "ann",
        "description": "",
        "created_at": "2023-11-19T12:00:00.000000",
        "updated_at": "2023-11-19T12:00:00.000000",
    }


def projects_frame(event_type: str, seq: int, projects: list[Any]) -> str:
    message = {
        "event_type": event_type,
        "timestamp": "2023-11-19T12:00:00.000000",
        "seq": seq,
        "data": {"projects": projects},
    }
    return orjson.dumps(message).decode()


RESYNC_LINE = (
    "projctl watch: the events after seq 1 are no longer in the journal; the server sent every "
    "project as of seq 9 instead (resync), so they were not seen and do not count toward "
    "--count (0 of 3 matched so far)\n"
)


# -- a resync in place of the events watch waits for ---------------------------------------


def test_json_watch_says_when_a_resync_replaced_the_events_it_waits_for() -> None:
    async def scenario() -> None:
        resync = projects_frame("resync", 9, [record("proj_a")])
        async with feeding(Feed([[resync], None])) as feed:
            out, err = io.StringIO(), io.StringIO()
            watching = asyncio.create_task(
                run_json(
                    Locate(Endpoint(url=feed.url)),
                    since=1,
                    event_filter=CREATED_ONLY,
                    count=3,
                    out=out,
                    err=err,
                )
            )
            try:
                await until(lambda: "resync" in err.getvalue(), what="the resync line")
                # It resumes after the resync, not from the events that are gone.
                await until(lambda: feed.paths == ["/ws?since=1", "/ws?since=9"])
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            assert out.getvalue() == ""  # --event filters the resync itself out
            lines = err.getvalue().splitlines(keepends=True)
            assert [line for line in lines if "resync" in line] == [RESYNC_LINE]

    run(scenario())


def test_live_watch_says_so_once_the_screen_is_gone() -> None:
    async def scenario() -> None:
        resync = projects_frame("resync", 9, [record("proj_a")])
        async with feeding(Feed([[resync], None])) as feed:
            err = io.StringIO()
            console = Console(file=io.StringIO(), width=100, height=30, color_system=None)
            watching = asyncio.create_task(
                run_live(
                    Locate(Endpoint(url=feed.url)),
                    console=console,
                    event_filter=CREATED_ONLY,
                    since=1,
                    count=3,
                    err=err,
                )
            )
            try:
                # The second connection is made only once the resync has been taken.
                await until(lambda: feed.accepted == 2, what="the reconnection after the resync")
                assert err.getvalue() == ""  # not while the screen is shown
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            assert err.getvalue() == RESYNC_LINE

    run(scenario())


def test_a_count_that_a_trimmed_journal_cannot_reach_says_why_before_timing_out(
    projctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Committed with no server running: the server watch starts has only the journal,
    # which keeps seq 4 and 5.
    monkeypatch.setenv("PROJCTL_JOURNAL_LIMIT", "2")
    for number in range(5):
        assert projctl("create", f"p{number}").returncode == 0
    watched = projctl(
        "watch", "--event", "project_created", "--since", "1", "--count", "3", "--timeout", "3"
    )
    assert watched.returncode == 124
    assert watched.stdout == ""
    lines = watched.stderr.splitlines()
    resyncs = [line for line in lines if "resync" in line]
    assert resyncs == [
        "projctl watch: the events after seq 1 are no longer in the journal; the server sent "
        "every project as of seq 5 instead (resync), so they were not seen and do not count "
        "toward --count (0 of 3 matched so far)"
    ]
    assert lines[-1] == "Error: timed out after 3s: 0 of 3 events"


# -- a message watch cannot fold ------------------------------------------------------------


MALFORMED = [
    (projects_frame("snapshot", 3, [{"name": "no id"}]), "snapshot", "data.projects[0]"),
    (projects_frame("snapshot", 3, [record("proj_a"), "x"]), "snapshot", "data.projects[1]"),
    (projects_frame("resync", 3, [{"project_id": 7}]), "resync", "data.projects[0]"),
    ('{"event_type": "snapshot", "seq": 3, "data": {}}', "snapshot", "data.projects is not"),
    ('{"event_type": "snapshot", "seq": 3, "data": []}', "snapshot", "data is not an object"),
    ('{"event_type": "resync", "seq": "3", "data": {"projects": []}}', "resync", "seq is not"),
    ('{"event_type": "project_created", "seq": 4, "data": "x"}', "project_created", "data is"),
    ('{"event_type": "project_deleted", "seq": 4, "data": {"project_id": 1}}', "project_", "id"),
    # An emitted event (it has a seq) is folded like the lifecycle ones: checked the same way.
    ('{"event_type": "tests_run", "seq": 4, "data": {"project_id": 1}}', "tests_run", "id"),
    ('{"event_type": "tests_run", "seq": true, "data": {}}', "tests_run", "seq is not"),
]


@pytest.mark.parametrize(("frame", "event_type", "problem"), MALFORMED)
def test_follow_refuses_a_malformed_message(frame: str, event_type: str, problem: str) -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame], None])) as feed:
            locate = Locate(Endpoint(url=feed.url))
            async with contextlib.aclosing(follow(locate, since=None, snapshot=True)) as stream:
                assert await anext(stream) == Connection("connected", feed.url)
                with pytest.raises(ServerError) as caught:
                    await anext(stream)
            message = str(caught.value)
            assert message.startswith(f"the server sent a malformed {event_type}")
            assert problem in message
            assert feed.accepted == 1  # not retried: the same server would send it again

    run(scenario())


def test_follow_passes_well_formed_and_unknown_messages() -> None:
    """A message of a kind without a seq is none of the journal's events, whatever its name
    (an emitted event's type may be any name): passed on as it is."""
    frames = [
        projects_frame("snapshot", 0, []),
        projects_frame("snapshot", 3, [record("proj_a")]),
        '{"event_type": "hello", "anything": [1, 2]}',
    ]

    async def scenario() -> None:
        async with feeding(Feed([frames, None])) as feed:
            locate = Locate(Endpoint(url=feed.url))
            async with contextlib.aclosing(follow(locate, since=None, snapshot=True)) as stream:
                items = [await anext(stream) for _ in range(4)]
            assert [item.data["event_type"] for item in items[1:] if isinstance(item, Message)] == [
                "snapshot",
                "snapshot",
                "hello",
            ]

    run(scenario())


def test_watch_on_a_team_server_with_a_malformed_snapshot_exits_5() -> None:
    async def scenario() -> None:
        malformed = projects_frame("resync", 3, [{"name": "no id"}])
        async with feeding(Feed([[malformed], None])) as feed:
            env = {**os.environ, "PROJCTL_URL": f"ws://127.0.0.1:{feed.port}"}
            process = await asyncio.create_subprocess_exec(
                PROJCTL,
                "watch",
                "--json",
                "--timeout",
                "15",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            try:
                stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert process.returncode == 5, stderr
        assert stdout == b""
        assert stderr.decode().splitlines()[-1] == (
            "Error: the server sent a malformed resync message "
            "(data.projects[0] is not a project with a project_id)"
        )
        assert b"Traceback" not in stderr

    run(scenario())
