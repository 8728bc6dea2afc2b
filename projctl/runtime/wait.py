"""The one wait of this package: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["poll_until"]

T = TypeVar("T")


def poll_until(
    condition: Callable[[], T],
    deadline: float,
    interval: float = 0.02,
    *,
    max_interval: float | None = None,
) -> T | None:
    """The first truthy value ``condition()`` returns, or ``None`` once ``deadline`` (a
    ``time.monotonic()`` instant) has passed.

    ``condition`` is called at least once, even past the deadline, and may raise to give up
    early. Between calls it sleeps ``interval``, never past the deadline; with
    ``max_interval`` the pause grows by half each time up to that bound (a start that is
    usually quick is seen quickly, a slow one is not polled hard).
    """
    pause = interval
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
        if max_interval is not None:
            pause = min(pause * 1.5, max_interval)
