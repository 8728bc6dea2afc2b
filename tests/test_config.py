"""Every PROJCTL_* setting: the parsers, load_settings, and the CLI's one-line refusals."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from projctl.cli._lazy import COMMANDS
from projctl.config import (
    DEBUG,
    DURATION_RULE,
    VARIABLES,
    Settings,
    debug_enabled,
    load_settings,
    login_name,
    parse_count,
    parse_db_path,
    parse_flag,
    parse_host,
    parse_port,
    parse_seconds,
)
from projctl.errors import ConfigError, InvalidInputError
from projctl.runtime import runtime_paths
from projctl.store import ProjectStore

Run = Callable[..., subprocess.CompletedProcess[str]]
Cli = Callable[..., Result]

PORT_RULE = "expected a whole number from 0 to 65535"
SECONDS_RULE = f"expected {DURATION_RULE}"
FLAG_RULE = "expected 1, true, yes, on, or 0, false, no, off"
HOST_RULE = "expected a host name or IP address, like localhost or 127.0.0.1"
DB_RULE = "expected the path of a database file"


def refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, nothing on stdout, and exactly one ``Error:`` line (no traceback, no warning)."""
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"Error: {message}\n")


# -- the parsers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "port"), [("0", 0), ("80", 80), (" 80 ", 80), ("0080", 80), ("65535", 65535)]
)
def test_parse_port_accepts(raw: str, port: int) -> None:
    assert parse_port(raw, "--port") == port


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", f"--port='abc' is not accepted: {PORT_RULE}"),
        ("-1", f"--port='-1' is not accepted: {PORT_RULE}"),
        ("65536", f"--port='65536' is not accepted: {PORT_RULE}"),
        ("\uff18\uff10", f"--port='\uff18\uff10' is not accepted: {PORT_RULE}"),
        ("1e3", f"--port='1e3' is not accepted: {PORT_RULE}"),
        ("", f"--port='' is not accepted: {PORT_RULE}"),
        ("+80", f"--port='+80' is not accepted: {PORT_RULE}"),
        ("8 0", f"--port='8 0' is not accepted: {PORT_RULE}"),
    ],
)
def test_parse_port_refuses(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_port(raw, "--port")
    assert str(caught.value) == message


def test_config_error_is_invalid_input() -> None:
    # The CLI maps InvalidInputError to exit 2.
    assert issubclass(ConfigError, InvalidInputError)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        (" 2.5 ", 2.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h2m3s", 3723.0),
        ("1.5m", 90.0),
        ("500ms", 0.5),
        ("0s", 0.0),
        ("5M", 300.0),
    ],
)
def test_parse_seconds_accepts(raw: str, seconds: float) -> None:
    assert parse_seconds(raw, "--timeout") == seconds


