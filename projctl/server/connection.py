"""Accepted sockets: counted from their accept, TLS handshakes in turn, memory handed back."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from websockets.asyncio.server import ServerConnection

from projctl.server.config import ServerConfig

log = logging.getLogger("projctl.server")


#: Accepted sockets kept past ``max_connections``: room to answer a 503, and for ``/healthz``.
_SPARE_SLOTS = 2
#: After a burst of at least this many TLS handshakes, freed memory is handed back.
_TRIM_AFTER_HANDSHAKES = 32


class ConnectionCounter(Protocol):
    """What a counted connection needs from its server (``BroadcastServer`` is one)."""

    config: ServerConfig
    _tls_turns: asyncio.Semaphore

    def _admit(self, connection: _CountedConnection) -> bool: ...
    def _release(self, connection: _CountedConnection) -> None: ...
    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...
    def _tls_started(self) -> None: ...
    def _tls_ended(self) -> None: ...


class _CountedConnection(ServerConnection):
    """A connection counted from the moment its socket is accepted, not from its handshake.

    ``serve`` makes one for each accepted socket (its documented ``create_connection``
    hook), before a byte is read: past the server's cap it is closed at once. With TLS the
    handshake is done here, with ``loop.start_tls``, at most ``max_handshakes`` at a time and
    within ``handshake_timeout``: when asyncio did it for ``serve``, every accepted socket got
    its TLS buffers (256 KiB each) before websockets, and so the cap, ever saw it.
    """

    #: The server that counts this connection (set on the subclass each server makes).
    owner: ConnectionCounter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The transport asyncio handed this protocol (for TLS, once its handshake is done):
        #: its write buffer is what a subscriber holds unsent. Kept here, through asyncio's
        #: protocol contract, because websockets does not document its own ``transport``.
        self.wire: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        accepted = cast(asyncio.Transport, transport)
        if not self.owner._admit(self):
            accepted.abort()
            return
        context = self.owner.config.ssl_context
        if context is None:
            self._open(accepted)
            return
        accepted.pause_reading()  # not a byte reaches the WebSocket protocol before TLS
        self.owner._spawn(self._start_tls(accepted, context))

    def _open(self, transport: asyncio.Transport) -> None:
        self.wire = transport
        super().connection_made(transport)  # websockets starts its handshake here
        for data in self._early:
            super().data_received(data)
        self._early = []

    async def _start_tls(self, accepted: asyncio.Transport, context: ssl.SSLContext) -> None:
        timeout = self.owner.config.handshake_timeout
        try:
            secured = await asyncio.wait_for(self._tls_handshake(accepted, context), timeout)
        except Exception as error:  # a timeout, a bad or abandoned handshake: this one only
            log.debug("TLS handshake failed: %r", error)
            accepted.abort()
            self.owner._release(self)
            return
        except BaseException:
            accepted.abort()
            self.owner._release(self)
            raise
        if self._lost:
            return
        self._open(secured)

    async def _tls_handshake(
        self, accepted: asyncio.Transport, context: ssl.SSLContext
    ) -> asyncio.Transport:
        owner = self.owner
        async with owner._tls_turns:
            owner._tls_started()
            try:
                secured = await asyncio.get_running_loop().start_tls(
                    accepted,
                    self,
                    context,
                    server_side=True,
                    ssl_handshake_timeout=owner.config.handshake_timeout,
                )
            finally:
                owner._tls_ended()
        if secured is None:
            raise ConnectionResetError("closed during the TLS handshake")
        return secured

    def data_received(self, data: bytes) -> None:
        if self.wire is None:
            # TLS 1.3 may deliver the request with the end of the handshake, before
            # start_tls() has returned: keep it for the WebSocket protocol.
            self._early.append(data)
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self.wire is not None:
            super().eof_received()
        # else: returning None closes the transport; nothing was opened yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.owner._release(self)
        if self.wire is not None:
            super().connection_lost(exc)

    def unsent_bytes(self) -> int:
        """Bytes written to this connection that its peer has not taken yet."""
        return self.wire.get_write_buffer_size() if self.wire is not None else 0

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self.wire is not None:
            self.wire.abort()


def _counted(connection: ServerConnection) -> _CountedConnection:
    """Every connection this server's ``serve`` makes is a :class:`_CountedConnection`."""
    return cast(_CountedConnection, connection)


def _return_memory() -> None:
    """Collect what only the cycle collector frees, then hand free heap pages back."""
    gc.collect()
    _malloc_trim()


def _malloc_trim() -> None:
    """Ask glibc to return free heap pages to the system (``malloc_trim(0)``), where it can."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)
