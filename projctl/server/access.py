"""Who may do what: Host and Origin checks, read and write tokens, the token and key files."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from projctl import runtime

#: Browsers on these origins (any port) may subscribe without being allowed explicitly.
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")


#: A browser cannot set headers on a WebSocket: it offers the token as this subprotocol.
_TOKEN_PROTOCOL = "projctl-token."
#: Listening on every address: every name is ours.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def read_token_file(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The read and write tokens of a token file: one ``read: TOKEN`` or ``write: TOKEN`` a
    line (``#`` comments and blank lines allowed).

    Refused (:class:`~projctl.errors.ConfigError`) unless it is a regular file that nobody
    but its owner may read (mode 0600 or stricter), and holds at least one write token.
    """
    from projctl.errors import ConfigError

    try:
        status = os.stat(path)
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the token file {path}: {error.strerror}") from None
    _refuse_unless_private(path, status, "token file")
    read: set[str] = set()
    write: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, token = line.partition(":")
        token = token.strip()
        # Visible ASCII only, as PROJCTL_TOKEN: what a client can send in a header.
        visible = all("!" <= char <= "~" for char in token)
        if kind.strip() not in ("read", "write") or len(token) < 16 or not visible:
            raise ConfigError(
                f"{path}, line {number}: expected 'read: TOKEN' or 'write: TOKEN' "
                "(a token of 16 or more visible ASCII characters)"
            )
        (read if kind.strip() == "read" else write).add(token)
    if not write:
        raise ConfigError(f"the token file {path} has no write token")
    return frozenset(read), frozenset(write)


def check_key_file(path: Path) -> None:
    """Refuse (:class:`~projctl.errors.ConfigError`) a TLS private key file that is not a
    regular file only its owner may read (mode 0600 or stricter), as a token file is."""
    from projctl.errors import ConfigError

    try:
        status = os.stat(path)
    except OSError as error:
        raise ConfigError(f"cannot read the key file {path}: {error.strerror}") from None
    _refuse_unless_private(path, status, "key file")


def _refuse_unless_private(path: Path, status: os.stat_result, what: str) -> None:
    from projctl.errors import ConfigError

    mode = stat.S_IMODE(status.st_mode)
    if not stat.S_ISREG(status.st_mode) or mode & 0o077:
        raise ConfigError(
            f"the {what} {path} may be read by others (mode {mode:04o}); chmod 600 it"
        )


#: One label of a host name (RFC 1123): letters, digits and inner hyphens.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: A ``Host`` header: a host name or IPv4 address, or a bracketed IPv6 address; then an
#: optional ``:port`` of digits. Nothing else (no ``@``, no text after the ``]``).
_HOST_HEADER = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>\d{{1,5}}))?"
)
#: Where a token may travel as ``?token=``: only a plain server's ``/ws`` (the subscriber
#: URL of the README); everywhere else, and on every TLS server, it goes in a header.
_QUERY_TOKEN_PATHS = frozenset({"/ws"})


def canonical_host(header: str | None) -> str | None:
    """A ``Host`` header as ``name[:port]`` (lower case), or ``None`` when it is not one:
    a host name, an IPv4 address or a bracketed IPv6 address, and an optional port."""
    if header is None:
        return None
    match = _HOST_HEADER.fullmatch(header.strip().lower())
    if match is None or len(match["host"]) > 255:
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    port = match["port"]
    if port is not None and int(port) > 65535:
        return None
    return match[0]


@dataclass(frozen=True)
class AccessPolicy:
    """Who may do what: the one place that decides on ``Host``, ``Origin`` and tokens.

    - Every request must name this server in a well-formed ``Host`` (421 otherwise).
    - Every route has the same ``Origin`` rule: no ``Origin`` (not a browser), a page on
      loopback, one of ``allow_origins``, or the server's own pages.
    - Tokens travel in headers (``Authorization: Bearer``, or a browser's subprotocol
      ``projctl-token.<token>``); ``?token=`` only on a plain server's ``/ws``.
    - When read tokens exist, reading needs one, and so does the detail of ``/healthz``
      (behind a reverse proxy every client arrives from loopback); otherwise loopback
      clients see the detail.
    """

    host: str
    allow_origins: tuple[str, ...] = ()
    read_tokens: frozenset[str] = frozenset()
    write_tokens: frozenset[str] = frozenset()
    tls: bool = False

    @property
    def tokens_required(self) -> bool:
        """Whether reading (subscribing, the HTTP API, ``/healthz`` detail) needs a token."""
        return bool(self.read_tokens)

    def host_allowed(self, header: str | None) -> bool:
        """Whether ``Host`` is well formed and names this server: a page that reached us
        through a rebound DNS name (``evil.example`` resolving to 127.0.0.1) is turned away."""
        host = canonical_host(header)
        if host is None:
            return False
        name = host[1 : host.index("]")] if host.startswith("[") else host.partition(":")[0]
        listening = self.host.lower()
        if listening in _WILDCARD_HOSTS:
            return True  # any name reaches it; beyond loopback a token guards it
        return name == listening or runtime.is_loopback(name)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser page at ``origin`` may use any route: no Origin (not a
        browser), a page on loopback, one of ``allow_origins``, or the server's own pages
        (the dashboard is served from the very ``Host`` the request names)."""
        allowed = self.allow_origins
        own = canonical_host(host)
        return (
            origin is None
            or "*" in allowed
            or origin in allowed
            or _LOCAL_ORIGIN.fullmatch(origin) is not None
            or (own is not None and origin in (f"http://{own}", f"https://{own}"))
        )

    def token_in_url_refused(self, path: str, query: str) -> bool:
        """Whether a request carries ``?token=`` where a token may not travel in a URL."""
        if "token" not in parse_qs(query, keep_blank_values=True):
            return False
        return self.tls or path not in _QUERY_TOKEN_PATHS

    def presented_token(self, headers: Any, path: str) -> str | None:
        """The known token a request carries, found in constant time; ``None`` when it
        carries none. ``headers`` is the request's; ``path`` its target with the query."""
        # Several Sec-WebSocket-Protocol lines are legal: their values combine.
        get_all = getattr(headers, "get_all", None)
        offered = (
            ", ".join(get_all("Sec-WebSocket-Protocol"))
            if get_all is not None
            else headers.get("Sec-WebSocket-Protocol", "")
        )
        candidates = [
            item.strip().removeprefix(_TOKEN_PROTOCOL)
            for item in offered.split(",")
            if item.strip().startswith(_TOKEN_PROTOCOL)
        ]
        scheme, _, bearer = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(bearer.strip())
        url = urlsplit(path)
        if not self.token_in_url_refused(url.path, url.query):
            candidates += parse_qs(url.query).get("token", [])
        for candidate in candidates:
            given = candidate.encode("utf-8", "surrogateescape")
            for token in self.read_tokens | self.write_tokens:
                if hmac.compare_digest(given, token.encode()):
                    return token
        return None

    def may_read(self, token: str | None) -> bool:
        """Whether a client holding ``token`` (``None``: none) may subscribe and read."""
        return not self.tokens_required or token is not None

    def may_write(self, token: str | None) -> bool:
        """Whether a client holding ``token`` may write through the team protocol."""
        return token is not None and token in self.write_tokens

    def shows_health_detail(self, peer: str | None, token: str | None) -> bool:
        """Whether ``/healthz`` tells this client pid, paths, URL and uptime: a token
        holder; or, on a server that asks for no read token, a client on loopback."""
        if token is not None:
            return True
        return not self.tokens_required and peer is not None and runtime.is_loopback(peer)