@pytest.mark.parametrize(
    "raw",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "-1",
        "-0.5",
        "",
        "abc",
        "5 m",
        "5min",
        "-5m",
        "1d",
        "m",
        "1m30",
        "\uff15m",  # a full-width digit
        "٣٠",
    ],
)
def test_parse_seconds_refuses(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_seconds(raw, "--timeout")
    assert str(caught.value) == f"--timeout={raw!r} is not accepted: {SECONDS_RULE}"


@pytest.mark.parametrize(
    ("raw", "minimum", "count"), [("0", 0, 0), (" 5 ", 0, 5), ("3", 3, 3), ("0010", 1, 10)]
)
def test_parse_count_accepts(raw: str, minimum: int, count: int) -> None:
    assert parse_count(raw, "--count", minimum=minimum) == count


@pytest.mark.parametrize(
    ("raw", "minimum", "message"),
    [
        ("0", 1, "--count='0' is not accepted: expected a whole number of at least 1"),
        ("2", 3, "--count='2' is not accepted: expected a whole number of at least 3"),
        ("-1", 0, "--count='-1' is not accepted: expected a whole number of at least 0"),
        ("1.5", 0, "--count='1.5' is not accepted: expected a whole number of at least 0"),
        ("abc", 0, "--count='abc' is not accepted: expected a whole number of at least 0"),
        ("", 0, "--count='' is not accepted: expected a whole number of at least 0"),
        ("\uff11", 0, "--count='\uff11' is not accepted: expected a whole number of at least 0"),
        (
            "1" * 19,
            0,
            f"--count='{'1' * 19}' is not accepted: expected a whole number of at least 0",
        ),
    ],
)
def test_parse_count_refuses(raw: str, minimum: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_count(raw, "--count", minimum=minimum)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        ("1", True),
        ("true", True),
        ("yes", True),
        ("on", True),
        ("Yes", True),
        (" TRUE ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("Off", False),
        ("", False),
        ("  ", False),
    ],
)
def test_parse_flag_accepts(raw: str, flag: bool) -> None:
    assert parse_flag(raw, "PROJCTL_NO_BROADCAST") is flag


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_parse_flag_refuses(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_flag(raw, "PROJCTL_NO_BROADCAST")
    assert str(caught.value) == f"PROJCTL_NO_BROADCAST={raw!r} is not accepted: {FLAG_RULE}"


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("localhost", "localhost"),
        (" localhost ", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("db.example.com", "db.example.com"),
    ],
)
def test_parse_host_accepts(raw: str, host: str) -> None:
    assert parse_host(raw, "--host") == host


@pytest.mark.parametrize(
    "raw", ["", "   ", "a b", "x/y", "a?b", "a#b", "user@host", "a\tb", "\x07"]
)
def test_parse_host_refuses(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_host(raw, "--host")
    assert str(caught.value) == f"--host={raw!r} is not accepted: {HOST_RULE}"


def test_a_long_refused_value_is_shortened_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_host("a" * 254, "PROJCTL_HOST")
    assert str(caught.value) == f"PROJCTL_HOST='{'a' * 57}...' is not accepted: {HOST_RULE}"


def test_parse_db_path_expands_home(tmp_path: Path) -> None:
    assert parse_db_path("~/x.json", "--db") == tmp_path / "home" / "x.json"


def test_parse_db_path_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_db_path("data/x.json", "--db") == Path.cwd() / "data" / "x.json"
    assert parse_db_path("./x.json", "--db") == Path.cwd() / "x.json"


def test_parse_db_path_keeps_absolute_paths(tmp_path: Path) -> None:
    assert parse_db_path(str(tmp_path / "a" / "b.json"), "--db") == tmp_path / "a" / "b.json"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", f"PROJCTL_DB='' is not accepted: {DB_RULE}"),
        ("   ", f"PROJCTL_DB='   ' is not accepted: {DB_RULE}"),
        ("\n", f"PROJCTL_DB='\\n' is not accepted: {DB_RULE}"),
        ("a\0b", "PROJCTL_DB='a\\x00b' is not accepted: expected a path without NUL characters"),
    ],
)
def test_parse_db_path_refuses(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_db_path(raw, "PROJCTL_DB")
    assert str(caught.value) == message


# -- load_settings -----------------------------------------------------------------------


def default_settings(home: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "db_path": home / ".local" / "share" / "projctl" / "projects.json",
        "db_source": "default",
        "owner": None,
        "host": "localhost",
        "port": None,
        "no_broadcast": False,
        "idle_timeout": 900.0,
        "journal_limit": 1000,
        "lock_timeout": 10.0,
        "debug": False,
        "require_token": False,
        "max_connections": 4096,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def test_defaults_from_an_empty_environment(tmp_path: Path) -> None:
    # The autouse fixture sets PROJCTL_* in os.environ: an explicit mapping ignores them.
    assert load_settings(environ={}) == default_settings(tmp_path / "home")


def test_every_variable_is_read(tmp_path: Path) -> None:
    environ = {
        "PROJCTL_DB": "~/d.json",
        "PROJCTL_OWNER": "alice",
        "PROJCTL_HOST": " 0.0.0.0 ",
        "PROJCTL_PORT": " 8080 ",
        "PROJCTL_NO_BROADCAST": "Yes",
        "PROJCTL_IDLE_TIMEOUT": "2.5",
        "PROJCTL_JOURNAL_LIMIT": "5",
        "PROJCTL_DEBUG": "on",
        "PROJCTL_REQUIRE_TOKEN": "true",
        "PROJCTL_MAX_CONNECTIONS": "64",
    }
    assert load_settings(environ=environ) == default_settings(
        tmp_path / "home",
        db_path=tmp_path / "home" / "d.json",
        db_source="PROJCTL_DB",
        owner="alice",
        host="0.0.0.0",
        port=8080,
        no_broadcast=True,
        idle_timeout=2.5,
        journal_limit=5,
        debug=True,
        require_token=True,
        max_connections=64,
    )


def test_without_a_mapping_os_environ_is_read(tmp_path: Path) -> None:
    assert load_settings() == default_settings(
        tmp_path / "home",
        db_path=tmp_path / "data" / "projects.json",
        db_source="PROJCTL_DB",
        owner="tester",
        host="127.0.0.1",
        port=0,
        no_broadcast=True,
    )


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    environ = {variable.name: "" for variable in VARIABLES if variable.name != "PROJCTL_DB"}
    assert load_settings(environ=environ) == default_settings(tmp_path / "home")


def test_db_option_wins_over_variable_and_default(tmp_path: Path) -> None:
    environ = {"PROJCTL_DB": str(tmp_path / "env.json")}
    settings = load_settings(environ=environ, db=str(tmp_path / "option.json"))
    assert (settings.db_path, settings.db_source) == (tmp_path / "option.json", "--db")
    settings = load_settings(environ=environ)
    assert (settings.db_path, settings.db_source) == (tmp_path / "env.json", "PROJCTL_DB")


def test_db_option_wins_over_an_empty_variable(tmp_path: Path) -> None:
    settings = load_settings(environ={"PROJCTL_DB": ""}, db=str(tmp_path / "option.json"))
    assert (settings.db_path, settings.db_source) == (tmp_path / "option.json", "--db")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PROJCTL_DB", "", f"PROJCTL_DB='' is not accepted: {DB_RULE}"),
        ("PROJCTL_DB", "   ", f"PROJCTL_DB='   ' is not accepted: {DB_RULE}"),
        ("PROJCTL_HOST", "a b", f"PROJCTL_HOST='a b' is not accepted: {HOST_RULE}"),
        ("PROJCTL_PORT", "abc", f"PROJCTL_PORT='abc' is not accepted: {PORT_RULE}"),
        ("PROJCTL_PORT", "99999", f"PROJCTL_PORT='99999' is not accepted: {PORT_RULE}"),
        (
            "PROJCTL_NO_BROADCAST",
            "maybe",
            f"PROJCTL_NO_BROADCAST='maybe' is not accepted: {FLAG_RULE}",
        ),
        (
            "PROJCTL_IDLE_TIMEOUT",
            "nan",
            f"PROJCTL_IDLE_TIMEOUT='nan' is not accepted: {SECONDS_RULE}",
        ),
        (
            "PROJCTL_JOURNAL_LIMIT",
            "0",
            "PROJCTL_JOURNAL_LIMIT='0' is not accepted: expected a whole number of at least 1",
        ),
        ("PROJCTL_DEBUG", "maybe", f"PROJCTL_DEBUG='maybe' is not accepted: {FLAG_RULE}"),
    ],
)
def test_a_bad_variable_is_named_in_the_error(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: value})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "name", ["PROJCTL_OWNER", "PROJCTL_TOKEN", "PROJCTL_HOST", "PROJCTL_URL", "PROJCTL_PORT"]
)
def test_a_variable_that_is_not_utf8_is_named_in_the_error(name: str) -> None:
    # os.environ holds undecodable bytes as lone surrogates (surrogateescape).
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: "al\udcffice"})
    assert str(caught.value) == f"{name} is not valid UTF-8"


