"""follow(): reconnects and resumes after connection errors only, against small real servers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from projctl import _client, subscribe
from projctl.errors import ServerError, ServerUnavailableError
from projctl.runtime import Endpoint
from projctl.subscribe import Connection, Message, follow

CLOSED = "the server closed the connection"
UNAVAILABLE = "no server is running for this database"


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run one test's coroutine with an overall bound."""
    asyncio.run(asyncio.wait_for(coroutine, 20))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "BACKOFF_FIRST", 0.01)


def frame(seq: int, event_type: str = "project_created") -> str:
    return orjson.dumps({"event_type": event_type, "seq": seq, "data": {}}).decode()


def message(seq: int, event_type: str = "project_created") -> Message:
    text = frame(seq, event_type)
    return Message(text, orjson.loads(text))


@dataclasses.dataclass
class Feed:
    """A /ws server on 127.0.0.1: the nth connection gets ``scripts[n]`` and is then closed.

    A script of ``None`` keeps the connection open until the client leaves. ``statuses``
    answers the first handshakes with those HTTP statuses instead of accepting them.
    """

    scripts: list[list[str | bytes] | None]
    statuses: list[int] = dataclasses.field(default_factory=list)
    #: The request path (with its query) of every handshake, accepted or not.
    paths: list[str] = dataclasses.field(default_factory=list)
    #: The Authorization header of every handshake ("" when none).
    authorizations: list[str] = dataclasses.field(default_factory=list)
    port: int = 0
    url: str = ""
    accepted: int = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        self.authorizations.append(request.headers.get("Authorization", ""))
        if len(self.paths) <= len(self.statuses):
            return connection.respond(self.statuses[len(self.paths) - 1], "not now\n")
        return None

    async def handler(self, connection: ServerConnection) -> None:
        script = self.scripts[self.accepted]
        self.accepted += 1
        if script is None:
            await connection.wait_closed()
            return
        for item in script:
            await connection.send(item)


@contextlib.asynccontextmanager
async def feeding(feed: Feed) -> AsyncIterator[Feed]:
    async with serve(feed.handler, "127.0.0.1", 0, process_request=feed.process_request) as server:
        feed.port = server.sockets[0].getsockname()[1]
        feed.url = f"ws://127.0.0.1:{feed.port}/ws"
        yield feed


class Locate:
    """A ``locate`` that gives its answers in turn (the last one again and again)."""

    def __init__(self, *answers: Endpoint | BaseException) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self) -> Endpoint:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def take(stream: AsyncIterator[Message | Connection], count: int) -> list[Any]:
    return [await anext(stream) for _ in range(count)]


# -- what is retried and what is not ----------------------------------------------------


def test_unavailable_server_is_retried_then_followed() -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame(1)], None])) as feed:
            endpoint = Endpoint(url=feed.url, latest_seq=0)
            locate = Locate(
                ServerUnavailableError(UNAVAILABLE), ServerUnavailableError(UNAVAILABLE), endpoint
            )
            async with contextlib.aclosing(follow(locate, since=0)) as stream:
                assert await take(stream, 6) == [
                    Connection("reconnecting", None, retry_in=0.01, error=UNAVAILABLE),
                    Connection("reconnecting", None, retry_in=0.02, error=UNAVAILABLE),
                    Connection("connected", feed.url),
                    message(1),
                    # A connection that worked resets the backoff.
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                ]
            assert feed.paths == ["/ws?since=0", "/ws?since=1"]
            assert locate.calls == 4

    run(scenario())


def test_backoff_doubles_up_to_its_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "BACKOFF_MAX", 0.04)

    async def scenario() -> None:
        locate = Locate(ServerUnavailableError(UNAVAILABLE))
        async with contextlib.aclosing(follow(locate, since=0)) as stream:
            waits = [item.retry_in for item in await take(stream, 5)]
        assert waits == [0.01, 0.02, 0.04, 0.04, 0.04]

    run(scenario())


