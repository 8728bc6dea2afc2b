"""How one server runs (:class:`ServerConfig`), and the one mapping from settings to it."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projctl import config, runtime
from projctl.errors import ConfigError
from projctl.server.access import AccessPolicy, read_token_file


@dataclass(frozen=True)
class ServerConfig:
    """How one server runs."""

    host: str = config.DEFAULT_HOST
    port: int = config.DEFAULT_PORT
    #: Extra browser origins allowed to subscribe; ``"*"`` allows any.
    allow_origins: tuple[str, ...] = ()
    #: Stop after this many seconds with no subscribers and no events (``None``: never).
    idle_timeout: float | None = None
    #: A read token subscribers may present (set when listening beyond loopback).
    subscriber_token: str | None = None
    #: A subscriber whose unsent data passes this many bytes is closed with 1013.
    slow_subscriber_limit: int = 1 << 20
    #: Unsent bytes of all subscribers together; past it the furthest behind are closed.
    send_budget: int = 32 << 20
    #: How long an early event waits for the ones before it before the journal is read.
    gap_grace: float = 0.3
    #: How often the database file is checked for commits nobody forwarded.
    poll_interval: float = 0.2
    #: How long a snapshot or API read waits out a file another program is rewriting.
    transient_read_wait: float = 2.0
    ping_interval: float | None = 20.0
    #: How long a closing handshake may take before the connection is dropped.
    close_timeout: float = 5.0
    journal_window: int = config.DEFAULT_JOURNAL_LIMIT
    #: Open connections (subscribers, team-protocol clients, HTTP requests) beyond this get 503.
    #: Every accepted socket counts, from its accept; past this and a few spare slots
    #: (to answer with a 503, and for ``/healthz``), one is closed as soon as it is accepted.
    max_connections: int = runtime.DEFAULT_MAX_CONNECTIONS
    #: How long a new connection may take for its TLS handshake, and then for its HTTP
    #: request, before it is closed.
    handshake_timeout: float = 10.0
    #: TLS handshakes under way at once; the next ones wait their turn (holding only their
    #: socket) within ``handshake_timeout``.
    max_handshakes: int = 64
    #: When ``port`` is taken, listen on any free port instead of failing.
    port_fallback: bool = False
    #: Tokens that may read (subscribe, the HTTP API, the team protocol's reads).
    read_tokens: frozenset[str] = frozenset()
    #: Tokens that may also write (the REST write routes).
    write_tokens: frozenset[str] = frozenset()
    #: TLS for ``wss://`` and ``https://`` (``None``: plain).
    ssl_context: ssl.SSLContext | None = None
    #: The owner of a project created over HTTP without one (``None``: the server's user).
    default_owner: str | None = None

    def __post_init__(self) -> None:
        # The subscriber token is one of the read tokens, however the config was built.
        if self.subscriber_token is not None and self.subscriber_token not in self.read_tokens:
            object.__setattr__(self, "read_tokens", self.read_tokens | {self.subscriber_token})

    def access_policy(self) -> AccessPolicy:
        """Who may do what on a server run with this config."""
        return AccessPolicy(
            host=self.host,
            allow_origins=self.allow_origins,
            read_tokens=self.read_tokens,
            write_tokens=self.write_tokens,
            tls=self.ssl_context is not None,
        )

    @classmethod
    def for_host(
        cls,
        host: str,
        *,
        require_token: bool = False,
        token_file: Path | None = None,
        **settings: Any,
    ) -> ServerConfig:
        """A config for ``host`` with its tokens: from ``token_file``, or fresh ones. A read
        token is needed beyond loopback, and on loopback too with ``require_token`` (or a
        token file); a write token always exists (the team protocol never runs without)."""
        if token_file is not None:
            read, write = read_token_file(token_file)
        else:
            needs_token = require_token or not runtime.is_loopback(host)
            read = frozenset({secrets.token_urlsafe(24)}) if needs_token else frozenset()
            write = frozenset({secrets.token_urlsafe(24)})
        subscriber = min(read) if read else (min(write) if token_file is not None else None)
        return cls(
            host=host,
            subscriber_token=subscriber,
            read_tokens=read,
            write_tokens=write,
            **settings,
        )


def server_config(
    settings: config.Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    port_fallback: bool | None = None,
    allow_origins: Sequence[str] = (),
    idle_timeout: float | None = None,
    require_token: bool | None = None,
    tls: tuple[Path, Path] | None = None,
    token_file: Path | None = None,
) -> ServerConfig:
    """The one mapping from settings to a server's config, for ``serve`` and the background
    server alike: what is given here wins over ``settings``. Without a port (here or in the
    settings) the server tries the settings' preferred port and falls back to a free one.

    Raises :class:`~projctl.errors.ConfigError` for a TLS certificate or key that cannot
    be loaded, or a bad token file.
    """
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(*tls)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot load the TLS certificate or key: {error}") from None
    chosen_port = port if port is not None else settings.port
    return ServerConfig.for_host(
        settings.host if host is None else host,
        token_file=token_file,
        ssl_context=context,
        require_token=settings.require_token if require_token is None else require_token,
        port=settings.preferred_port if chosen_port is None else chosen_port,
        port_fallback=chosen_port is None if port_fallback is None else port_fallback,
        allow_origins=tuple(allow_origins),
        idle_timeout=idle_timeout or None,
        journal_window=settings.journal_limit,
        max_connections=settings.max_connections,
        default_owner=settings.owner,
    )
