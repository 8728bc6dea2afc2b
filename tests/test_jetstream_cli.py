"""Every command on a JetStream database, as a real ``projctl`` process against a real
three-node cluster: the same output, JSON and exit codes as on a local file, side by side."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ._nats import Cluster
from .conftest import nats_database, run_projctl

#: Timestamps and ids differ between two runs; everything else must not.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
_ID = re.compile(r"proj_\d{8}_\d{6}(?:_\d+)?")


def _environment(db: str) -> dict[str, str]:
    # The test's isolated environment: a local server watch starts is reaped with the test.
    return {**os.environ, "PROJCTL_DB": db, "PROJCTL_OWNER": "cli-owner"}


def _session(env: dict[str, str]) -> list[tuple[str, int, str]]:
    """The same commands on one database; each one's name, exit code and output with
    ids and timestamps replaced by placeholders."""
    ids: dict[str, str] = {}
    seen: list[tuple[str, int, str]] = []

    def run(name: str, *args: str) -> str:
        result = run_projctl(*args, env=env, timeout=60)
        # A local watch says which server it follows; the stream is followed directly.
        errors = [
            line
            for line in result.stderr.splitlines()
            if not line.startswith("projctl watch: connected to ")
        ]
        assert errors == [] or name.startswith("missing"), (name, result.stderr)
        out = result.stdout
        for found in _ID.findall(out):
            ids.setdefault(found, f"<id{len(ids) + 1}>")
        shown = _TIMESTAMP.sub("<time>", _ID.sub(lambda match: ids[match[0]], out))
        seen.append((name, result.returncode, shown))
        return out.strip()

    alpha = run("create", "create", "Alpha", "--type", "api", "--description", "first")
    beta = run("create json", "create", "Beta", "--json")
    beta = json.loads(beta)["project_id"]
    gamma = run("create", "create", "Gamma", "--status", "on_hold")
    run("update", "update", alpha, "--status", "in_progress", "--name", "Alpha 2")
    run("update by name", "update", "Gamma", "--owner", "gina", "--json")
    run("emit", "emit", alpha, "tests_run", "--data", '{"passed": 41, "failed": 0}')
    run("emit json", "emit", "Alpha 2", "tests_run", "--json")
    run("list", "list")
    run("list json", "list", "--json")
    run("list filtered", "list", "--status", "on_hold", "--json")
    run("show", "show", alpha)
    run("show json", "show", alpha, gamma, "--json")
    run("missing show", "show", "proj_20000101_000000")
    run("missing delete", "delete", beta, "proj_20000101_000000")
    run("delete several", "delete", beta, gamma, "--json")
    run("list after", "list", "--json")
    run("watch", "watch", "--since", "0", "--count", "8", "--json", "--timeout", "30")
    run("watch filtered", "watch", "--since", "0", "--count", "2", "--json", "-e", "tests_run")
    info = run_projctl("info", "--json", env=env, timeout=60)
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    seen.append(("info", info.returncode, json.dumps(sorted(report))))
    seen.append(("info numbers", 0, json.dumps([report["projects"], report["latest_seq"]])))
    return seen


@pytest.mark.slow
def test_every_command_gives_the_same_output_on_jetstream_as_on_a_file(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    local = _session(_environment(str(tmp_path / "projects.json")))
    remote = _session(_environment(nats_database(nats_cluster)))
    assert [name for name, _code, _out in remote] == [name for name, _code, _out in local]
    for (name, code, out), (_name, local_code, local_out) in zip(remote, local, strict=True):
        assert (name, code) == (name, local_code), out
        assert out == local_out, name


def test_info_names_the_stream_and_never_the_credentials(
    nats_cluster: Cluster, tmp_path: Path
) -> None:
    location = nats_database(nats_cluster)
    with_user = location.replace("nats://", "nats://projctl-user:never-shown@", 1)
    # The cluster has no accounts: the credentials are sent and ignored.
    env = _environment(with_user)
    assert run_projctl("create", "Shown", env=env).returncode == 0
    result = run_projctl("info", env=env)
    assert result.returncode == 0, result.stderr
    assert "never-shown" not in result.stdout + result.stderr
    assert location in result.stdout
    assert "NATS JetStream" in result.stdout
    assert re.search(r"^projects\s+1$", result.stdout, re.MULTILINE), result.stdout