def test_refused_connection_is_retried_and_resumed_on_the_next_server() -> None:
    async def scenario() -> None:
        locate = Locate()
        async with contextlib.aclosing(follow(locate, since=0)) as stream:
            async with feeding(Feed([[frame(1), frame(2)]])) as first:
                locate.answers = (Endpoint(url=first.url, latest_seq=2),)
                assert await take(stream, 4) == [
                    Connection("connected", first.url),
                    message(1),
                    message(2),
                    Connection("reconnecting", first.url, retry_in=0.01, error=CLOSED),
                ]
            # The first server is gone: its port refuses the next attempt.
            refused = await anext(stream)
            assert (refused.state, refused.url, refused.retry_in) == (
                "reconnecting",
                first.url,
                0.02,
            )
            assert refused.error is not None
            assert refused.error.endswith(f"Connect call failed ('127.0.0.1', {first.port})")
            async with feeding(Feed([[frame(3)], None])) as second:
                locate.answers = (Endpoint(url=second.url, latest_seq=3),)
                assert await take(stream, 2) == [
                    Connection("connected", second.url),
                    message(3),
                ]
                assert second.paths == ["/ws?since=2"]

    run(scenario())


def test_permanent_server_error_from_locate_is_raised_at_once() -> None:
    async def scenario() -> None:
        locate = Locate(ServerError("cannot start the server: port 8000 is in use"))
        async with contextlib.aclosing(follow(locate, since=0)) as stream:
            with pytest.raises(ServerError) as caught:
                await anext(stream)
        assert type(caught.value) is ServerError
        assert str(caught.value) == "cannot start the server: port 8000 is in use"
        assert locate.calls == 1

    run(scenario())


def test_bug_in_locate_propagates_at_once() -> None:
    async def scenario() -> None:
        locate = Locate(KeyError("latest_seq"))
        async with contextlib.aclosing(follow(locate, since=0)) as stream:
            with pytest.raises(KeyError):
                await anext(stream)
        assert locate.calls == 1

    run(scenario())


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        ("not json", "the server sent a frame that is not JSON"),
        ("[1, 2]", "the server sent a frame that is not a JSON object"),
        ('"text"', "the server sent a frame that is not a JSON object"),
        (b"\xff\xfe", "the server sent a frame that is not JSON"),
    ],
)
def test_garbage_frame_raises_server_error(garbage: str | bytes, error: str) -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame(1), garbage], None])) as feed:
            locate = Locate(Endpoint(url=feed.url, latest_seq=0))
            async with contextlib.aclosing(follow(locate, since=0)) as stream:
                assert await take(stream, 2) == [Connection("connected", feed.url), message(1)]
                with pytest.raises(ServerError) as caught:
                    await anext(stream)
            assert str(caught.value) == error
            assert feed.paths == ["/ws?since=0"]

    run(scenario())


@pytest.mark.parametrize("status", [401, 403])
def test_refused_handshake_is_raised(status: int) -> None:
    async def scenario() -> None:
        async with feeding(Feed([None], statuses=[status])) as feed:
            locate = Locate(Endpoint(url=feed.url, latest_seq=0))
            async with contextlib.aclosing(follow(locate, since=0)) as stream:
                with pytest.raises(ServerError) as caught:
                    await anext(stream)
            assert str(caught.value).startswith(f"the server at {feed.url} ")
            assert f"(HTTP {status})" in str(caught.value)
            assert "write token" in str(caught.value) or "PROJCTL_TOKEN" in str(caught.value)
            assert feed.paths == ["/ws?since=0"]
            assert locate.calls == 1

    run(scenario())


@pytest.mark.parametrize("status", [502, 503, 504])
def test_handshake_turned_away_for_now_is_retried(status: int) -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame(1)]], statuses=[status])) as feed:
            locate = Locate(Endpoint(url=feed.url, latest_seq=0))
            async with contextlib.aclosing(follow(locate, since=0)) as stream:
                assert await take(stream, 3) == [
                    Connection(
                        "reconnecting",
                        feed.url,
                        retry_in=0.01,
                        error=f"server rejected WebSocket connection: HTTP {status}",
                    ),
                    Connection("connected", feed.url),
                    message(1),
                ]
            assert feed.paths == ["/ws?since=0", "/ws?since=0"]

    run(scenario())


# -- resuming ----------------------------------------------------------------------------


def test_resume_after_last_seq_and_skip_repeats() -> None:
    async def scenario() -> None:
        scripts: list[list[str | bytes] | None] = [
            [frame(1), frame(2)],
            [frame(2), frame(1), frame(3, "project_updated")],
            None,
        ]
        async with feeding(Feed(scripts)) as feed:
            # The endpoint's latest_seq does not override a given since, nor the seq seen.
            locate = Locate(Endpoint(url=feed.url, latest_seq=99))
            async with contextlib.aclosing(follow(locate, since=0)) as stream:
                assert await take(stream, 8) == [
                    Connection("connected", feed.url),
                    message(1),
                    message(2),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                    message(3, "project_updated"),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                ]
            assert feed.paths == ["/ws?since=0", "/ws?since=2", "/ws?since=3"]

    run(scenario())


