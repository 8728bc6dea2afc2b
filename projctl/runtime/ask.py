"""Asking a database's server, as a command asks it: bounded, remembering a server that
did not answer, and checking that the server serves this very database."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson

from projctl import _files, rpc
from projctl.errors import (
    ServerError,
    ServerNotAnsweringError,
    ServerUnavailableError,
)

from .paths import RuntimePaths
from .state import ServerState, still_running
from .wait import poll_until

#: How long a command waits for a server that took its request to answer: past this it
#: is not answering (hung, stopped), and a change goes on without it (it is journaled).
ANSWER_TIMEOUT = 1.0
#: How long a server remembered as not answering is asked again before giving up.
HUNG_PROBE_TIMEOUT = 0.3
#: How long a server that did not answer is remembered as not answering.
HUNG_MEMORY = 30.0
#: How long a server that hung up without answering is given to exit, if it is exiting.
_EXIT_GRACE = 0.5


def request(state: ServerState, op: str, **args: Any) -> dict[str, Any]:
    """One ``rpc`` request to the server ``state`` describes, verified to be that process."""
    return rpc.request(state.socket, op, expect_pid=state.pid, **args)


def ask(
    paths: RuntimePaths,
    state: ServerState,
    op: str,
    *,
    deadline: float | None = None,
    **args: Any,
) -> dict[str, Any]:
    """One request to the database's server ``state`` describes, as a command asks it.

    It waits for the answer at most :data:`ANSWER_TIMEOUT` (:data:`HUNG_PROBE_TIMEOUT` for
    a server remembered as not answering) and never past ``deadline`` (a
    ``time.monotonic()`` instant). Raises
    :class:`~projctl.errors.ServerNotAnsweringError` (and remembers it) when the server
    took the request but did not answer, :class:`~projctl.errors.ServerUnavailableError`
    when it is gone, and :class:`~projctl.errors.ServerError` when it hung up without a
    reply and still runs (a bug, which its log shows): only a server that is gone may be
    replaced.
    """
    remembered = _remembered_hung(paths, state)
    timeout = HUNG_PROBE_TIMEOUT if remembered else ANSWER_TIMEOUT
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise ServerNotAnsweringError(
                "no time left to ask the server", pid=state.pid, url=state.url
            )
    try:
        reply = request(state, op, timeout=timeout, **args)
    except ServerNotAnsweringError as error:
        if timeout >= HUNG_PROBE_TIMEOUT:  # not merely cut short by the deadline
            _remember_hung(paths, state)
        still = "still " if remembered else ""
        raise ServerNotAnsweringError(
            f"the server (pid {state.pid}) is {still}not answering ({error})",
            pid=state.pid,
            url=state.url,
        ) from None
    except rpc.NoReplyError:
        # A server on its way out hangs up too: give it a moment to be gone.
        grace = time.monotonic() + _EXIT_GRACE
        if deadline is not None:
            grace = min(grace, deadline)
        if poll_until(lambda: not still_running(state), grace):
            raise ServerUnavailableError("the server exited without answering") from None
        raise ServerError(
            f"the server (pid {state.pid}) closed the connection without answering; "
            f"its log may say why: {paths.log_file}"
        ) from None
    if remembered:
        with contextlib.suppress(OSError):
            paths.hung_file.unlink()
    return reply


def _hung_key(state: ServerState) -> bytes:
    """What names one server process in the hung marker: its pid and start time."""
    started = state.process_start if state.process_start is not None else state.started_at
    return orjson.dumps({"pid": state.pid, "started": started})


def _remember_hung(paths: RuntimePaths, state: ServerState) -> None:
    with contextlib.suppress(OSError):
        _files.atomic_write(paths.hung_file, _hung_key(state), mode=0o600, keep_mode=False)


def _remembered_hung(paths: RuntimePaths, state: ServerState) -> bool:
    """Whether this very server (pid and start time) did not answer a command lately."""
    try:
        found = _files.read_regular(paths.hung_file)
    except OSError:
        return False
    if found is None:
        return False
    raw, status = found
    return raw == _hung_key(state) and 0 <= time.time() - status.st_mtime < HUNG_MEMORY


def verify_database(status: dict[str, Any], database_id: str | None) -> None:
    """Check that a server's status is for the database with ``database_id``.

    ``""`` on either side (a database before its first change, a server that has not
    read it since) matches. ``None`` (the database's id cannot be read) matches no
    server: nothing then says it is this database's. Raises
    :class:`~projctl.errors.ServerError` otherwise.
    """
    database = status.get("database")
    served = database.get("id") if isinstance(database, dict) else None
    if not isinstance(served, str):
        raise ServerError("the server's status does not say which database it serves")
    if database_id is None:
        raise ServerError(
            f"cannot tell whether the server found (pid {status.get('pid')}) serves this "
            "database: the database's id cannot be read (projctl info says why)"
        )
    if database_id and served and served != database_id:
        raise ServerError(
            f"the server found for this database serves another one (id {served!r}, "
            f"expected {database_id!r}); stop it with projctl server stop"
        )
