"""``projctl watch``, and ``projctl list``'s table: one module per job.

:mod:`.state` (the filters and :class:`WatchState`, folded from the server's messages),
:mod:`.layout` (which columns fit and how wide), :mod:`.render` (pure renderers: state
and a clock in, a Rich renderable out), :mod:`.loops` (the live screen and the JSON Lines
loop), :mod:`.table` (``list``'s table) and :mod:`.words` (counts and ages).

Every name is re-exported here, but only :mod:`.table` and :mod:`.words` load with the
package: the rest (asyncio, the websockets client, ``rich.live``) loads on first use, so
``projctl list`` on a terminal pays only for its table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .table import STATUS_STYLES, render_projects_table
from .words import plural, relative_time, short_age

if TYPE_CHECKING:
    from .loops import (
        GIVE_UP_AFTER,
        REFRESH_INTERVAL,
        resync_line,
        run_json,
        run_live,
    )
    from .loops import (
        _connection_line as _connection_line,
    )
    from .render import render_feed, render_screen, render_watch_table
    from .state import (
        DELETED_LINGER_SECONDS,
        FEED_LENGTH,
        HIGHLIGHT_SECONDS,
        EventFilter,
        FeedEntry,
        FieldChange,
        Row,
        Tally,
        WatchState,
        timestamp_to_epoch,
    )

__all__ = [
    "DELETED_LINGER_SECONDS",
    "FEED_LENGTH",
    "GIVE_UP_AFTER",
    "HIGHLIGHT_SECONDS",
    "REFRESH_INTERVAL",
    "STATUS_STYLES",
    "EventFilter",
    "FeedEntry",
    "FieldChange",
    "Row",
    "Tally",
    "WatchState",
    "plural",
    "relative_time",
    "render_feed",
    "render_projects_table",
    "render_screen",
    "render_watch_table",
    "resync_line",
    "run_json",
    "run_live",
    "short_age",
    "timestamp_to_epoch",
]

#: The names loaded on first use, and the module of each.
_LAZY = {
    "DELETED_LINGER_SECONDS": "state",
    "FEED_LENGTH": "state",
    "HIGHLIGHT_SECONDS": "state",
    "EventFilter": "state",
    "FeedEntry": "state",
    "FieldChange": "state",
    "Row": "state",
    "Tally": "state",
    "WatchState": "state",
    "timestamp_to_epoch": "state",
    "render_feed": "render",
    "render_screen": "render",
    "render_watch_table": "render",
    "GIVE_UP_AFTER": "loops",
    "REFRESH_INTERVAL": "loops",
    "_connection_line": "loops",
    "resync_line": "loops",
    "run_json": "loops",
    "run_live": "loops",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