def test_a_database_path_that_is_not_utf8_is_a_path(tmp_path: Path) -> None:
    settings = load_settings(environ={"PROJCTL_DB": f"{tmp_path}/db-\udcff.json"})
    assert os.fsencode(settings.db_path) == os.fsencode(tmp_path) + b"/db-\xff.json"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": "abc"}, f"--port='abc' is not accepted: {PORT_RULE}"),
        ({"port": ""}, f"--port='' is not accepted: {PORT_RULE}"),
        ({"host": "x/y"}, f"--host='x/y' is not accepted: {HOST_RULE}"),
        ({"db": ""}, f"--db='' is not accepted: {DB_RULE}"),
    ],
)
def test_a_bad_option_is_named_in_the_error(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, **options)
    assert str(caught.value) == message


def test_options_win_over_variables() -> None:
    settings = load_settings(
        environ={"PROJCTL_PORT": "abc", "PROJCTL_HOST": "a b"}, port="81", host="::1"
    )
    assert (settings.port, settings.host) == (81, "::1")


@pytest.mark.parametrize(
    ("environ", "given", "expected"),
    [
        ({}, None, (None, 8000)),
        ({"PROJCTL_PORT": ""}, None, (None, 8000)),
        ({"PROJCTL_DB": "/tmp/other.json"}, None, (None, 0)),
        ({"PROJCTL_PORT": "0"}, None, (0, 8000)),
        ({"PROJCTL_PORT": "8000"}, None, (8000, 8000)),
        ({}, "8000", (8000, 8000)),
        ({"PROJCTL_PORT": "9"}, "0", (0, 8000)),
    ],
)
def test_port_asked_for_and_preferred(
    environ: dict[str, str], given: str | None, expected: tuple[int | None, int]
) -> None:
    """No port asked for: the default database prefers 8000, any other a free port."""
    settings = load_settings(environ=environ, port=given)
    assert (settings.port, settings.preferred_port) == expected


