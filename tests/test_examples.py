"""The example CI script runs end to end against a real server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from projctl import runtime
from projctl.store import ProjectStore

from .conftest import PROJCTL

# Whole CI jobs (the example script, four at once, against a team server; ~20 s): in the
# slow run, which CI runs every time too.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ci.sh"


def run_ci_example(bash: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``examples/ci.sh`` run as a CI job would, with the installed projctl on PATH."""
    return subprocess.run(
        [bash, str(EXAMPLE)],
        cwd=cwd,
        env={**os.environ, "PATH": f"{Path(PROJCTL).parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.usefixtures("broadcasting")
def test_example_ci_script(bash: str, tmp_path: Path, store: ProjectStore) -> None:
    done = run_ci_example(bash, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completion event received" in done.stdout
    assert store.list_projects() == []  # cleaned up
    journal = store.journal()
    kinds = [(event["event_type"], event["data"].get("status")) for event in journal]
    assert kinds == [
        ("project_created", "created"),
        ("project_updated", "in_progress"),
        ("project_updated", "in_progress"),
        ("project_updated", "in_progress"),
        ("tests_run", None),
        ("project_updated", "in_progress"),
        ("project_updated", "completed"),
        ("project_deleted", None),
    ]
    # The second job waited for the test step's results and got exactly that event.
    tests_run = journal[4]
    assert tests_run["data"] == {
        "project_id": journal[0]["data"]["project_id"],
        "name": journal[0]["data"]["name"],
        "passed": 41,
        "failed": 0,
        "skipped": 2,
        "duration_s": 12.5,
    }
    received = orjson.dumps(tests_run).decode()[:80]
    assert f"tests_run event received: {received}" in done.stdout
    assert not (tmp_path / "completed.jsonl").exists()
    assert not (tmp_path / "tests_run.jsonl").exists()
    # It started the server, so it stopped it: none lingers.
    assert runtime.read_server_state(runtime.runtime_paths(store.path)) is None


@pytest.mark.usefixtures("broadcasting")
def test_four_ci_jobs_in_parallel_beside_a_served_database(
    tmp_path: Path, bash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel CI jobs on one host, each with its own database, while a fifth database is
    served by a long-running `projctl serve`: every job passes, no warning, and each job's
    watch saw its own database's completion event (ids repeat across databases: the
    event's timestamp and seq tell them apart)."""
    monkeypatch.delenv("PROJCTL_PORT")  # the real default: each database finds its own port
    path = f"{Path(PROJCTL).parent}{os.pathsep}{os.environ['PATH']}"
    served_db = tmp_path / "served" / "projects.json"
    served_db.parent.mkdir()  # an explicit path's folder must exist
    with subprocess.Popen(
        [PROJCTL, "serve", "--db", str(served_db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as served:
        try:
            jobs = []
            for number in range(4):
                workdir = tmp_path / f"job{number}"
                workdir.mkdir()
                jobs.append(
                    subprocess.Popen(
                        [bash, str(EXAMPLE)],
                        cwd=workdir,
                        env={
                            **os.environ,
                            "PATH": path,
                            "PROJCTL_DB": str(workdir / "projects.json"),
                            "CI_RUN_NUMBER": str(number),
                        },
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            results = [job.communicate(timeout=120) for job in jobs]
            assert served.poll() is None  # the served database's server never noticed
        finally:
            served.terminate()
            served.wait(timeout=10)
    for number, (job, (stdout, stderr)) in enumerate(zip(jobs, results, strict=True)):
        assert job.returncode == 0, stdout + stderr
        assert "Warning:" not in stderr
        store = ProjectStore(tmp_path / f"job{number}" / "projects.json")
        completed = store.journal()[-2]  # then the clean-up's project_deleted
        assert completed["data"]["status"] == "completed"
        received = orjson.dumps(completed).decode()[:80]
        assert f"completion event received: {received}" in stdout


@pytest.mark.usefixtures("broadcasting")
def test_example_ci_script_leaves_a_server_it_did_not_start(
    tmp_path: Path, store: ProjectStore, bash: str, projctl: Callable[..., Any]
) -> None:
    running = projctl("server", "start")
    assert running.returncode == 0
    done = run_ci_example(bash, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    state = runtime.read_server_state(runtime.runtime_paths(store.path))
    assert state is not None
    assert state.url == running.stdout.strip()


def test_example_ci_script_against_a_team_server(bash: str, tmp_path: Path, team: Any) -> None:
    """With PROJCTL_URL, PROJCTL_TOKEN and PROJCTL_CA_FILE set, the same script passes: the
    team server answers `server status`, so the job never tries to stop it."""
    env = team.client_env()
    env["PATH"] = f"{Path(PROJCTL).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        [bash, str(EXAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests_run event received" in done.stdout
    assert "completion event received" in done.stdout
    assert done.stderr == ""
    store = team.store()
    assert store.list_projects() == []  # cleaned up on the server
    assert [event["event_type"] for event in store.journal()][-1] == "project_deleted"
    assert team.server.process.poll() is None  # and the server still runs
    # Asked to stop it anyway, projctl refuses with its own exit code.
    stop = team.run("server", "stop")
    assert stop.returncode == 6
    assert stop.stderr.startswith("Error: PROJCTL_URL points at a team server")
    status = team.run("server", "status", "--json")
    assert status.returncode == 0
    assert orjson.loads(status.stdout)["team_server"] is True
