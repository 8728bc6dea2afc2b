"""The watch table's layout: each row's cells and change labels, and which columns fit a
terminal's width and how wide. Pure: text in, widths out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.cells import cell_len

from projctl.model import visible

from .state import HIGHLIGHT_SECONDS, FieldChange, Row, timestamp_to_epoch
from .words import relative_time, short_age

#: The table's columns, left to right.
COLUMNS: tuple[str, ...] = ("ID", "Name", "Type", "Status", "Owner", "Last change")
#: Spaces between two columns (Rich's cell padding, collapsed, plus the divider).
COLUMN_GAP = 2
#: Name is truncated, never dropped, down to this width (or its content's, if narrower)...
NAME_MIN_WIDTH = 10
#: ... but Type and Owner are shown only while Name keeps this much (a name says more).
NAME_COMFORT_WIDTH = 16
#: Past its cap, Last change grows only while Name keeps this much.
NAME_ROOMY_WIDTH = 30
#: Caps on the columns sized to their content; longer values end in an ellipsis.
TYPE_MAX_WIDTH = 12
OWNER_MAX_WIDTH = 16
LAST_CHANGE_MAX_WIDTH = 28
#: The fields that have a column, and its header: a change is worded with the header's
#: name (``owner``, not ``owner_id``); other fields (``description``) by their own.
FIELD_COLUMNS: dict[str, str] = {
    "name": "Name",
    "type": "Type",
    "status": "Status",
    "owner_id": "Owner",
}


#: The order changes are told in Last change: fields with no column, then the columns in
#: the order :func:`_layout` drops them (Name is never dropped).
CHANGE_ORDER: tuple[str, ...] = ("Type", "Owner", "Status", "Name")


def _change_order(change: FieldChange) -> int:
    column = FIELD_COLUMNS.get(change.field)
    return 0 if column is None else 1 + CHANGE_ORDER.index(column)


def field_word(name: str) -> str:
    """How a field is named on screen: its column's header in lower case, else itself."""
    column = FIELD_COLUMNS.get(name)
    return column.lower() if column else visible(name)


def change_words(change: FieldChange, *, with_old: bool = True) -> str:
    """``status created → in_progress`` (``name "Old name" → "New name"``);
    ``status → in_progress`` without ``with_old``,
    or when the old value is unknown (or the same: a replay onto the projects as they
    are now has only the new one)."""

    def shown(value: object) -> str:
        # Quoted when it has spaces (or is empty), so one value never reads as two.
        text = visible(str(value))
        return text if text and " " not in text else f'"{text}"'

    new = shown(change.new)
    if with_old and change.old is not None and change.old != change.new:
        return f"{field_word(change.field)} {shown(change.old)} → {new}"
    return f"{field_word(change.field)} → {new}"


def _is_fresh(row: Row, now: float) -> bool:
    return row.change != "loaded" and now - row.changed_at < HIGHLIGHT_SECONDS


def _plain_cells(row: Row) -> dict[str, str]:
    """The row's text per column but Last change, control characters made visible."""
    project = row.project
    return {
        "ID": visible(str(project.get("project_id", ""))),
        "Name": visible(str(project.get("name", ""))),
        "Type": visible(str(project.get("type", ""))),
        "Status": visible(str(project.get("status", ""))),
        "Owner": visible(str(project.get("owner_id", ""))),
    }