@pytest.mark.parametrize(
    ("variable", "override", "no_broadcast"),
    [
        ("1", None, True),
        ("0", None, False),
        ("1", False, False),
        ("0", True, True),
        ("", True, True),
    ],
)
def test_no_broadcast_override(variable: str, override: bool | None, no_broadcast: bool) -> None:
    settings = load_settings(environ={"PROJCTL_NO_BROADCAST": variable}, no_broadcast=override)
    assert settings.no_broadcast is no_broadcast


# -- the installed projctl: one Error: line, exit 2, nothing done ------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("watch", "--json", "--timeout", "5"),
            {"PROJCTL_PORT": "abc"},
            f"PROJCTL_PORT='abc' is not accepted: {PORT_RULE}",
        ),
        (("list",), {"PROJCTL_DB": ""}, f"PROJCTL_DB='' is not accepted: {DB_RULE}"),
        (("list", "--db", ""), {}, f"--db='' is not accepted: {DB_RULE}"),
        (
            ("watch", "--json", "--timeout", "nan"),
            {},
            f"--timeout='nan' is not accepted: {SECONDS_RULE}",
        ),
        (
            ("watch", "--json", "--timeout", "inf"),
            {},
            f"--timeout='inf' is not accepted: {SECONDS_RULE}",
        ),
        (
            ("watch", "--json", "--timeout", "-1"),
            {},
            f"--timeout='-1' is not accepted: {SECONDS_RULE}",
        ),
        (
            ("watch", "--json", "--count", "0", "--timeout", "5"),
            {},
            "--count='0' is not accepted: expected a whole number of at least 1",
        ),
        (
            ("watch", "--json", "--since", "-1", "--timeout", "5"),
            {},
            "--since='-1' is not accepted: expected a whole number of at least 0",
        ),
        (
            ("serve", "--idle-timeout", "nan"),
            {},
            f"--idle-timeout='nan' is not accepted: {SECONDS_RULE}",
        ),
        (("serve", "--port", "70000"), {}, f"--port='70000' is not accepted: {PORT_RULE}"),
    ],
)
def test_refused_setting_exits_2_with_one_line(
    projctl: Run, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    refused(projctl(*args, env=env, timeout=20), message)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("list", "--db", "   "), {}, f"--db='   ' is not accepted: {DB_RULE}"),
        (("list",), {"PROJCTL_HOST": "a  b"}, f"PROJCTL_HOST='a  b' is not accepted: {HOST_RULE}"),
    ],
)
def test_refused_value_is_quoted_exactly_on_stderr(
    projctl: Run, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    # The Error: line must show the value as given: three spaces are not one space.
    refused(projctl(*args, env=env), message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROJCTL_PORT": "abc"}, f"PROJCTL_PORT='abc' is not accepted: {PORT_RULE}"),
        (
            {"PROJCTL_IDLE_TIMEOUT": "nan"},
            f"PROJCTL_IDLE_TIMEOUT='nan' is not accepted: {SECONDS_RULE}",
        ),
        (
            {"PROJCTL_NO_BROADCAST": "maybe"},
            f"PROJCTL_NO_BROADCAST='maybe' is not accepted: {FLAG_RULE}",
        ),
        (
            {"PROJCTL_JOURNAL_LIMIT": "0"},
            "PROJCTL_JOURNAL_LIMIT='0' is not accepted: expected a whole number of at least 1",
        ),
    ],
)
def test_create_with_a_refused_variable_commits_nothing(
    projctl: Run, store: ProjectStore, db_path: Path, env: dict[str, str], message: str
) -> None:
    refused(projctl("create", "x", env=env), message)
    assert not db_path.exists()
    assert store.list_projects() == []


