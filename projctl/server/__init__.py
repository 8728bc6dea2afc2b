"""The broadcast server, one job per module.

- :mod:`~projctl.server.app`: :class:`BroadcastServer`, its lifecycle and the state file
- :mod:`~projctl.server.config`: :class:`ServerConfig` and the one settings-to-config mapping
- :mod:`~projctl.server.access`: who may do what (Host, Origin, tokens, the token file)
- :mod:`~projctl.server.http`: the routes (pages, ``/healthz``, ``/api``, handshake checks)
- :mod:`~projctl.server.feed`: ``/ws`` subscribers, their openings, the send budget, the shared read
- :mod:`~projctl.server.connection`: accepted sockets, counted, and their TLS handshakes
- :mod:`~projctl.server.writes`: ``/rpc``, the one write path (window, idempotency, write turn)
- :mod:`~projctl.server.local`: the private Unix socket's answers (forward, status, stop)
- :mod:`~projctl.server.watcher`: the journal-file watcher and reconcile

``python -m projctl.server`` runs a background server (see ``runtime.ServerLaunch``).
"""

from __future__ import annotations

from projctl.server.access import AccessPolicy, canonical_host, check_key_file, read_token_file
from projctl.server.app import BroadcastServer, configure_logging, run_server
from projctl.server.config import ServerConfig, server_config
from projctl.server.http import _page_response

__all__ = [
    "AccessPolicy",
    "BroadcastServer",
    "ServerConfig",
    "_page_response",
    "canonical_host",
    "check_key_file",
    "configure_logging",
    "read_token_file",
    "run_server",
    "server_config",
]
