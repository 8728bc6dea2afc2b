from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from projctl import _storefile
from projctl.config import default_db_path
from projctl.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    LockTimeoutError,
    ProjectNotFoundError,
    StoreError,
)
from projctl.events import Event
from projctl.model import Project
from projctl.store import Change, ProjectStore

from .conftest import OwnedStore


@pytest.fixture(params=["missing-folder", "empty-file"])
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> ProjectStore:
    """A store on each kind of new database the code accepts: no file at all, or a 0-byte file."""
    if request.param == "missing-folder":
        return OwnedStore(tmp_path / "a" / "b" / "projects.json")
    path = tmp_path / "projects.json"
    path.touch()
    return OwnedStore(path)


def _split(change: Change) -> tuple[Project, Event]:
    """The project and event of a change that journaled one."""
    assert change.event is not None
    return change.project, change.event


def test_create_stores_project_and_journals_event(fresh_store: ProjectStore) -> None:
    project, event = _split(fresh_store.create("Alpha", description="first"))
    assert fresh_store.get(project.project_id) == project
    assert project.type == "api"
    assert project.status == "created"
    assert project.owner_id == "tester"
    assert project.created_at == project.updated_at == event["timestamp"]
    assert event["seq"] == 1
    assert event["data"] == project.to_dict()
    assert fresh_store.journal() == [event]
    assert fresh_store.latest_seq() == 1


def test_file_is_plain_tinydb_json(store: ProjectStore) -> None:
    from tinydb import TinyDB
    from tinydb.table import Table

    class ProjectsById(Table):
        document_id_class = str  # type: ignore[assignment]

    project = store.create("Alpha").project
    with TinyDB(store.path) as db:
        projects = ProjectsById(db.storage, "projects")
        assert projects.all() == [project.to_dict()]
        assert projects.all()[0].doc_id == project.project_id
        assert db.table("journal").all()[0]["event_type"] == "project_created"


def test_update_reports_only_really_changed_fields_in_order(store: ProjectStore) -> None:
    project = store.create("Alpha", status="created").project
    change = store.update(
        project.project_id,
        {"description": "new", "status": "in_progress", "name": "Alpha", "owner_id": "bob"},
    )
    after, event = change.project, change.event
    assert change.updated_fields == ("status", "owner_id", "description")
    assert event is not None
    assert event["event_type"] == "project_updated"
    assert event["seq"] == 2
    assert event["data"]["updated_fields"] == ["status", "owner_id", "description"]
    assert event["data"]["status"] == "in_progress"
    assert after.updated_at == event["timestamp"] != project.updated_at
    assert after.created_at == project.created_at
    assert store.get(project.project_id) == after


def test_update_that_changes_nothing_writes_nothing(store: ProjectStore) -> None:
    project = store.create("Alpha").project
    before = store.path.read_bytes()
    change = store.update(project.project_id, {"name": "  Alpha "})
    assert change == Change(project, None)
    assert store.path.read_bytes() == before
    assert store.latest_seq() == 1


def test_update_without_changes_is_invalid(store: ProjectStore) -> None:
    project = store.create("Alpha").project
    with pytest.raises(InvalidInputError, match="nothing to update"):
        store.update(project.project_id, {})


def test_delete_journals_id_and_name(store: ProjectStore) -> None:
    project = store.create("Alpha").project
    removed, event = _split(store.delete(project.project_id))
    assert removed == project
    assert event["data"] == {"project_id": project.project_id, "name": "Alpha"}
    assert event["seq"] == 2
    with pytest.raises(ProjectNotFoundError):
        store.get(project.project_id)


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
def test_unknown_id(store: ProjectStore, operation: str) -> None:
    store.create("Alpha")
    before = store.path.read_bytes()
    attempts = {
        "get": lambda: store.get("proj_nope"),
        "update": lambda: store.update("proj_nope", {"name": "x"}),
        "delete": lambda: store.delete("proj_nope"),
    }
    with pytest.raises(ProjectNotFoundError, match="proj_nope"):
        attempts[operation]()
    assert store.path.read_bytes() == before


def test_invalid_input_writes_nothing(store: ProjectStore) -> None:
    with pytest.raises(InvalidInputError):
        store.create("")
    assert not store.path.exists()
    project = store.create("Alpha").project
    before = store.path.read_bytes()
    with pytest.raises(InvalidInputError):
        store.update(project.project_id, {"status": "done"})
    assert store.path.read_bytes() == before


def test_same_second_ids_get_suffixes(store: ProjectStore) -> None:
    ids = [store.create(f"p{i}").project.project_id for i in range(30)]
    assert len(set(ids)) == 30
    bases = {project_id[:20] for project_id in ids}  # proj_YYYYMMDD_HHMMSS
    for base in bases:
        group = [i for i in ids if i[:20] == base]
        expected = [base] + [f"{base}_{n}" for n in range(2, len(group) + 1)]
        assert group == expected