@pytest.mark.usefixtures("broadcasting")
def test_create_with_an_out_of_range_port_commits_nothing_and_starts_no_server(
    projctl: Run, store: ProjectStore, db_path: Path, tmp_path: Path
) -> None:
    refused(
        projctl("create", "y", env={"PROJCTL_PORT": "99999"}),
        f"PROJCTL_PORT='99999' is not accepted: {PORT_RULE}",
    )
    assert not db_path.exists()
    assert store.list_projects() == []
    assert not runtime_paths(db_path).state_file.exists()
    assert list(tmp_path.rglob("server.json")) == []


def test_db_option_with_a_tilde_is_under_home(
    projctl: Run, tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = projctl("create", "x", "--db", "~/x.json")
    assert (done.returncode, done.stderr) == (0, "")
    home_db = Path(os.environ["HOME"]) / "x.json"
    assert home_db == tmp_path / "home" / "x.json"
    assert [p.name for p in ProjectStore(home_db).list_projects()] == ["x"]
    assert [p.project_id for p in ProjectStore(home_db).list_projects()] == [done.stdout.strip()]
    assert not (tmp_path / "~").exists()
    assert not db_path.exists()


# -- --help names exactly the variables projctl reads --------------------------------------


def test_root_help_lists_exactly_the_variables(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    section = result.stdout.split("Environment:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in section.splitlines()] == [v.name for v in VARIABLES]
    assert set(re.findall(r"PROJCTL_[A-Z_]+", result.stdout)) == {
        v.name for v in VARIABLES if v.name.startswith("PROJCTL_")
    }


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_mentions_only_known_variables(cli: Cli, name: str) -> None:
    result = cli(*name.split(), "--help")
    assert result.exit_code == 0
    assert set(re.findall(r"PROJCTL_[A-Z_]+", result.stdout)) <= {v.name for v in VARIABLES}


# -- PROJCTL_TOKEN: checked when read, never shown ---------------------------------------------

SECRET = "wwwSecretTokenValue0123456789"


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (SECRET + "\r", "a carriage return at its end"),
        (SECRET + "\n", "a line feed at its end"),
        (SECRET[:5] + "\n" + SECRET, "a line feed at position 6"),
        (SECRET + " x", f"a space at position {len(SECRET) + 1}"),
        ("\t" + SECRET, "a tab at position 1"),
        (SECRET + "\x1b", "a control character at its end"),
        (SECRET + "é", "a non-ASCII character at its end"),
    ],
)
def test_a_token_that_no_header_can_carry_is_refused_without_showing_it(
    raw: str, what: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PROJCTL_TOKEN": raw})
    assert str(caught.value) == (
        "PROJCTL_TOKEN is not accepted: a token is visible ASCII characters only, and this one "
        f"holds {what} (the value is not shown)"
    )
    assert SECRET[:5] not in str(caught.value)


def test_a_visible_ascii_token_is_kept_as_given() -> None:
    token = "Ab0-._~+/=!#$%&'()*,:;<>?@[]^`{|}" + "x" * 16
    assert load_settings(environ={"PROJCTL_TOKEN": token}).token == token
    with pytest.raises(ConfigError, match="at most 4096 characters, this one has 4097"):
        load_settings(environ={"PROJCTL_TOKEN": "x" * 4097})


def test_a_token_with_a_trailing_carriage_return_exits_2_and_is_never_printed(
    projctl: Run,
) -> None:
    """A secrets file saved on Windows: one line, exit 2, the token nowhere in the output
    (no server is contacted: 127.0.0.1:9 would refuse anyway)."""
    done = projctl("list", env={"PROJCTL_URL": "ws://127.0.0.1:9", "PROJCTL_TOKEN": SECRET + "\r"})
    refused(
        done,
        "PROJCTL_TOKEN is not accepted: a token is visible ASCII characters only, and this one "
        "holds a carriage return at its end (the value is not shown)",
    )
    assert SECRET not in done.stderr


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("on", True), ("", False), ("0", False), ("maybe", False)]
)
def test_debug_is_read_through_config_and_a_bad_value_means_off(raw: str, expected: bool) -> None:
    assert debug_enabled({DEBUG.name: raw}) is expected
    assert debug_enabled({}) is False