def test_since_none_starts_from_the_servers_latest_seq() -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame(7), frame(8)], None])) as feed:
            locate = Locate(Endpoint(url=feed.url, latest_seq=7))
            async with contextlib.aclosing(follow(locate, since=None)) as stream:
                assert await take(stream, 4) == [
                    Connection("connected", feed.url),
                    message(8),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                ]
            assert feed.paths == ["/ws?since=7", "/ws?since=8"]

    run(scenario())


def test_since_none_without_a_latest_seq_asks_for_new_events_only() -> None:
    async def scenario() -> None:
        async with feeding(Feed([[frame(4)], None])) as feed:
            locate = Locate(Endpoint(url=feed.url))
            async with contextlib.aclosing(follow(locate, since=None)) as stream:
                assert await take(stream, 4) == [
                    Connection("connected", feed.url),
                    message(4),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                ]
            assert feed.paths == ["/ws", "/ws?since=4"]

    run(scenario())


def test_snapshot_first_then_since_after_reconnect() -> None:
    async def scenario() -> None:
        snapshot = orjson.dumps(
            {"event_type": "snapshot", "seq": 5, "data": {"projects": []}}
        ).decode()
        # The first connection drops before the snapshot: the next one asks again.
        scripts: list[list[str | bytes] | None] = [[], [snapshot, frame(6)], None]
        async with feeding(Feed(scripts)) as feed:
            locate = Locate(Endpoint(url=feed.url, latest_seq=5))
            async with contextlib.aclosing(follow(locate, since=None, snapshot=True)) as stream:
                assert await take(stream, 7) == [
                    Connection("connected", feed.url),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                    Message(snapshot, orjson.loads(snapshot)),
                    message(6),
                    Connection("reconnecting", feed.url, retry_in=0.01, error=CLOSED),
                    Connection("connected", feed.url),
                ]
            assert feed.paths == ["/ws?snapshot=1", "/ws?snapshot=1", "/ws?since=6"]

    run(scenario())


def test_resync_at_or_below_last_seq_is_still_yielded() -> None:
    async def scenario() -> None:
        resync = orjson.dumps({"event_type": "resync", "seq": 3, "data": {"projects": []}}).decode()
        async with feeding(Feed([[resync, frame(4)], None])) as feed:
            locate = Locate(Endpoint(url=feed.url))
            async with contextlib.aclosing(follow(locate, since=10)) as stream:
                assert await take(stream, 3) == [
                    Connection("connected", feed.url),
                    Message(resync, orjson.loads(resync)),
                    message(4),
                ]
            assert feed.paths == ["/ws?since=10"]

    run(scenario())


@pytest.mark.parametrize(
    ("since", "snapshot", "path"),
    [
        (0, False, "/ws?since=0"),
        (None, True, "/ws?snapshot=1"),
    ],
)
def test_token_is_sent_in_a_header_never_in_the_url(
    since: int | None, snapshot: bool, path: str
) -> None:
    async def scenario() -> None:
        async with feeding(Feed([None])) as feed:
            locate = Locate(Endpoint(url=feed.url, token="s3cr&t", latest_seq=0))
            async with contextlib.aclosing(
                follow(locate, since=since, snapshot=snapshot)
            ) as stream:
                assert await anext(stream) == Connection("connected", feed.url)
            assert feed.paths == [path]
            assert feed.authorizations == ["Bearer s3cr&t"]

    run(scenario())


def test_give_up_after_that_many_failed_attempts_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "BACKOFF_FIRST", 0.001)
    calls = []

    def locate() -> Endpoint:
        calls.append(1)
        raise ServerUnavailableError("no server is running for this database")

    async def scenario() -> list[object]:
        seen: list[object] = []

        async def drain() -> None:
            async for item in subscribe.follow(locate, since=0, give_up_after=3):
                seen.append(item)

        with pytest.raises(ServerError) as gave_up:
            await drain()
        assert str(gave_up.value) == (
            "gave up after 3 failed attempts: no server is running for this database"
        )
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert len(calls) == 3
    assert [item.state for item in seen if isinstance(item, Connection)] == ["reconnecting"] * 2
    assert len(seen) == 2
