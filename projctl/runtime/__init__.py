"""A database's server on this machine: where its state lives, how to start, find and stop it.

Server state lives in the user's **private runtime folder**, checked on every use, and one
database is one **identity** whatever path reaches it (both in :mod:`.paths`). The entry for a
database is a few files named by the key of that identity:

``<key>.json``
    the running server's :class:`ServerState`, mode 0600. This module is the only
    one that knows its format;
``<key>.sock``
    the server's Unix socket for the local protocol (``rpc``);
``<key>.lock``
    held by the running server for its whole life: two servers never run for one
    database;
``<key>.start``
    held while a server is being started, so that racing commands start one;
``<key>.log``
    what a background server prints;
``<key>.hung``
    a server that took a request and did not answer (hung, stopped), remembered for
    :data:`HUNG_MEMORY` seconds by its pid and start time, so that the next commands
    ask it only briefly instead of waiting the whole :data:`ANSWER_TIMEOUT` again.

Nothing found there is trusted without a check: a request verifies the peer's uid
and pid with the kernel (``rpc``), and the caller compares the database id the
server reports with its own. Starting a server is always an explicit call
(:func:`ensure_server`, or :func:`start_in_background` for a command that does not wait
for it); the background server is ``python -m projctl.server``
with the arguments of :class:`ServerLaunch`, whose two halves live here.

The package holds one job per module: :mod:`.paths` (the folder and a database's
identity), :mod:`.state` (the state file), :mod:`.launch` (claim, launch, spawn, stop),
:mod:`.ask` and :mod:`.locate` (ask, verify and locate a server), and :mod:`.wait` (the
one wait with a deadline they all use). Everything is re-exported here; :mod:`.launch` and
:mod:`.locate` are imported at their first use, so that a command that forwards its event
to a running server never loads the code that launches or locates one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from projctl.config import DEFAULT_MAX_CONNECTIONS

# Imported here, first: its name is also its module's, and binding the function now keeps a
# later import of the module from any sibling from shadowing it.
from .ask import ANSWER_TIMEOUT, HUNG_MEMORY, HUNG_PROBE_TIMEOUT, ask, request, verify_database
from .paths import (
    LOOPBACK_HOSTS,
    SOCKET_PATH_MAX,
    RuntimeFolderError,
    RuntimePaths,
    check_private_folder,
    database_key,
    is_loopback,
    private_folder,
    runtime_paths,
)
from .state import (
    STATE_FILE_MAX,
    ServerState,
    pid_alive,
    process_start_time,
    read_server_state,
    remember_port,
    remembered_port,
)
from .wait import poll_until

if TYPE_CHECKING:
    from .launch import (
        LOG_ROTATE_BYTES,
        START_TIMEOUT,
        STOP_TIMEOUT,
        ServerLaunch,
        StartOptions,
        claim_server,
        ensure_server,
        start_in_background,
        stop_server,
    )
    from .locate import Endpoint, locate, server_on_port, server_status

__all__ = [
    "ANSWER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "HUNG_MEMORY",
    "HUNG_PROBE_TIMEOUT",
    "LOG_ROTATE_BYTES",
    "LOOPBACK_HOSTS",
    "SOCKET_PATH_MAX",
    "START_TIMEOUT",
    "STATE_FILE_MAX",
    "STOP_TIMEOUT",
    "Endpoint",
    "RuntimeFolderError",
    "RuntimePaths",
    "ServerLaunch",
    "ServerState",
    "StartOptions",
    "ask",
    "check_private_folder",
    "claim_server",
    "database_key",
    "ensure_server",
    "is_loopback",
    "locate",
    "pid_alive",
    "poll_until",
    "private_folder",
    "process_start_time",
    "read_server_state",
    "remember_port",
    "remembered_port",
    "request",
    "runtime_paths",
    "server_on_port",
    "server_status",
    "start_in_background",
    "stop_server",
    "verify_database",
]

#: Where each of the rest is defined: imported at its first use (PEP 562), as a command that
#: forwards its event to a running server needs neither launching nor locating one.
_HOMES = {
    "Endpoint": ".locate",
    "LOG_ROTATE_BYTES": ".launch",
    "START_TIMEOUT": ".launch",
    "STOP_TIMEOUT": ".launch",
    "ServerLaunch": ".launch",
    "StartOptions": ".launch",
    "claim_server": ".launch",
    "ensure_server": ".launch",
    "locate": ".locate",
    "server_on_port": ".locate",
    "server_status": ".locate",
    "start_in_background": ".launch",
    "stop_server": ".launch",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(home, __name__)
    # Every name of that module at once: importing `.locate` has just bound the package's
    # `locate` to the module, and the function must win.
    globals().update({each: getattr(module, each) for each, at in _HOMES.items() if at == home})
    return globals()[name]
