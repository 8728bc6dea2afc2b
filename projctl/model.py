"""The Project record: its fields, their rules and defaults, and the id scheme.

Pure: no I/O, no environment (the default owner comes from ``config``). Every
``validate_*`` function returns the normalised value or raises
:class:`~projctl.errors.InvalidInputError` with a message naming the field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple, get_args

from projctl.errors import InvalidInputError, ProjectNotFoundError

__all__ = [
    "DEFAULT_STATUS",
    "DEFAULT_TYPE",
    "EDITABLE_FIELDS",
    "PROJECT_FIELDS",
    "STATUSES",
    "WAIT_FIELDS",
    "Project",
    "Status",
    "WaitCondition",
    "check_utf8",
    "next_project_id",
    "parse_project_id",
    "resolve_reference",
    "validate_description",
    "validate_fields",
    "validate_name",
    "validate_owner_id",
    "validate_status",
    "validate_type",
    "visible",
]

#: Fields a user may set, in the order ``updated_fields`` lists them.
EDITABLE_FIELDS: tuple[str, ...] = ("name", "type", "status", "owner_id", "description")

Status = Literal["created", "in_progress", "on_hold", "completed", "archived"]
STATUSES: tuple[str, ...] = get_args(Status)
DEFAULT_STATUS: Status = "created"
DEFAULT_TYPE = "api"

NAME_MAX = 200
OWNER_MAX = 100
DESCRIPTION_MAX = 10_000
_TYPE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# Descriptions may span lines and hold tabs; every other control character
# (ESC, NUL, CR, ...) could rewrite a terminal that displays it.
_DESCRIPTION_CONTROLS_ALLOWED = frozenset("\n\t")


@dataclass(frozen=True)
class Project:
    """One project as stored. Timestamps use the event format (``events.format_timestamp``)."""

    project_id: str
    name: str
    type: str
    status: str
    owner_id: str
    description: str
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, str]:
        """The record as stored and as sent in events, keys in wire order."""
        return {
            "project_id": self.project_id,
            "name": self.name,
            "type": self.type,
            "status": self.status,
            "owner_id": self.owner_id,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @property
    def version_tag(self) -> str:
        """A tag that changes whenever any field does (HTTP's ``ETag``, without quotes):
        ``If-Match`` compares it, so a change made on a stale view is refused."""
        import hashlib  # loads OpenSSL: only when a tag is asked for

        encoded = "\x1f".join(self.to_dict().values()).encode("utf-8", "surrogatepass")
        return hashlib.sha256(encoded).hexdigest()[:24]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Project:
        """Rebuild a project from :meth:`to_dict` output.

        Raises ``KeyError`` or ``TypeError`` when the record is not a project;
        the caller knows which file it came from and reports that.
        """
        values = {field: record[field] for field in PROJECT_FIELDS}
        if not all(isinstance(value, str) for value in values.values()):
            raise TypeError("project fields must be strings")
        return cls(**values)


#: Every field of a project, in wire order (:meth:`Project.to_dict`).
PROJECT_FIELDS: tuple[str, ...] = ("project_id", *EDITABLE_FIELDS, "created_at", "updated_at")


def next_project_id(
    created: datetime, *, is_taken: Callable[[str], bool], last_issued: str | None = None
) -> str:
    """The id for a project created at ``created``: ``proj_YYYYMMDD_HHMMSS`` in UTC.

    A later project in the same second gets ``_2``, ``_3``, ... Ids never go backwards:
    counting resumes after ``last_issued`` when that id belongs to the same second or a
    later one (a clock stepped back keeps issuing in the second of ``last_issued``), so
    an id freed by a delete is never handed out again; ``is_taken`` guards against every
    other collision. The caller must hold the database lock.
    """
    if created.tzinfo is not None:
        created = created.astimezone(timezone.utc)
    base = created.strftime("proj_%Y%m%d_%H%M%S")
    number = 1
    issued = parse_project_id(last_issued) if last_issued is not None else None
    if issued is not None and issued[0] >= base:
        base, number = issued[0], issued[1] + 1
    while True:
        candidate = base if number == 1 else f"{base}_{number}"
        if not is_taken(candidate):
            return candidate
        number += 1


_ID_PATTERN = re.compile(r"(proj_\d{8}_\d{6})(?:_([1-9]\d{0,8}))?")


def parse_project_id(project_id: str) -> tuple[str, int] | None:
    """``(second, number)`` of an id of the scheme (``proj_..._HHMMSS`` is number 1), in
    the order ids are issued; ``None`` for anything else."""
    match = _ID_PATTERN.fullmatch(project_id)
    if match is None:
        return None
    return match[1], int(match[2] or 1)


def check_utf8(value: str, field: str) -> str:
    """``value`` itself, unless it holds a lone surrogate: then :class:`InvalidInputError`
    saying that ``field`` is not valid UTF-8.

    Python decodes command-line arguments and environment values with
    ``surrogateescape``: bytes that are not UTF-8 arrive as lone surrogates, which no
    file, JSON document or terminal can hold as text.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{field} is not valid UTF-8") from None
    return value


def _has_control_character(value: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any(unicodedata.category(char) == "Cc" and char not in allowed for char in value)


def validate_name(value: str) -> str:
    """A name is 1-200 characters after trimming white space, with no control characters."""
    name = check_utf8(value, "name").strip()
    if not name:
        raise InvalidInputError("name must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidInputError(f"name is {len(name)} characters long; the limit is {NAME_MAX}")
    if _has_control_character(name):
        raise InvalidInputError("name must not contain control characters")
    return name


def validate_type(value: str) -> str:
    """A type is a lowercase slug: ``[a-z0-9][a-z0-9_-]{0,31}``."""
    if not _TYPE_PATTERN.fullmatch(check_utf8(value, "type")):
        raise InvalidInputError(
            f"type {value!r} is not a lowercase slug: 1-32 of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def validate_status(value: str) -> str:
    """A status is one of :data:`STATUSES`."""
    if check_utf8(value, "status") not in STATUSES:
        import difflib

        close = difflib.get_close_matches(value.lower(), STATUSES, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise InvalidInputError(f"status {value!r} is not one of {', '.join(STATUSES)}{hint}")
    return value


def validate_owner_id(value: str) -> str:
    """An owner id is 1-100 characters after trimming, with no control characters."""
    owner_id = check_utf8(value, "owner").strip()
    if not owner_id:
        raise InvalidInputError("owner must not be empty")
    if len(owner_id) > OWNER_MAX:
        raise InvalidInputError(
            f"owner is {len(owner_id)} characters long; the limit is {OWNER_MAX}"
        )
    if _has_control_character(owner_id):
        raise InvalidInputError("owner must not contain control characters")
    return owner_id


def validate_description(value: str) -> str:
    """A description is up to 10,000 characters; newline and tab are its only control characters."""
    check_utf8(value, "description")
    if len(value) > DESCRIPTION_MAX:
        raise InvalidInputError(
            f"description is {len(value)} characters long; the limit is {DESCRIPTION_MAX}"
        )
    if _has_control_character(value, _DESCRIPTION_CONTROLS_ALLOWED):
        raise InvalidInputError(
            "description must not contain control characters other than newline and tab"
        )
    return value


_VALIDATORS: dict[str, Callable[[str], str]] = {
    "name": validate_name,
    "type": validate_type,
    "status": validate_status,
    "owner_id": validate_owner_id,
    "description": validate_description,
}


def validate_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Validate editable fields, returning them normalised and in :data:`EDITABLE_FIELDS` order."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInputError(f"unknown project field(s): {', '.join(sorted(unknown))}")
    return {
        field: _VALIDATORS[field](fields[field]) for field in EDITABLE_FIELDS if field in fields
    }


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: Characters a terminal must not get as they are, by Unicode category: controls (Cc: ESC,
#: C1, DEL) can move the cursor, clear the screen or set a terminal's title; format
#: characters (Cf: bidi marks, overrides and isolates, zero-width space and joiners, BOM,
#: soft hyphen, tags) reorder or hide what is shown, so two names can look alike; line and
#: paragraph separators (Zl, Zp) break a line; a lone surrogate (Cs) cannot be written at
#: all. Another program may have written any of them into the database.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED_ESCAPES = {9: "\\t", 10: "\\n", 13: "\\r"}
_CACHE_LIMIT = 1 << 16


class _Escapes(dict[int, str]):
    """A ``str.translate`` table that judges each code point by its category on first sight."""

    def __init__(self, kept: str = "") -> None:
        super().__init__()
        self.kept = frozenset(map(ord, kept))

    def __missing__(self, code: int) -> str:
        if code in self.kept or unicodedata.category(chr(code)) not in _UNSAFE_CATEGORIES:
            shown = chr(code)
        else:
            shown = _NAMED_ESCAPES.get(code) or _escape(code)
        if len(self) < _CACHE_LIMIT:
            self[code] = shown
        return shown


_VISIBLE = _Escapes()
_VISIBLE_KEEPING_LINES = _Escapes(kept="\n\t")


def visible(text: str, *, keep_lines: bool = False) -> str:
    """``text`` safe to print on a terminal: every control, format or separator character
    (categories Cc, Cf, Zl, Zp) shown as an escape.

    ``ESC`` becomes ``\\x1b``, a bidi override ``\\u202e``, a left-to-right mark
    ``\\u200e``. With ``keep_lines``, newline and tab (which a description may hold) stay
    as they are. For display only: ``--json`` output keeps the exact value.
    """
    if text.isprintable():  # none of those categories: the common case, at C speed
        return text
    return text.translate(_VISIBLE_KEEPING_LINES if keep_lines else _VISIBLE)


#: The fields ``--for FIELD=VALUE`` may name (``owner`` is ``owner_id``).
WAIT_FIELDS: tuple[str, ...] = ("status", "type", "owner_id", "name")
_FIELD_ALIASES = {"owner": "owner_id"}


class WaitCondition(NamedTuple):
    """What ``wait --for`` waits for: a field's value, or (``field`` ``None``) deletion.

    A named tuple rather than a dataclass: every command imports this module, and a
    dataclass costs each of them its code generation (about half a millisecond)."""

    field: str | None
    value: str = ""

    @classmethod
    def parse(cls, raw: str) -> WaitCondition:
        """``delete`` or ``FIELD=VALUE`` (:data:`WAIT_FIELDS`), as kubectl's ``--for``."""
        text = raw.strip()
        if text.lower() in ("delete", "deleted"):
            return cls(None)
        field, equals, value = text.partition("=")
        field = _FIELD_ALIASES.get(field.strip().lower(), field.strip().lower())
        if not equals or field not in WAIT_FIELDS:
            raise InvalidInputError(
                f"--for {raw!r} is not a condition: expected delete or FIELD=VALUE with FIELD "
                f"one of {', '.join(WAIT_FIELDS)} (like status=completed)"
            )
        value = _VALIDATORS[field](value)
        return cls(field, value)

    @property
    def deletion(self) -> bool:
        """Whether it waits for the project to be deleted."""
        return self.field is None

    def __str__(self) -> str:
        return "delete" if self.field is None else f"{self.field}={self.value}"

    def met_by(self, record: Mapping[str, Any] | None) -> bool:
        """Whether the project, as ``record`` (``None``: it does not exist), meets it."""
        if self.field is None:
            return record is None
        return record is not None and record.get(self.field) == self.value


def resolve_reference(reference: str, projects: Iterable[Project]) -> str:
    """The id of the project ``reference`` names among ``projects``, as docker resolves a
    container: an exact id first, then an exact name that one project has, then the
    beginning of one project's id (a whole id, ``proj_..._HHMMSS``, is never taken as the
    beginning of ``proj_..._HHMMSS_2``).

    Raises :class:`ProjectNotFoundError` when nothing matches, and
    :class:`InvalidInputError` listing the candidates' ids when several projects share
    that name, or when several ids begin with it.
    """
    candidates = list(projects)
    if any(project.project_id == reference for project in candidates):
        return reference
    named = [project.project_id for project in candidates if project.name == reference]
    if len(named) > 1:
        raise InvalidInputError(
            f"{len(named)} projects are named {reference!r}: {', '.join(named)}; "
            "give one of these ids"
        )
    if named:
        return named[0]
    # A whole id of the scheme names one project, never a prefix: proj_X, deleted, must not
    # become proj_X_2.
    whole_id = parse_project_id(reference) is not None
    starting = [
        p.project_id
        for p in candidates
        if reference and not whole_id and p.project_id.startswith(reference)
    ]
    if len(starting) > 1:
        raise InvalidInputError(
            f"{len(starting)} project ids begin with {reference!r}: {', '.join(starting)}; "
            "give more of the id"
        )
    if starting:
        return starting[0]
    raise ProjectNotFoundError(reference, looked_up_by="id or name")
