"""Stateless gateways: ``projctl serve --db nats://...`` over one stream, several at once.

Each shows the same events with the same seqs, whoever wrote them (a gateway's REST API or
the CLI straight to the stream); none keeps state on this machine, so a restarted one
serves ``?since=`` from the stream as before.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ._gateway import gateway, seqs, ws_events
from ._nats import Cluster
from .conftest import nats_database, run_projctl, wait_until

pytestmark = pytest.mark.slow


def test_two_gateways_show_the_same_events_with_the_same_seqs(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    db = nats_database(nats_cluster)
    env = {**os.environ, "PROJCTL_DB": db}
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    before = sorted(p.name for p in runtime.rglob("*"))
    with gateway(tmp_path, db, name="a") as a, gateway(tmp_path, db, name="b") as b:
        live: dict[str, list[tuple[int, str, str]]] = {}

        def listen(name: str, port: int) -> None:
            live[name] = seqs(ws_events(port, since=0, count=4, timeout=60))

        listeners = [
            threading.Thread(target=listen, args=(name, server.port))
            for name, server in (("a", a), ("b", b))
        ]
        for listener in listeners:
            listener.start()
        for server in (a, b):
            wait_until(
                lambda server=server: server.request("GET", "/healthz")[1]["subscribers"] == 1,
                timeout=20,
                what="the live subscriber",
            )
        status, created = a.request("POST", "/api/projects", {"name": "through-a"})
        assert status == 201, created
        cli = run_projctl("create", "through-cli", "--json", env=env, timeout=60)
        assert cli.returncode == 0, cli.stderr
        status, updated = b.request(
            "PATCH", f"/api/projects/{created['project_id']}", {"status": "in_progress"}
        )
        assert status == 200, updated
        from_a = seqs(ws_events(a.port, since=0, count=3))
        from_b = seqs(ws_events(b.port, since=0, count=3))
        assert from_a == from_b
        assert [seq for seq, _type, _id in from_a] == [1, 2, 3]  # each once, in order
        assert [kind for _seq, kind, _id in from_a] == [
            "project_created",
            "project_created",
            "project_updated",
        ]
        # /api reads come from the stream too.
        status, listed = b.request("GET", "/api/projects")
        assert status == 200
        names = sorted(
            p["name"] for p in (listed["projects"] if isinstance(listed, dict) else listed)
        )
        assert names == ["through-a", "through-cli"]
        status, health = a.request("GET", "/healthz")
        assert status == 200
        assert health["latest_seq"] == 3
        assert run_projctl("create", "last", env=env, timeout=60).returncode == 0
        for listener in listeners:
            listener.join(90)
        # Live: a write through a gateway is accepted at once and comes back from the
        # stream; it is sent once.
        assert live["a"] == live["b"]
        assert [seq for seq, _type, _id in live["a"]] == [1, 2, 3, 4]
        assert live["a"][:3] == from_a
    # Nothing on this machine: no lock, no state file, no socket (the token file is ours).
    assert sorted(p.name for p in runtime.rglob("*")) == before
    assert a.stop() == 0
    assert b.stop() == 0


def test_a_restarted_gateway_serves_since_from_the_stream(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    db = nats_database(nats_cluster)
    env = {**os.environ, "PROJCTL_DB": db}
    for name in ("one", "two", "three"):
        assert run_projctl("create", name, env=env, timeout=60).returncode == 0
    with gateway(tmp_path, db, name="first") as first:
        port = first.port
        seen = seqs(ws_events(port, since=0, count=3))
    with gateway(tmp_path, db, port=port, name="again") as again:
        assert run_projctl("create", "four", env=env, timeout=60).returncode == 0
        after = seqs(ws_events(again.port, since=2, count=2))
        assert after[0] == seen[2]
        assert after[1][:2] == (4, "project_created")
        listed = json.loads(run_projctl("list", "--json", env=env, timeout=60).stdout)
        assert after[1][2] == listed[-1]["project_id"]
