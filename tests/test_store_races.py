"""Another program touching the database file: nothing stored is ever lost or reissued.

The exact sequences of the hardening review: a writer racing a rewrite in place (the
file truncated, as ``cp backup.json db.json`` does first), a restore of an older copy
by rename, malformed-but-valid JSON, and a clock that steps back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import Result

from projctl import events
from projctl import store as store_module
from projctl.errors import (
    CorruptDatabaseError,
    DatabaseChangedError,
    EmptyDatabaseError,
    StoreError,
)
from projctl.store import ProjectStore

from .conftest import OwnedStore

Run = Callable[..., subprocess.CompletedProcess[str]]


def _fill(store: ProjectStore, count: int) -> None:
    for number in range(count):
        store.create(f"p{number}")


def _meta(path: Path) -> dict[str, object]:
    meta: dict[str, object] = orjson.loads(path.read_bytes())["meta"]["1"]
    return meta


def test_a_create_racing_a_rewrite_in_place_loses_nothing(
    projctl: Run, store: ProjectStore, db_path: Path
) -> None:
    _fill(store, 30)
    original = db_path.read_bytes()
    with db_path.open("r+b") as rewriting:
        rewriting.truncate()  # what `cp backup.json db.json` does first
        racer = projctl("create", "racer")
        rewriting.write(original)
    assert racer.returncode == 4
    assert racer.stderr == (
        f"Error: database {db_path} is empty, but a database was there (its lock file "
        "exists): another program may be rewriting it; it was left untouched\n"
    )
    assert len(store.list_projects()) == 30
    assert [event["seq"] for event in store.journal()] == list(range(1, 31))
    assert store.create("after").event == store.journal()[-1]
    assert store.latest_seq() == 31


def test_only_a_missing_file_is_a_new_database(store: ProjectStore, db_path: Path) -> None:
    store.create("Alpha")
    db_path.write_bytes(b"")
    for attempt in (store.list_projects, store.read_state, lambda: store.create("Beta")):
        with pytest.raises(EmptyDatabaseError, match="is empty, but a database was there"):
            attempt()
    assert db_path.read_bytes() == b""
    db_path.unlink()  # deleted on purpose: a new database (with a new id)
    assert store.create("Gamma").event == {**store.journal()[0], "seq": 1}


def test_the_record_in_the_lock_file_alone_marks_a_database_that_was_there(
    store: ProjectStore, db_path: Path
) -> None:
    store.create("Alpha")
    lock = store.lock_path
    assert orjson.loads(lock.read_bytes())["last_seq"] == 1
    db_path.write_bytes(b"")
    with pytest.raises(EmptyDatabaseError):
        store.create("Beta")


def test_a_file_changed_during_a_change_is_not_replaced(
    store: ProjectStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create("Alpha")
    written_by_another_program = db_path.read_bytes().replace(b"Alpha", b"Omega")
    build = events.project_created

    def rewrite_in_place_meanwhile(*args: object, **kwargs: object) -> events.Event:
        with db_path.open("r+b") as file:  # same inode: a rename check alone misses it
            file.write(written_by_another_program)
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(events, "project_created", rewrite_in_place_meanwhile)
    with pytest.raises(DatabaseChangedError, match="changed by another program"):
        store.create("Beta")
    assert db_path.read_bytes() == written_by_another_program


def test_copying_a_backup_over_the_database_while_two_writers_create_never_cuts_it(
    tmp_path: Path, db_path: Path
) -> None:
    OwnedStore(db_path).create("seed")
    data = orjson.loads(db_path.read_bytes())
    template = next(iter(data["projects"].values()))
    for number in range(2000):
        project_id = f"proj_20200101_000000_{number + 2}"
        data["projects"][project_id] = {**template, "project_id": project_id, "name": f"b{number}"}
    backup = tmp_path / "backup.json"
    backup.write_bytes(orjson.dumps(data))
    shutil.copyfile(backup, db_path)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        writer = OwnedStore(db_path, lock_timeout=5)
        while not stop.is_set():
            try:
                writer.create("racer")
            except StoreError:
                pass  # refused while the copy runs: expected, and nothing is written
            except BaseException as error:
                failures.append(error)
                return

    writers = [threading.Thread(target=write) for _ in range(2)]
    for thread in writers:
        thread.start()
    smallest = 2001
    try:
        deadline = time.monotonic() + 3
        copies = 0
        while time.monotonic() < deadline:
            shutil.copyfile(backup, db_path)  # open(O_TRUNC), then write: not atomic
            copies += 1
            # A read caught mid-copy by the next round's truncation is refused, not a cut.
            with contextlib.suppress(StoreError):
                smallest = min(smallest, len(ProjectStore(db_path).read_state().project_records))
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=20)
    assert not failures
    assert copies > 10
    assert smallest >= 2001
    assert len(ProjectStore(db_path).read_state().project_records) >= 2001


def test_a_restored_older_copy_never_makes_seqs_or_ids_repeat(
    store: ProjectStore, db_path: Path, tmp_path: Path
) -> None:
    _fill(store, 5)
    older = tmp_path / "older.json"
    shutil.copyfile(db_path, older)
    _fill(store, 5)
    issued = {event["data"]["project_id"] for event in store.journal()}
    restoring = db_path.with_name("restoring.json")
    shutil.copyfile(older, restoring)
    os.replace(restoring, db_path)  # the proper way: atomic
    assert store.latest_seq() == 5
    changes = [store.create(f"after{number}") for number in range(6)]
    assert [change.event["seq"] for change in changes if change.event] == list(range(11, 17))
    assert changes[0].restore == (5, 10)
    assert all(change.restore is None for change in changes[1:])
    assert not issued & {change.project.project_id for change in changes}
    state = store.read_state()
    assert [event["seq"] for event in state.journal] == [1, 2, 3, 4, 5, *range(11, 17)]
    assert state.restores == [(5, 10)]


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda data: data["meta"]["1"].update(last_seq=True), "last_seq is True, not a seq"),
        (lambda data: data["meta"]["1"].update(last_seq=-5), "last_seq is -5, not a seq"),
        (lambda data: data["meta"]["1"].update(last_issued=5), "last_issued is 5"),
        (lambda data: data["meta"]["1"].update(journal_limit=0), "journal_limit is 0"),
        (lambda data: data["meta"]["1"].update(restores=[[1]]), "restores is not"),
        (lambda data: data["journal"].update(abc={"seq": 1}), "journal entry 'abc'"),
        (lambda data: data["journal"].update({"1": "x"}), "journal entry '1'"),
        (lambda data: data["projects"].update(p="a string"), "project 'p' is not a record"),
    ],
)
def test_malformed_but_valid_json_is_a_database_error(
    cli: Callable[..., Result],
    store: ProjectStore,
    db_path: Path,
    spoil: Callable[[dict[str, dict[str, object]]], None],
    problem: str,
) -> None:
    store.create("Alpha")
    data = orjson.loads(db_path.read_bytes())
    spoil(data)
    spoiled = orjson.dumps(data)
    db_path.write_bytes(spoiled)
    for args in (("list",), ("create", "Beta"), ("show", "Alpha"), ("info",)):
        done = cli(*args)
        assert done.exit_code == 4, (args, done.stderr)
        assert problem in done.stderr
        assert done.stderr.startswith("Error: ")
        assert done.stderr.count("\n") == 1
    assert db_path.read_bytes() == spoiled


def test_a_bug_inside_a_change_is_not_reported_as_a_corrupt_database(
    store: ProjectStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create("Alpha")
    before = db_path.read_bytes()

    def buggy(*args: object, **kwargs: object) -> events.Event:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(events, "project_created", buggy)
    with pytest.raises(KeyError, match="a bug of ours"):
        store.create("Beta")
    assert db_path.read_bytes() == before


def test_a_malformed_record_found_by_a_change_is_a_database_error(
    store: ProjectStore, db_path: Path
) -> None:
    project = store.create("Alpha").project
    data = orjson.loads(db_path.read_bytes())
    del data["projects"][project.project_id]["status"]
    db_path.write_bytes(orjson.dumps(data))
    with pytest.raises(CorruptDatabaseError, match="malformed record"):
        store.update(project.project_id, {"status": "archived"})


def test_ids_never_go_back_when_the_clock_does(
    store: ProjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.create("Alpha").project.project_id
    store.delete(first)
    real_now = store_module.utc_now
    monkeypatch.setattr(store_module, "utc_now", lambda: real_now() - timedelta(seconds=5))
    second = store.create("Beta").project.project_id
    assert second != first
    assert second > first


def test_the_lock_file_has_the_databases_mode(store: ProjectStore, db_path: Path) -> None:
    store.create("Alpha")
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600
    store.lock_path.chmod(0o640)  # as an older projctl made it: a group member could block us
    store.create("Beta")
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600
