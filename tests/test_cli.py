"""The CLI in-process, asserting exact output (stdout for results, stderr for messages)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import Result

from projctl.cli import ExitCode, app
from projctl.store import ProjectStore
from projctl.watch import render_projects_table

Cli = Callable[..., Result]


def create(cli: Cli, *args: str) -> str:
    result = cli("create", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_create_prints_only_the_id(cli: Cli, store: ProjectStore) -> None:
    result = cli("create", "My Project", "--type", "api")
    assert result.exit_code == 0
    assert result.stderr == ""
    project_id = result.stdout.strip()
    assert result.stdout == project_id + "\n"
    assert store.get(project_id).name == "My Project"


def test_create_json_prints_the_stored_project(cli: Cli, store: ProjectStore) -> None:
    result = cli(
        "create",
        "Billing",
        "-t",
        "web",
        "-s",
        "on_hold",
        "--owner",
        "ann",
        "-d",
        "Line 1\nLine 2",
        "--json",
    )
    assert result.exit_code == 0
    printed = orjson.loads(result.stdout)
    assert printed == store.get(printed["project_id"]).to_dict()
    assert printed["type"] == "web"
    assert printed["status"] == "on_hold"
    assert printed["owner_id"] == "ann"
    assert printed["description"] == "Line 1\nLine 2"
    assert result.stdout.count("\n") == 1


def test_create_uses_projctl_owner(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "X")
    assert store.get(project_id).owner_id == "tester"


def test_db_option_beats_environment(cli: Cli, tmp_path: Path, db_path: Path) -> None:
    other = tmp_path / "other.json"
    project_id = create(cli, "X", "--db", str(other))
    assert ProjectStore(other).get(project_id).name == "X"
    assert not db_path.exists()


def test_update_reports_changed_fields(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "X")
    result = cli("update", project_id, "--status", "in_progress", "--name", "X", "-d", "new")
    assert result.exit_code == 0
    assert result.stdout == f"{project_id}: updated status, description\n"
    event = store.journal()[-1]
    assert event["data"]["updated_fields"] == ["status", "description"]


def test_update_unchanged(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "X")
    result = cli("update", project_id, "--name", "X")
    assert result.exit_code == 0
    assert result.stdout == f"{project_id}: unchanged\n"
    assert store.latest_seq() == 1


def test_update_json(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "X")
    result = cli("update", project_id, "--owner", "zoe", "--json")
    assert orjson.loads(result.stdout) == {
        "project": store.get(project_id).to_dict(),
        "updated_fields": ["owner_id"],
    }
    unchanged = cli("update", project_id, "--owner", "zoe", "--json")
    assert orjson.loads(unchanged.stdout)["updated_fields"] == []


def test_update_accepts_option_like_values(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "X")
    assert cli("update", project_id, "--name=-x").exit_code == 0
    assert store.get(project_id).name == "-x"


def test_update_without_fields_is_a_usage_error(cli: Cli) -> None:
    project_id = create(cli, "X")
    result = cli("update", project_id)
    assert result.exit_code == ExitCode.INVALID_INPUT == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: nothing to update: give at least one of --name, --type, --status, --owner, "
        "--description\n"
    )


def test_delete(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "Doomed")
    result = cli("delete", project_id, "--json")
    assert result.exit_code == 0
    assert orjson.loads(result.stdout) == {
        "project_id": project_id,
        "name": "Doomed",
        "deleted": True,
    }
    assert store.list_projects() == []
    project_id = create(cli, "Doomed too")
    assert cli("delete", project_id).stdout == f"{project_id}: deleted\n"


def test_delete_missing(cli: Cli) -> None:
    result = cli("delete", "proj_nope")
    assert result.exit_code == ExitCode.NOT_FOUND == 3
    assert result.stderr == "Error: no project with id or name 'proj_nope'\n"
    tolerant = cli("delete", "proj_nope", "--missing-ok")
    assert tolerant.exit_code == 0
    assert tolerant.stdout == ""
    assert tolerant.stderr == "proj_nope: not found, nothing deleted\n"


@pytest.mark.parametrize("command", [("show", "proj_nope"), ("update", "proj_nope", "--name", "x")])
def test_unknown_id_exits_3(cli: Cli, command: tuple[str, ...]) -> None:
    create(cli, "X")
    result = cli(*command)
    assert result.exit_code == 3
    assert result.stderr == "Error: no project with id or name 'proj_nope'\n"


def test_list_piped_is_tab_separated(cli: Cli, store: ProjectStore) -> None:
    a = create(cli, "Alpha", "-s", "in_progress")
    b = create(cli, "Beta", "-t", "web")
    result = cli("list")
    projects = {p.project_id: p for p in store.list_projects()}
    assert result.stdout == (
        f"{a}\tAlpha\tapi\tin_progress\ttester\t{projects[a].updated_at}\n"
        f"{b}\tBeta\tweb\tcreated\ttester\t{projects[b].updated_at}\n"
    )
    assert cli("list", "--type", "web").stdout.startswith(b + "\t")
    assert cli("list", "--status", "completed").stdout == ""


def test_list_json(cli: Cli, store: ProjectStore) -> None:
    assert orjson.loads(cli("list", "--json").stdout) == []
    create(cli, "Alpha", "--owner", "ann")
    create(cli, "Beta", "--owner", "bob")
    result = cli("list", "--json", "--owner", "bob")
    assert orjson.loads(result.stdout) == [store.list_projects(owner_id="bob")[0].to_dict()]


def test_show(cli: Cli, store: ProjectStore) -> None:
    project_id = create(cli, "Alpha", "-d", "about")
    project = store.get(project_id)
    assert orjson.loads(cli("show", project_id, "--json").stdout) == project.to_dict()
    assert cli("show", project_id).stdout == (
        f"project_id   {project_id}\n"
        "name         Alpha\n"
        "type         api\n"
        "status       created\n"
        "owner_id     tester\n"
        "description  about\n"
        f"created_at   {project.created_at}\n"
        f"updated_at   {project.updated_at}\n"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("create", ""), "Error: name must not be empty\n"),
        (("create", "x" * 201), "Error: name is 201 characters long; the limit is 200\n"),
        (("create", "a\x07b"), "Error: name must not contain control characters\n"),
        (
            ("create", "x", "--type", "Web App"),
            "Error: type 'Web App' is not a lowercase slug: 1-32 of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit\n",
        ),
        (
            ("create", "x", "--status", "done"),
            "Error: Invalid value for '--status' / '-s': 'done' is not one of 'created', "
            "'in_progress', 'on_hold', 'completed', 'archived'. (see 'projctl create --help')\n",
        ),
        (("create", "x", "--owner", " "), "Error: owner must not be empty\n"),
        (
            ("create", "x", "-d", "d" * 10_001),
            "Error: description is 10001 characters long; the limit is 10000\n",
        ),
        (("create",), "Error: Missing argument 'NAME'. (see 'projctl create --help')\n"),
        (
            ("create", "x", "--colour", "red"),
            "Error: No such option: --colour (see 'projctl create --help')\n",
        ),
        (("frobnicate",), "Error: No such command 'frobnicate'. (see 'projctl --help')\n"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    cli: Cli, store: ProjectStore, args: tuple[str, ...], error: str
) -> None:
    existing = create(cli, "Keep me")
    before = store.path.read_bytes()
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == error
    assert store.path.read_bytes() == before
    assert store.get(existing).name == "Keep me"


def test_corrupt_database_exits_4_and_is_untouched(cli: Cli, db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.write_bytes(b"garbage{")
    for args in (("create", "x"), ("list",), ("show", "p"), ("update", "p", "-n", "x")):
        result = cli(*args)
        assert result.exit_code == ExitCode.STORE_ERROR == 4
        assert (
            result.stderr == f"Error: database {db_path} is not valid JSON; it was left untouched\n"
        )
    assert db_path.read_bytes() == b"garbage{"


def test_bad_journal_limit(cli: Cli) -> None:
    result = cli("create", "x", env={"PROJCTL_JOURNAL_LIMIT": "lots"})
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: PROJCTL_JOURNAL_LIMIT='lots' is not accepted: "
        "expected a whole number of at least 1\n"
    )


def test_journal_limit_from_environment(cli: Cli, store: ProjectStore) -> None:
    limit = {"PROJCTL_JOURNAL_LIMIT": "2"}
    project_id = cli("create", "x", env=limit).stdout.strip()
    for number in range(4):
        cli("update", project_id, "-d", str(number), env=limit)
    assert [event["seq"] for event in store.journal()] == [4, 5]
    assert orjson.loads(cli("info", "--json", env=limit).stdout)["journal"]["limit"] == 2


def test_a_writer_never_trims_the_journal_below_the_databases_limit(
    cli: Cli, store: ProjectStore
) -> None:
    for number in range(30):
        create(cli, f"p{number}")
    cli("create", "racer", env={"PROJCTL_JOURNAL_LIMIT": "1"})
    assert [event["seq"] for event in store.journal()] == list(range(1, 32))
    info = orjson.loads(cli("info", "--json", env={"PROJCTL_JOURNAL_LIMIT": "1"}).stdout)
    assert info["journal"] == {"events": 31, "limit": 1000}


def test_unexpected_failure_is_one_line_and_exit_1(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ProjectStore, "create", explode)
    result = cli("create", "x")
    assert result.exit_code == ExitCode.FAILURE == 1
    assert (
        result.stderr == "Error: unexpected RuntimeError: boom (set PROJCTL_DEBUG=1 for details)\n"
    )


def test_version(cli: Cli) -> None:
    from projctl import __version__

    assert cli("--version").stdout == f"projctl {__version__}\n"


def test_render_projects_table(cli: Cli, store: ProjectStore) -> None:
    import io

    from rich.console import Console

    create(cli, "Alpha", "-s", "in_progress")
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_projects_table([p.to_dict() for p in store.list_projects()]))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1 project" in screen
    assert "Alpha" in screen
    assert "in_progress" in screen
    for heading in ("ID", "Name", "Type", "Status", "Owner", "Updated (UTC)"):
        assert heading in screen


def test_app_is_the_module_app() -> None:
    assert app.info.name == "projctl"


def test_quiet_prints_nothing_but_errors(cli: Cli, store: ProjectStore) -> None:
    created = cli("create", "Silent", "--quiet")
    assert (created.exit_code, created.stdout, created.stderr) == (0, "", "")
    [project] = store.list_projects()
    for args in (
        ("update", project.project_id, "-q", "--status", "archived"),
        ("update", project.project_id, "-q", "--status", "archived"),  # unchanged
        ("delete", project.project_id, "-q"),
        ("delete", project.project_id, "-q", "--missing-ok"),
    ):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), args
    failed = cli("delete", project.project_id, "-q")
    assert failed.exit_code == 3
    assert failed.stderr.startswith("Error: ")
    assert [event["event_type"] for event in store.journal()] == [
        "project_created",
        "project_updated",
        "project_deleted",
    ]


def test_a_command_must_be_listed_to_register() -> None:
    from projctl.cli import _lazy

    def stray() -> None:
        """Not a command."""

    with pytest.raises(RuntimeError, match="'stray' is not listed"):
        _lazy.command("stray")(stray)
    with pytest.raises(RuntimeError, match=r"'create' is listed in projctl\.cli\.projects, not"):
        _lazy.command("create")(stray)


def test_every_listed_command_is_registered_by_its_module() -> None:
    import importlib

    from projctl.cli import _lazy

    for name, module in _lazy.COMMANDS.items():
        importlib.import_module(module)
        info = _lazy._registered[name]
        assert info.callback is not None
        assert info.callback.__module__ == module, name
    assert set(_lazy._registered) == set(_lazy.COMMANDS)


def test_help_lists_each_command_with_the_first_line_of_its_docstring() -> None:
    """``--help`` reads the summaries from ``SUMMARIES`` (importing no command module): they
    must say what each command's own help says."""
    import importlib

    from projctl.cli import _lazy

    assert list(_lazy.SUMMARIES) == list(_lazy.COMMANDS)
    for name, module in _lazy.COMMANDS.items():
        importlib.import_module(module)
        callback = _lazy._registered[name].callback
        assert callback is not None
        first_line = (callback.__doc__ or "").strip().split("\n", 1)[0]
        assert _lazy.SUMMARIES[name] == first_line, name


