"""``projctl server url [--http]``: where the database's server is, for scripts and curl."""

from __future__ import annotations

from collections.abc import Callable
from subprocess import CompletedProcess
from urllib.request import urlopen

import orjson
import pytest

from ._remote import TeamServer

Run = Callable[..., CompletedProcess[str]]


@pytest.mark.usefixtures("broadcasting")
def test_server_url_prints_the_feed_and_the_http_address(projctl: Run) -> None:
    feed = projctl("server", "url")
    assert feed.returncode == 0, feed.stderr
    url = feed.stdout.strip()
    assert url.startswith("ws://127.0.0.1:")
    assert url.endswith("/ws")
    http = projctl("server", "url", "--http").stdout.strip()
    assert http == url.replace("ws://", "http://").removesuffix("/ws")
    with urlopen(f"{http}/api/projects", timeout=10) as answer:
        assert orjson.loads(answer.read())["projects"] == []
    status = orjson.loads(projctl("server", "status", "--json").stdout)
    assert (status["url"], status["http_url"]) == (url, http)


def test_server_url_of_a_team_server(team: TeamServer) -> None:
    done = team.run("server", "url", "--http")
    assert (done.returncode, done.stdout) == (0, team.url.replace("wss://", "https://") + "\n")
    assert team.run("server", "url").stdout == f"{team.url}/ws\n"
