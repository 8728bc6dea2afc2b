from __future__ import annotations

from datetime import datetime, timezone

import pytest

from projctl.errors import InvalidInputError
from projctl.model import (
    EDITABLE_FIELDS,
    STATUSES,
    Project,
    next_project_id,
    parse_project_id,
    validate_description,
    validate_fields,
    validate_name,
    validate_owner_id,
    validate_status,
    validate_type,
)

MOMENT = datetime(2023, 11, 19, 12, 0, 0, 5, tzinfo=timezone.utc)


def test_project_id_is_utc_second() -> None:
    assert next_project_id(MOMENT, is_taken=lambda _: False) == "proj_20231119_120000"


def test_project_id_suffixes_within_one_second() -> None:
    taken = {"proj_20231119_120000", "proj_20231119_120000_2"}
    assert next_project_id(MOMENT, is_taken=taken.__contains__) == "proj_20231119_120000_3"


def test_project_id_not_reissued_after_delete_in_same_second() -> None:
    # proj_..._2 was issued and then deleted: the next one must not reuse it.
    assert (
        next_project_id(MOMENT, is_taken=lambda _: False, last_issued="proj_20231119_120000_2")
        == "proj_20231119_120000_3"
    )
    assert (
        next_project_id(MOMENT, is_taken=lambda _: False, last_issued="proj_20231119_120000")
        == "proj_20231119_120000_2"
    )


def test_project_id_ignores_last_issued_of_another_second() -> None:
    assert (
        next_project_id(MOMENT, is_taken=lambda _: False, last_issued="proj_20231119_115959_7")
        == "proj_20231119_120000"
    )


def test_project_id_never_goes_back_when_the_clock_does() -> None:
    # The clock stepped back 5 s after proj_..._120005 was issued (and maybe deleted):
    # the next id stays in that second, so no id is ever handed out twice.
    assert (
        next_project_id(MOMENT, is_taken=lambda _: False, last_issued="proj_20231119_120005")
        == "proj_20231119_120005_2"
    )
    assert (
        next_project_id(MOMENT, is_taken=lambda _: False, last_issued="proj_20231119_120005_9")
        == "proj_20231119_120005_10"
    )


@pytest.mark.parametrize(
    ("project_id", "parsed"),
    [
        ("proj_20231119_120000", ("proj_20231119_120000", 1)),
        ("proj_20231119_120000_12", ("proj_20231119_120000", 12)),
        ("proj_20231119_120000_0", None),
        ("proj_2023111_120000", None),
        ("nope", None),
    ],
)
def test_parse_project_id(project_id: str, parsed: tuple[str, int] | None) -> None:
    assert parse_project_id(project_id) == parsed


@pytest.mark.parametrize(
    ("raw", "expected"), [("  Billing API ", "Billing API"), ("x", "x"), ("é" * 200, "é" * 200)]
)
def test_valid_names_are_trimmed(raw: str, expected: str) -> None:
    assert validate_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 201, "limit is 200"),
        ("bad\nname", "control characters"),
        ("bad\x1b[2Jname", "control characters"),
        ("tab\tname", "control characters"),
    ],
)
def test_invalid_names(raw: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_name(raw)


@pytest.mark.parametrize("value", ["api", "web-app", "a", "0x", "data_pipeline", "a" * 32])
def test_valid_types(value: str) -> None:
    assert validate_type(value) == value


@pytest.mark.parametrize("value", ["", "API", "-api", "_x", "a" * 33, "web app", "ü"])
def test_invalid_types(value: str) -> None:
    with pytest.raises(InvalidInputError, match="lowercase slug"):
        validate_type(value)


def test_statuses() -> None:
    assert STATUSES == ("created", "in_progress", "on_hold", "completed", "archived")
    for status in STATUSES:
        assert validate_status(status) == status
    with pytest.raises(InvalidInputError, match="not one of created, in_progress"):
        validate_status("done")


def test_owner_rules() -> None:
    assert validate_owner_id(" alice ") == "alice"
    assert validate_owner_id("o" * 100) == "o" * 100
    for bad, message in (("", "empty"), ("o" * 101, "limit is 100"), ("a\x00b", "control")):
        with pytest.raises(InvalidInputError, match=message):
            validate_owner_id(bad)


def test_description_rules() -> None:
    assert validate_description("") == ""
    assert validate_description("line one\n\tline two") == "line one\n\tline two"
    assert validate_description("d" * 10_000) == "d" * 10_000
    with pytest.raises(InvalidInputError, match="limit is 10000"):
        validate_description("d" * 10_001)
    for control in ("\x00", "\r", "\x1b", "\x7f"):
        with pytest.raises(InvalidInputError, match="control characters"):
            validate_description(f"a{control}b")


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("name", "name"),
        ("type", "type"),
        ("status", "status"),
        ("owner_id", "owner"),
        ("description", "description"),
    ],
)
@pytest.mark.parametrize("value", ["\udcff", "ok\udcffok", chr(0xD800)])
def test_text_that_is_not_utf8_is_refused_naming_the_field(
    field: str, label: str, value: str
) -> None:
    # A lone surrogate: how Python decodes an argument's or variable's undecodable bytes.
    with pytest.raises(InvalidInputError, match=f"^{label} is not valid UTF-8$"):
        validate_fields({field: value})


def test_validate_fields_orders_and_rejects_unknown() -> None:
    fields = validate_fields({"description": "d", "name": " n ", "status": "on_hold"})
    assert list(fields) == ["name", "status", "description"]
    assert fields["name"] == "n"
    with pytest.raises(InvalidInputError, match="unknown project field"):
        validate_fields({"colour": "red"})
    assert EDITABLE_FIELDS == ("name", "type", "status", "owner_id", "description")


def test_project_round_trips_through_dict() -> None:
    project = Project("proj_1", "n", "api", "created", "o", "", "t1", "t2")
    assert Project.from_dict(project.to_dict()) == project
    assert list(project.to_dict()) == [
        "project_id",
        "name",
        "type",
        "status",
        "owner_id",
        "description",
        "created_at",
        "updated_at",
    ]
    with pytest.raises(KeyError):
        Project.from_dict({"project_id": "x"})
    with pytest.raises(TypeError):
        Project.from_dict({**project.to_dict(), "name": 3})