def test_only_config_names_a_projctl_variable() -> None:
    """Every ``PROJCTL_*`` variable is named once, in config.py: the rest use its constant."""
    import ast

    package = Path(__file__).resolve().parent.parent / "projctl"
    # The database location is parsed, and its source named, by config alone too.
    known_source = {"PROJCTL_DB"}
    named: dict[str, int] = {}
    for module in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if re.fullmatch(r"PROJCTL_[A-Z_]+", node.value):
                where = str(module.relative_to(package))
                assert where == "config.py" or node.value in known_source, (where, node.value)
                if where == "config.py":
                    named[node.value] = named.get(node.value, 0) + 1
    twice = {name for name, count in named.items() if count > 1 and name not in known_source}
    assert not twice, f"named more than once in config.py: {sorted(twice)}"
    assert set(named) >= {v.name for v in VARIABLES if v.name.startswith("PROJCTL_")}


@pytest.mark.parametrize(
    ("args", "source"),
    [
        (["watch", "--timeout", "5 minutes"], "--timeout"),
        (["serve", "--idle-timeout", "1d"], "--idle-timeout"),
    ],
)
def test_bad_durations_get_one_line_and_exit_2(cli: Cli, args: list[str], source: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {source}={args[-1]!r} is not accepted: {SECONDS_RULE}\n"


def test_idle_timeout_setting_takes_units() -> None:
    assert load_settings({"PROJCTL_IDLE_TIMEOUT": "15m"}).idle_timeout == 900.0
    with pytest.raises(ConfigError, match="PROJCTL_IDLE_TIMEOUT='15 min'"):
        load_settings({"PROJCTL_IDLE_TIMEOUT": "15 min"})


def test_watch_timeout_takes_units(cli: Cli) -> None:
    result = cli("watch", "--json", "--timeout", "0.1s", "--count", "1")
    assert result.exit_code == 124
    assert result.stderr.endswith("Error: timed out after 0.1s: 0 of 1 event\n")


def test_the_dashboards_https_address_names_the_same_team_server() -> None:
    from projctl.config import parse_url

    assert parse_url("https://team.example:8443", "PROJCTL_URL") == "wss://team.example:8443"
    assert parse_url("https://team.example:8443/", "PROJCTL_URL") == "wss://team.example:8443"
    assert parse_url("http://127.0.0.1:8000", "PROJCTL_URL") == "ws://127.0.0.1:8000"
    with pytest.raises(ConfigError):
        parse_url("ftp://team.example", "PROJCTL_URL")


def test_the_login_name_comes_from_the_environment_then_the_password_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default owner, as ``getpass.getuser()`` finds it."""
    import pwd

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert login_name() == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USERNAME", "dana")
    assert login_name() == "dana"
    monkeypatch.setenv("USER", "")  # empty: passed over
    assert login_name() == "dana"
    monkeypatch.setenv("LOGNAME", "erin")
    assert login_name() == "erin"