def test_seq_keeps_counting_after_compaction(tmp_path: Path) -> None:
    store = OwnedStore(tmp_path / "db.json", journal_limit=5)
    project = store.create("Alpha").project
    for number in range(10):
        store.update(project.project_id, {"description": str(number)})
    journal = store.journal()
    assert [event["seq"] for event in journal] == [7, 8, 9, 10, 11]
    assert store.latest_seq() == 11
    store.delete(project.project_id)
    assert [event["seq"] for event in store.journal()] == [8, 9, 10, 11, 12]


def test_seq_is_never_reused_after_deletes(store: ProjectStore) -> None:
    seqs = []
    for _ in range(3):
        project, created = _split(store.create("x"))
        deleted = store.delete(project.project_id).event
        seqs += [created["seq"], deleted["seq"]]
    assert seqs == [1, 2, 3, 4, 5, 6]


def test_list_filters_combine(store: ProjectStore) -> None:
    a = store.create("a", type="web", status="in_progress", owner_id="ann").project
    b = store.create("b", type="web", status="created", owner_id="bob").project
    c = store.create("c", type="api", status="in_progress", owner_id="ann").project
    assert store.list_projects() == [a, b, c]
    assert store.list_projects(type="web") == [a, b]
    assert store.list_projects(status="in_progress", owner_id="ann") == [a, c]
    assert store.list_projects(status="in_progress", type="web", owner_id="ann") == [a]
    assert store.list_projects(owner_id="nobody") == []


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    store = OwnedStore(tmp_path / "nowhere" / "db.json")
    assert store.list_projects() == []
    assert store.latest_seq() == 0
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\x00\xff\xfe", "is not valid JSON"),
        (b"[1, 2, 3]", "is not a projctl database"),
        (b'{"_default": {"1": {"a": 1}}}', "is not a projctl database"),
        (b'{"meta": {"1": {"format": "projctl", "schema": 1}}}', "is not a projctl database"),
    ],
)
def test_corrupt_database_is_never_overwritten(
    store: ProjectStore, content: bytes, message: str
) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(content)
    for attempt in (
        lambda: store.create("x"),
        lambda: store.list_projects(),
        lambda: store.get("proj_x"),
    ):
        with pytest.raises(CorruptDatabaseError, match=message) as raised:
            attempt()
        assert str(store.path) in str(raised.value)
    assert store.path.read_bytes() == content


def test_the_read_in_steps_is_the_read(store: ProjectStore) -> None:
    assert _storefile.finish(store.read_state_in_steps()) == store.read_state()  # no file
    store.path.touch()
    assert _storefile.finish(store.read_state_in_steps()) == store.read_state()  # a new, empty file
    for number in range(150):
        store.create(f"project {number}")
    store.delete(store.resolve("project 7"))
    state = _storefile.finish(store.read_state_in_steps())
    assert state == store.read_state()
    assert len(state.project_records) == 149
    assert state.latest_seq == 151


def test_corrupt_database_is_refused_by_the_read_in_steps_too(store: ProjectStore) -> None:
    store.create("Alpha")
    good = orjson.loads(store.path.read_bytes())
    broken_record = {**good, "projects": {"p": {"name": "no other field"}}}
    broken_entry = {**good, "journal": {"1": {"seq": 1}}}
    for content, message in [
        (b"{not json", "is not valid JSON"),
        (b"\x00\xff\xfe", "is not valid JSON"),
        (b"[1, 2, 3]", "is not a projctl database"),
        (b'{"_default": {"1": {"a": 1}}}', "is not a projctl database"),
        (orjson.dumps(broken_record), "malformed project record"),
        (orjson.dumps(broken_entry), "malformed journal entry"),
    ]:
        store.path.write_bytes(content)
        with pytest.raises(CorruptDatabaseError, match=message):
            _storefile.finish(store.read_state_in_steps())
        with pytest.raises(CorruptDatabaseError, match=message):
            store.read_state()


_META = '"meta": {"1": {"format": "projctl", "schema": 1, "last_seq": 0, "database_id": "d"}}'

#: Documents both parses must read alike: the same tables, or both refuse them.
_DOCUMENTS = [
    "{" + _META + "}",
    '{"projects": {}, ' + _META + "}",
    ' \n{ "projects" : { "p1" : {"name": "caf\u00e9 \u2603 \U0001f600", "n": 12345678901234},'
    ' "p2": {"name": "a\\"}\\\\}", "x": [1, 2.5, -0, true, null, {"y": {}}]}} , ' + _META + "} \n",
    '{"projects": {"p1": {"name": "\\ud83d\\ude00", "big": 18446744073709551616}}, ' + _META + "}",
    '{"projects": {"p": {"a": 1}, "p": {"a": 2}}, "journal": {"1": {"seq": 1e2}}, ' + _META + "}",
    "[1, 2]",
    '"text"',
    "{" + _META + "} trailing",
    "{" + _META + ",}",
    '{"projects": {"p1": {"name": "lone \\ud800"}}, ' + _META + "}",
    '{"projects": {"p1": {"n": NaN}}, ' + _META + "}",
    '{"projects": {"p1": {"n": 1e400}}, ' + _META + "}",
    '{"projects": {"p1": {"n": 01}}, ' + _META + "}",
    '{"projects": {"p1": {"name": "tab\there"}}, ' + _META + "}",
    '{"projects": {"p1": {"name": "cut short',
    "\ufeff{" + _META + "}",
    '{"projects": {"p": ' + "[" * 5000 + "]" * 5000 + "}, " + _META + "}",
    "{" + _META + "}\x00",
    "",
]


