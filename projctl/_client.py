"""What every client of a projctl server shares: its TLS context, the pauses between
attempts, and the one line for a server that turned it away.

Standard library only: the request/reply client (``remote``) must not import asyncio or
websockets for it, and the feed's subscriber (``subscribe``) uses the same rules.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterator

from projctl.errors import ServerError

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "backoff", "client_tls", "refused", "untrusted"]

#: Waits between attempts grow from the first to the last figure, doubling each time.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


def client_tls(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS client context for a ``wss://`` or ``https://`` URL (``None`` for a plain
    one): the system's CAs, or ``ca_file`` (``PROJCTL_CA_FILE``; ``SSL_CERT_FILE`` is
    honoured by OpenSSL itself)."""
    if not url.startswith(("wss://", "https://")):
        return None
    return ssl.create_default_context(cafile=ca_file)


#: OpenSSL's verify code for a certificate made for another host name.
_HOSTNAME_MISMATCH = 62


def untrusted(error: ssl.SSLCertVerificationError, url: str) -> ServerError:
    """One line for a server whose certificate cannot be trusted, saying what to do: a
    certificate for another name is not fixed by trusting a CA."""
    if error.verify_code == _HOSTNAME_MISMATCH:
        return ServerError(
            f"TLS with {url} failed: its certificate is not for that host name "
            f"({error.verify_message}); use the name the certificate was made for"
        )
    return ServerError(
        f"TLS with {url} failed: {error.verify_message}; trust its CA with PROJCTL_CA_FILE"
    )


def refused(status: int, url: str, *, token_from: str | None = None) -> ServerError:
    """One line for a server that turned a client away for good, saying which token was
    sent (``token_from``: where it came from; ``None``: none) and what to do."""
    if status == 401 and token_from is None:
        return ServerError(
            f"the server at {url} needs a token and none was sent (HTTP 401): set "
            "PROJCTL_TOKEN, PROJCTL_TOKEN_FILE or a context with --token-file"
        )
    if status == 401:
        return ServerError(
            f"the server at {url} does not know the token from {token_from} (HTTP 401): "
            "check it against the server's token file, or set PROJCTL_TOKEN to one it holds"
        )
    if status == 403:
        sent = f"the token from {token_from}" if token_from else "the request"
        return ServerError(
            f"the server at {url} refused {sent} (HTTP 403): a read token may only read; "
            "a change needs a write token"
        )
    return ServerError(f"the server at {url} refused the connection (HTTP {status})")


def backoff(
    first: float | None = None,
    *,
    factor: float = 2.0,
    maximum: float | None = None,
    count: int | None = None,
) -> Iterator[float]:
    """The pauses between attempts: ``first`` (default :data:`BACKOFF_FIRST`), then each
    ``factor`` times longer, up to ``maximum`` (default :data:`BACKOFF_MAX`); ``count`` of
    them (``None``: without end)."""
    start = BACKOFF_FIRST if first is None else first
    top = BACKOFF_MAX if maximum is None else maximum
    pauses = (min(start * factor**n, top) for n in itertools.count())
    return pauses if count is None else itertools.islice(pauses, count)