@pytest.mark.parametrize("args", [(), ("server",)])
def test_a_group_alone_prints_its_help(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == cli(*args, "--help").stdout
    assert "Commands:" in result.stdout


def test_a_mistyped_command_gets_the_closest_real_one(cli: Cli) -> None:
    result = cli("craete", "x")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: No such command 'craete'. Did you mean 'create'? (see 'projctl --help')\n"
    )
    result = cli("server", "stpo")
    assert result.stderr == (
        "Error: No such command 'stpo'. Did you mean 'stop'? (see 'projctl server --help')\n"
    )
    assert cli("zzz").stderr == "Error: No such command 'zzz'. (see 'projctl --help')\n"


# -- what gh, docker and kubectl users expect ------------------------------------------------


def test_db_and_quiet_may_come_before_the_command(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    quiet = cli("--db", str(other), "-q", "create", "Elsewhere")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    listed = cli(f"--db={other}", "list", "--json")
    assert [p["name"] for p in orjson.loads(listed.stdout)] == ["Elsewhere"]
    assert cli("--db", str(other), "server", "status").stdout.startswith(
        f"no server is running for {other}"
    )
    assert cli("list", "--json").stdout == "[]\n"  # the default database is untouched


def test_a_project_may_be_given_by_its_exact_name(cli: Cli, store: ProjectStore) -> None:
    alpha = create(cli, "Alpha")
    assert cli("update", "Alpha", "-s", "completed").stdout == f"{alpha}: updated status\n"
    assert orjson.loads(cli("show", "Alpha", "--json").stdout)["project_id"] == alpha
    # An exact id wins over a project whose name is that id.
    create(cli, alpha)
    assert orjson.loads(cli("show", alpha, "--json").stdout)["name"] == "Alpha"
    create(cli, "Twin")
    twin = create(cli, "Twin")
    ambiguous = cli("delete", "Twin")
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr.startswith("Error: 2 projects are named 'Twin': ")
    assert twin in ambiguous.stderr
    assert len(store.list_projects()) == 4  # nothing deleted
    missing = cli("show", "Nobody")
    assert (missing.exit_code, missing.stderr) == (
        3,
        "Error: no project with id or name 'Nobody'\n",
    )


def test_delete_several_is_all_or_nothing(cli: Cli, store: ProjectStore) -> None:
    first, second = create(cli, "one"), create(cli, "two")
    refused = cli("delete", first, "proj_nope", second)
    assert refused.exit_code == 3
    assert refused.stderr == "Error: no project with id or name 'proj_nope'\n"
    assert len(store.list_projects()) == 2
    done = cli("delete", first, "proj_nope", "two", "--missing-ok", "--json")
    assert done.exit_code == 0
    assert orjson.loads(done.stdout) == [
        {"project_id": first, "name": "one", "deleted": True},
        {"project_id": "proj_nope", "deleted": False},
        {"project_id": second, "name": "two", "deleted": True},
    ]
    assert store.list_projects() == []
    deletions = [e for e in store.journal() if e["event_type"] == "project_deleted"]
    assert [e["data"]["project_id"] for e in deletions] == [first, second]
    assert deletions[0]["timestamp"] == deletions[1]["timestamp"]  # one transaction


def test_delete_missing_ok_with_json_always_prints_one_value(cli: Cli) -> None:
    result = cli("delete", "proj_nope", "--missing-ok", "--json")
    assert result.exit_code == 0
    assert orjson.loads(result.stdout) == {"project_id": "proj_nope", "deleted": False}


def test_show_several(cli: Cli) -> None:
    first, second = create(cli, "one"), create(cli, "two")
    both = cli("show", first, second, "--json")
    assert [p["name"] for p in orjson.loads(both.stdout)] == ["one", "two"]
    text = cli("show", first, "proj_nope", second)
    assert text.exit_code == 3
    assert text.stdout.count("project_id") == 2
    assert text.stderr == "Error: no project with id or name 'proj_nope'\n"


def test_list_sort_reverse_and_limit(cli: Cli) -> None:
    ids = {name: create(cli, name, "-s", status) for name, status in (
        ("bravo", "on_hold"), ("alpha", "completed"), ("charlie", "created")
    )}  # fmt: skip
    cli("update", "bravo", "-d", "touched")

    def names(*args: str) -> list[str]:
        result = cli("list", "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [p["name"] for p in orjson.loads(result.stdout)]

    assert names() == ["bravo", "alpha", "charlie"]  # creation order
    assert names("--sort", "name") == ["alpha", "bravo", "charlie"]
    assert names("--sort", "name", "--reverse") == ["charlie", "bravo", "alpha"]
    assert names("--sort", "created") == ["charlie", "alpha", "bravo"]  # newest first
    assert names("--sort", "updated", "--limit", "1") == ["bravo"]
    assert names("--sort", "status") == ["alpha", "charlie", "bravo"]
    assert ids["alpha"] in cli("list", "--limit", "2").stdout
    refused = cli("list", "--limit", "0")
    assert refused.exit_code == 2
    assert "--limit='0' is not accepted" in refused.stderr


def test_info(cli: Cli, db_path: Path, tmp_path: Path) -> None:
    create(cli, "one")
    report = orjson.loads(cli("info", "--json").stdout)
    assert report["database"]["path"] == str(db_path)
    assert report["database"]["source"] == "PROJCTL_DB"
    assert report["database"]["exists"] is True
    assert (report["projects"], report["latest_seq"]) == (1, 1)
    assert report["journal"] == {"events": 1, "limit": 1000}
    assert report["server"]["running"] is False
    typo = tmp_path / "typo" / "dbb.json"
    text = cli("--db", str(typo), "info").stdout
    assert f"database  {typo} (from --db), does not exist yet\n" in text
    assert "projects  0\n" in text
    assert not typo.parent.exists()  # looking creates nothing


def test_help_reads_as_written_for_people(cli: Cli) -> None:
    from projctl.cli._lazy import COMMANDS

    for command in COMMANDS:
        text = cli(*command.split(), "--help").stdout
        assert not re.search(r"\{[A-Z_]+\}|<(str|int|float|created)", text), command
        assert "range" not in text, command
    bad = cli("list", "--limit", "x")
    assert bad.stderr == (
        "Error: --limit='x' is not accepted: expected a whole number of at least 1\n"
    )