@pytest.mark.parametrize("piece_bytes", [1, 3, 7, 64 * 1024])
@pytest.mark.parametrize("document", _DOCUMENTS)
def test_the_parse_in_steps_reads_what_the_whole_parse_reads(
    document: str, piece_bytes: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_storefile, "PIECE_BYTES", piece_bytes)
    raw = document.encode()
    path = tmp_path / "db.json"
    try:
        whole: object = _storefile.parse(raw, path)
    except CorruptDatabaseError as error:
        whole = str(error)
    try:
        pieces: object = _storefile.finish(_storefile.parse_in_steps(raw, path))
    except CorruptDatabaseError as error:
        pieces = str(error)
    assert pieces == whole
    assert type(pieces) is type(whole)


def test_the_parse_in_steps_shares_record_keys_as_orjson_does(tmp_path: Path) -> None:
    raw = orjson.dumps(
        {
            "projects": {f"p{n}": {"project_id": f"p{n}", "name": "x"} for n in range(3)},
            "meta": {"1": {"format": "projctl", "schema": 1, "last_seq": 0}},
        }
    )
    parsed = _storefile.finish(_storefile.parse_in_steps(raw, tmp_path / "db.json"))
    records = list(parsed["projects"].values())
    assert len({id(key) for record in records for key in record}) == 2


def test_malformed_project_record_is_a_store_error(store: ProjectStore) -> None:
    project = store.create("Alpha").project
    data = orjson.loads(store.path.read_bytes())
    del data["projects"][project.project_id]["name"]
    store.path.write_bytes(orjson.dumps(data))
    with pytest.raises(CorruptDatabaseError, match="malformed"):
        store.list_projects()
    with pytest.raises(CorruptDatabaseError, match="malformed"):
        store.update(project.project_id, {"status": "archived"})


def test_newer_schema_is_refused(store: ProjectStore) -> None:
    store.create("Alpha")
    data = orjson.loads(store.path.read_bytes())
    data["meta"]["1"]["schema"] = 99
    store.path.write_bytes(orjson.dumps(data))
    with pytest.raises(StoreError, match="newer than this projctl"):
        store.create("Beta")


def test_write_keeps_file_mode_and_leaves_no_temp_files(store: ProjectStore) -> None:
    store.create("Alpha")
    os.chmod(store.path, 0o640)
    store.create("Beta")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o640
    assert sorted(p.name for p in store.path.parent.iterdir()) == [
        "projects.json",
        "projects.json.lock",
    ]


def test_orphaned_temp_file_of_a_dead_writer_is_removed(store: ProjectStore) -> None:
    store.create("Alpha")
    orphan = store.path.parent / ".projects.json.tmp-0123456789abcdef"
    orphan.write_bytes(b'{"half": ')
    store.create("Beta")
    assert not orphan.exists()


def test_lock_timeout(store: ProjectStore) -> None:
    import fcntl

    store.create("Alpha")
    impatient = OwnedStore(store.path, lock_timeout=0.2)
    with open(store.lock_path, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(LockTimeoutError, match="locked by another process"):
            impatient.create("Beta")
    impatient.create("Beta")
    assert [p.name for p in store.list_projects()] == ["Alpha", "Beta"]


def test_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = OwnedStore(blocker / "db.json")
    with pytest.raises(StoreError, match="cannot create folder"):
        store.create("Alpha")


def test_journal_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        ProjectStore(tmp_path / "db.json", journal_limit=0)


def test_default_path_follows_xdg(tmp_path: Path) -> None:
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "projctl" / "projects.json"


def test_read_state_and_file_versions(store: ProjectStore) -> None:
    assert store.file_version() is None
    empty = store.read_state()
    assert (empty.latest_seq, empty.journal, empty.version) == (0, [], None)
    change = store.create("Alpha")
    project, event = _split(change)
    written = change.version
    assert written is not None
    assert store.file_version() == written
    state = store.read_state()
    assert state.version == written
    assert state.latest_seq == 1
    assert state.journal == [event]
    assert state.project_records == [project.to_dict()]
    assert len(state.database_id) == 16
    renamed = store.update(project.project_id, {"name": "Beta"})
    assert renamed.version != written  # every commit makes a new version
    assert store.file_version() == renamed.version
    assert store.read_state().database_id == state.database_id  # stable across commits


def test_tinydb_still_has_the_method_the_store_overrides() -> None:
    """``_ProjectsTable`` overrides TinyDB's private ``Table._update_table`` (its comment says
    why no public hook does the job): a TinyDB release that renames or reshapes it must fail
    here rather than silently bring the per-change table copies back."""
    import inspect

    from tinydb.table import Table

    from projctl._storetables import _ProjectsTable

    assert list(inspect.signature(Table._update_table).parameters) == ["self", "updater"]
    assert _ProjectsTable._update_table is not Table._update_table