def _change_labels(row: Row, now: float) -> list[str]:
    """What last happened to the row, from the longest wording to the shortest.

    For an update, each field's old and new value (``status created → in_progress,
    owner ann → bob · 3s``), then the new values only, then fewer fields and a ``+N``
    for the rest, then the fields' names (``upd status,owner · 3s``), down to
    ``upd · 3s``. Fields are told in the order their columns go on a narrow screen
    (:data:`CHANGE_ORDER`), so what changed in a column that is not shown comes first
    and is the last to be cut. For an emitted event its type
    and data (``tests_run passed=41 failed=0 · 3s``), down to ``evt · 3s``.
    """
    if row.change == "loaded":
        updated = timestamp_to_epoch(row.project.get("updated_at"))
        return ["-" if updated is None else relative_time(now - updated)]
    age = short_age(now - (row.changed_at if row.occurred_at is None else row.occurred_at))
    if row.change == "new":
        return [f"new · {age}"]
    if row.change == "deleted":
        return [f"del · {age}"]
    if row.change == "emitted":
        # ``tests_run passed=41 failed=0 · 3s``, then the type alone, then a mark.
        kind = visible(row.event_type)
        labels = [f"{kind} {visible(row.summary)} · {age}"] if row.summary else []
        return [*labels, f"{kind} · {age}", f"evt · {age}"]
    changes = row.changes or tuple(
        FieldChange(name, None, row.project.get(name)) for name in row.updated_fields
    )
    changes = tuple(sorted(changes, key=_change_order))
    labels = []
    for keep in range(len(changes), 0, -1):
        more = f", +{len(changes) - keep}" if keep < len(changes) else ""
        for with_old in (True, False):
            words = ", ".join(change_words(c, with_old=with_old) for c in changes[:keep])
            labels.append(f"{words}{more} · {age}")
    names = [field_word(change.field) for change in changes]
    labels += [f"upd {','.join(names)} · {age}"] if names else []
    for keep in range(len(names) - 1, 0, -1):
        labels.append(f"upd {','.join(names[:keep])},+{len(names) - keep} · {age}")
    labels.append(f"upd · {age}")
    return labels


def _fit(labels: Sequence[str], width: int) -> str:
    """The longest label that fits ``width`` cells (the shortest, if none does)."""
    return next((label for label in labels if cell_len(label) <= width), labels[-1])


def _layout(
    cells: Sequence[Mapping[str, str]], labels: Sequence[Sequence[str]], width: int
) -> dict[str, int]:
    """Each column shown and its width, left to right, for a terminal ``width`` wide.

    Columns are as wide as their content (and header), within their caps. ID is never
    truncated. Name takes what is left, truncated with an ellipsis. When they do not
    all fit, in this order: Type goes, then Owner (each as soon as Name would get less
    than :data:`NAME_COMFORT_WIDTH`), Last change is abbreviated (down to its header's
    width), Status goes, Last change goes (each as soon as Name would get less than
    :data:`NAME_MIN_WIDTH`).
    """

    def content(column: str, cap: int | None = None) -> int:
        widest = max((cell_len(row[column]) for row in cells), default=0)
        natural = max(cell_len(column), widest)
        return natural if cap is None else min(natural, max(cap, cell_len(column)))

    natural = {
        "ID": content("ID"),
        "Name": content("Name"),
        "Type": content("Type", TYPE_MAX_WIDTH),
        "Status": content("Status"),
        "Owner": content("Owner", OWNER_MAX_WIDTH),
        "Last change": max(
            cell_len("Last change"),
            max((cell_len(_fit(row, LAST_CHANGE_MAX_WIDTH)) for row in labels), default=0),
        ),
    }
    last_min = cell_len("Last change")
    longest_label = max(
        natural["Last change"], max((cell_len(row[0]) for row in labels), default=0)
    )
    steps: list[tuple[tuple[str, ...], bool, int]] = [  # columns, abbreviate, Name's minimum
        (COLUMNS, False, NAME_COMFORT_WIDTH),
        (("ID", "Name", "Status", "Owner", "Last change"), False, NAME_COMFORT_WIDTH),
        (("ID", "Name", "Status", "Last change"), False, NAME_MIN_WIDTH),
        (("ID", "Name", "Status", "Last change"), True, NAME_MIN_WIDTH),
        (("ID", "Name", "Last change"), True, NAME_MIN_WIDTH),
        (("ID", "Name"), True, NAME_MIN_WIDTH),
    ]
    for columns, abbreviate, name_least in steps:
        name_min = min(name_least, natural["Name"])
        fixed = sum(natural[c] for c in columns if c not in ("Name", "Last change"))
        room = width - fixed - COLUMN_GAP * (len(columns) - 1)
        last = 0
        if "Last change" in columns:
            last = min(natural["Last change"], max(last_min, room - name_min))
            if not abbreviate:
                last = natural["Last change"]
        if room - last >= name_min:
            if last:
                # Past its cap, Last change may list every field an update changed, as
                # long as Name keeps NAME_ROOMY_WIDTH (or all it needs).
                roomy = min(natural["Name"], NAME_ROOMY_WIDTH)
                last = max(last, min(longest_label, room - roomy))
            widths = {c: natural[c] for c in columns}
            widths["Name"] = min(natural["Name"], room - last)
            if last:
                widths["Last change"] = last
            return widths
    return {"ID": natural["ID"]}
