"""Locate a database's server on this machine: who holds a port, its status, where a
subscriber connects."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from projctl import rpc
from projctl.errors import (
    ServerUnavailableError,
)

from .ask import ask, verify_database
from .launch import StartOptions, ensure_server
from .paths import RuntimePaths, check_private_folder, private_folder
from .state import ServerState, pid_alive, read_server_state, read_state_file


def server_on_port(port: int) -> ServerState | None:
    """This user's running projctl server listening on ``port``, if any (to say who holds it)."""
    folder = private_folder()
    if not check_private_folder(folder, create=False):
        return None
    for state_file in sorted(folder.glob("*.json")):
        state = read_state_file(state_file)
        if state is not None and state.port == port and pid_alive(state.pid):
            return state
    return None


def server_status(paths: RuntimePaths, database_id: str | None = "") -> dict[str, Any] | None:
    """The running server's health report, or ``None`` when none runs.

    Raises :class:`~projctl.errors.ServerNotAnsweringError` (naming its pid and URL) for
    a server that is there but does not answer.
    """
    state = read_server_state(paths)
    if state is None:
        return None
    try:
        status = ask(paths, state, rpc.OP_STATUS)
    except ServerUnavailableError:
        with contextlib.suppress(OSError):
            paths.state_file.unlink()
        return None
    verify_database(status, database_id)
    return status


@dataclass(frozen=True)
class Endpoint:
    """Where a subscriber connects: the ``/ws`` URL, the token it needs, and the latest seq."""

    url: str
    token: str | None = None
    #: The server's newest ``seq`` when it was located, so "from now on" can be resumed.
    latest_seq: int | None = None
    #: A CA certificate file to trust for a ``wss://`` URL (``None``: the system's CAs).
    ca_file: str | None = None


def locate(
    paths: RuntimePaths,
    start: StartOptions | None,
    database_id: str | None = "",
    *,
    deadline: float | None = None,
) -> Endpoint:
    """The database's server as a subscriber sees it, starting one when ``start`` is given.

    The server is verified first (its pid and uid by the kernel, its database by id).
    Raises :class:`~projctl.errors.ServerUnavailableError` when none runs and none may
    be started, :class:`~projctl.errors.ServerNotAnsweringError` when it does not answer
    (both worth retrying later), :class:`~projctl.errors.ServerError` when one cannot be
    started or is not this database's. Nothing waits past ``deadline`` (a
    ``time.monotonic()`` instant).
    """
    state = read_server_state(paths)
    if state is None:
        if start is None:
            raise ServerUnavailableError("no server is running for this database")
        state = ensure_server(paths, start, deadline=deadline)
    status = ask(paths, state, rpc.OP_STATUS, deadline=deadline)
    verify_database(status, database_id)
    latest = status.get("latest_seq")
    return Endpoint(
        url=state.url,
        token=state.subscriber_token,
        latest_seq=latest if isinstance(latest, int) and not isinstance(latest, bool) else None,
    )
