"""``projctl migrate``: a database file's projects copied into an empty stream, idempotently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ._nats import Cluster
from .conftest import nats_database, run_projctl

# Whole processes against a three-node cluster (~6 s of the suite): in the slow run, which CI
# runs every time too; the README's command stays fast.
pytestmark = pytest.mark.slow


def _listed(env: dict[str, str]) -> list[dict[str, object]]:
    done = run_projctl("list", "--json", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def test_migrate_copies_the_projects_once_and_refuses_a_stream_of_its_own(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "projects.json"
    local = {**os.environ, "PROJCTL_DB": str(path)}
    for name in ("alpha", "beta", "gamma"):
        assert run_projctl("create", name, "--type", "api", env=local).returncode == 0
    assert run_projctl("update", "beta", "--status", "in_progress", env=local).returncode == 0
    assert run_projctl("delete", "gamma", env=local).returncode == 0
    db = nats_database(nats_cluster)
    stream = {**os.environ, "PROJCTL_DB": db}

    first = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert first.returncode == 0, first.stderr
    shown = db.split("@")[-1]
    assert first.stdout == f"copied 2 project(s) from {path} into {shown}\n"
    assert _listed(stream) == _listed(local)  # ids, fields and timestamps kept

    again = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("(2 were there already)\n")
    info = json.loads(run_projctl("info", "--json", env=stream, timeout=60).stdout)
    assert info["latest_seq"] == 2  # nothing twice

    assert run_projctl("create", "delta", env=stream, timeout=60).returncode == 0
    refused = run_projctl("migrate", "--from", str(path), "--to", db, env=local, timeout=60)
    assert refused.returncode == 4
    assert "migrate into an empty stream" in refused.stderr
    assert [p["name"] for p in _listed(stream)] == ["alpha", "beta", "delta"]


def test_migrate_needs_a_file_and_a_stream(nats_cluster: Cluster, tmp_path: Path) -> None:
    db = nats_database(nats_cluster)
    missing = run_projctl(
        "migrate", "--from", str(tmp_path / "nothing.json"), "--to", db, env=dict(os.environ)
    )
    assert missing.returncode == 3
    assert "no database at" in missing.stderr
    wrong = run_projctl(
        "migrate",
        "--from",
        str(tmp_path / "a.json"),
        "--to",
        str(tmp_path / "b.json"),
        env=dict(os.environ),
    )
    assert wrong.returncode == 2
    assert "give a nats:// or tls:// database location" in wrong.stderr
