"""Wording shared by every watch view and ``list``: counts and ages."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 project``, ``2 projects``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def relative_time(seconds: float) -> str:
    """A short age: ``just now``, ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if seconds < 1:
        return "just now"
    return f"{short_age(seconds)} ago"


def short_age(seconds: float) -> str:
    """The shortest age: ``now``, ``12s``, ``5m``, ``3h``, ``2d``."""
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
