"""Accepted sockets: counted from their accept, TLS handshakes in turn, HTTP/1.1 exchanges
until a WebSocket upgrade, memory handed back.

Every accepted socket speaks HTTP/1.1 first, through h11: requests with bodies, every
method, keep-alive, ``HEAD``. A ``GET`` that asks for a WebSocket upgrade is handed, bytes
and all, to websockets, which does the opening handshake (its ``process_request`` checks
it) and then the frames: websockets parses only the upgrade, never a request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import logging
import ssl
import time
from asyncio import sslproto
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import h11
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from projctl.server.config import ServerConfig

log = logging.getLogger("projctl.server")


#: Accepted sockets kept past ``max_connections``: room to answer a 503, and for ``/healthz``.
_SPARE_SLOTS = 2
#: After a burst of at least this many TLS handshakes, freed memory is handed back.
_TRIM_AFTER_HANDSHAKES = 32
#: Connections the kernel queues until the server accepts them (asyncio's default is 100):
#: a burst of clients larger than the queue while the loop is busy would see SYNs dropped.
#: asyncio also accepts up to this many in one step, each costing a connection object.
LISTEN_BACKLOG = 256
#: A request's line and headers together, at most (a browser's are about 1 KiB).
MAX_REQUEST_HEAD = 16 * 1024
#: A request body, at most: a write is a few hundred bytes, an emitted event's data at
#: most 64 KiB. A larger one gets 413 before it is read.
MAX_REQUEST_BODY = 256 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """One plain HTTP request (not a WebSocket upgrade), its body read in full.

    ``headers`` keeps every line as sent (a repeated header stays repeated); ``peer`` is
    the client's address, ``None`` when the socket cannot tell.
    """

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    peer: str | None = None

    @property
    def path(self) -> str:
        """The target without its query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        """The target's query, without the ``?``."""
        return urlsplit(self.target).query


class ConnectionCounter(Protocol):
    """What a counted connection needs from its server (``BroadcastServer`` is one)."""

    config: ServerConfig
    _tls_turns: asyncio.Semaphore

    def _admit(self, connection: _CountedConnection) -> bool: ...
    def _release(self, connection: _CountedConnection) -> None: ...
    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...
    def _tls_started(self) -> None: ...
    def _tls_ended(self) -> None: ...
    async def answer_http(self, request: HttpRequest) -> Response: ...


class _CountedConnection(ServerConnection):
    """A connection counted from the moment its socket is accepted, not from its handshake.

    ``serve`` makes one for each accepted socket (its documented ``create_connection``
    hook), before a byte is read: past the server's cap it is closed at once. With TLS the
    handshake is done here, with ``loop.start_tls``, at most ``max_handshakes`` at a time and
    within ``handshake_timeout``: when asyncio did it for ``serve``, every accepted socket got
    its TLS buffers (256 KiB each) before websockets, and so the cap, ever saw it.

    Then it speaks HTTP/1.1 (see the module's docstring): each request is answered by the
    server's :meth:`ConnectionCounter.answer_http`, one at a time, on a kept connection
    that closes when idle for ``handshake_timeout``; a WebSocket upgrade turns it into the
    websockets connection it is.
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
        #: The HTTP/1.1 state while this is not (yet) a WebSocket; ``None`` once upgraded.
        self._http: h11.Connection | None = None
        self._head: h11.Request | None = None
        self._body = bytearray()
        self._answering = False
        self._idle: asyncio.TimerHandle | None = None

    @property
    def upgraded(self) -> bool:
        """Whether this connection became a WebSocket (its HTTP part is over)."""
        return self.wire is not None and self._http is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        accepted = cast(asyncio.Transport, transport)
        if not self.owner._admit(self):
            accepted.abort()
            return
        context = self.owner.config.ssl_context
        if context is None:
            self._open(accepted)
            return
        accepted.pause_reading()  # not a byte is read as HTTP before TLS
        self.owner._spawn(self._start_tls(accepted, context))

    def _open(self, transport: asyncio.Transport) -> None:
        self.wire = transport
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._wait_for_request()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

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
                secured = await _start_tls(
                    accepted, self, context, handshake_timeout=owner.config.handshake_timeout
                )
            finally:
                owner._tls_ended()
        if secured is None:
            raise ConnectionResetError("closed during the TLS handshake")
        return secured

    def data_received(self, data: bytes) -> None:
        if self.wire is None:
            # TLS 1.3 may deliver the request with the end of the handshake, before
            # start_tls() has returned: keep it for when the connection opens.
            self._early.append(data)
            return
        if self._http is None:
            super().data_received(data)
            return
        self._http.receive_data(data)
        self._next_requests()

    def eof_received(self) -> None:
        if self.upgraded:
            super().eof_received()
        elif self._http is not None:
            self._http.receive_data(b"")
            self._next_requests()
        # else: nothing was opened yet. Returning None closes the transport: the client
        # sends no more, and an answer still in flight is moot.

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_idle_timer()
        self.owner._release(self)
        if self.upgraded:
            super().connection_lost(exc)

    def unsent_bytes(self) -> int:
        """Bytes written to this connection that its peer has not taken yet."""
        return self.wire.get_write_buffer_size() if self.wire is not None else 0

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self.wire is not None:
            self.wire.abort()

    def close_if_http(self) -> None:
        """Close the connection unless it became a WebSocket (which closes with a code)."""
        if self.wire is not None and self._http is not None:
            self.wire.close()

    # -- HTTP/1.1 ----------------------------------------------------------------

    def _next_requests(self) -> None:
        """Take the events h11 has parsed, until it needs more bytes or a request is
        being answered (the next one, pipelined or not, waits for its turn)."""
        http = self._http
        while http is not None and not self._answering and not self._lost:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as error:
                self._refuse(error.error_status_hint, str(error))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if _asks_for_websocket(event):
                    self._upgrade(event, http.trailing_data[0])
                    return
                self._head, self._body = event, bytearray()
                if not self._take_head(http, event):
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_REQUEST_BODY:
                    self._refuse(413, f"a request body is at most {MAX_REQUEST_BODY} bytes")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._answer_request()
            elif isinstance(event, h11.ConnectionClosed):
                if self.wire is not None:
                    self.wire.close()
                return

    def _take_head(self, http: h11.Connection, head: h11.Request) -> bool:
        """Check a request's head before its body is read; ``False`` when it was refused."""
        self._stop_idle_timer()
        length = _content_length(head)
        if length is not None and length > MAX_REQUEST_BODY:
            self._refuse(413, f"a request body is at most {MAX_REQUEST_BODY} bytes")
            return False
        if http.they_are_waiting_for_100_continue:
            self._write(http.send(h11.InformationalResponse(status_code=100, headers=[])))
        # A body has as long as a first request to arrive.
        self._wait_for_request()
        return True

    def _answer_request(self) -> None:
        head, body = self._head, bytes(self._body)
        assert head is not None
        assert self.wire is not None
        self._head, self._body = None, bytearray()
        self._stop_idle_timer()
        self._answering = True
        self.wire.pause_reading()  # the next request waits in the socket, not in memory
        peer = self.wire.get_extra_info("peername")
        request = HttpRequest(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("ascii", "surrogateescape"),
            headers=Headers(
                # A value's bytes above 0x7f are latin-1, as HTTP has it (obs-text): never
                # a surrogate, which websockets' Headers (rightly) refuses.
                (name.decode("ascii", "replace"), value.decode("latin-1"))
                for name, value in head.headers.raw_items()
            ),
            body=body,
            peer=str(peer[0]) if isinstance(peer, tuple) and peer else None,
        )
        self.owner._spawn(self._answer(request))

    async def _answer(self, request: HttpRequest) -> None:
        try:
            response = await self.owner.answer_http(request)
        except Exception:
            # A bug of ours: the client gets a 500, the log the traceback; the
            # connection stays usable.
            log.exception("internal error answering %s %s", request.method, request.path)
            response = _plain_response(500, "internal error; see the server log")
        self._answering = False
        if self._lost or self._http is None:
            return
        self._send(self._http, response, head_only=request.method == "HEAD")
        http = self._http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            self._wait_for_request()
            if self.wire is not None:
                self.wire.resume_reading()
            self._next_requests()
        elif self.wire is not None:
            self.wire.close()

    def _send(self, http: h11.Connection, response: Response, *, head_only: bool = False) -> None:
        headers = [(name, value) for name, value in response.headers.raw_items()]
        names = {name.lower() for name, _ in headers}
        if "date" not in names:
            headers.append(("Date", _http_date()))
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(response.body))))
        try:
            data = http.send(
                h11.Response(
                    status_code=response.status_code,
                    headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
                    reason=response.reason_phrase.encode("latin-1"),
                )
            )
            # A HEAD answer has the GET's headers, Content-Length included, and no body.
            if response.body and not head_only:
                data = (data or b"") + (http.send(h11.Data(data=bytes(response.body))) or b"")
            data = (data or b"") + (http.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as error:
            log.error("could not send the answer: %s", error)
            if self.wire is not None:
                self.wire.abort()
            return
        self._write(data)

    def _write(self, data: bytes | None) -> None:
        if data and self.wire is not None and not self._lost:
            self.wire.write(data)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be read (malformed, too large) and close."""
        http = self._http
        if http is not None and http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = _plain_response(status, message)
            response.headers["Connection"] = "close"
            self._send(http, response)
        if self.wire is not None:
            self.wire.close()

    def _upgrade(self, head: h11.Request, rest: bytes) -> None:
        """Hand the connection to websockets, with the request as it came."""
        assert self.wire is not None
        self._stop_idle_timer()
        self._http = None
        request = b"".join(
            [
                head.method + b" " + head.target + b" HTTP/" + head.http_version + b"\r\n",
                *(name + b": " + value + b"\r\n" for name, value in head.headers.raw_items()),
                b"\r\n",
                rest,
            ]
        )
        super().connection_made(self.wire)  # websockets starts its handshake here
        super().data_received(request)

    def _wait_for_request(self) -> None:
        """Close the connection unless a (next) request arrives within the handshake time:
        a kept connection costs a socket, and a request sent a byte at a time holds one."""
        self._stop_idle_timer()
        if self.wire is not None:
            self._idle = asyncio.get_running_loop().call_later(
                self.owner.config.handshake_timeout, self._close_idle
            )

    def _stop_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self) -> None:
        self._idle = None
        if self.wire is not None and self._http is not None and not self._answering:
            self.wire.close()


#: The most a TLS record takes on the wire: a 5-byte header and at most 2^14 bytes of
#: data plus 2,048 of expansion (RFC 5246 6.2.3; TLS 1.3 allows only 256, RFC 8446 5.2).
TLS_RECORD_MAX = 5 + 2**14 + 2048


class _RecordSizedTLS(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a read buffer the size of one TLS record.

    asyncio gives every TLS connection a 256 KiB buffer to receive ciphertext into (and
    fills it with zeros, so it is resident at once), whatever the connection carries: an
    idle subscriber paid for it for as long as it stayed. The buffer only stages what one
    ``recv`` returns before OpenSSL's memory BIO takes it, so any size is correct; a
    record's worth means a whole record still arrives in one ``recv``, and only a client
    streaming more than that at once (none of ours: requests are small, subscribers
    send nothing) needs more of them. Plaintext is read out with the same bound, which a
    record's data (at most 16 KiB) never exceeds.
    """

    max_size = TLS_RECORD_MAX


async def _start_tls(
    accepted: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    handshake_timeout: float,
) -> asyncio.Transport | None:
    """``loop.start_tls(accepted, protocol, context, server_side=True)``, with
    :class:`_RecordSizedTLS` as the TLS layer: the same steps as asyncio's own (which
    offers no way to choose the buffer's size). Returns the secured transport."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = _RecordSizedTLS(
        loop,
        protocol,
        context,
        waiter,
        server_side=True,
        call_connection_made=False,
        # typeshed says int; asyncio takes any positive number of seconds.
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
    )
    # Paused until the TLS layer has the transport, so no data reaches it before.
    accepted.pause_reading()
    accepted.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, accepted)
    resumed = loop.call_soon(accepted.resume_reading)
    try:
        await waiter
    except BaseException:
        accepted.close()
        made.cancel()
        resumed.cancel()
        raise
    secured: asyncio.Transport | None = tls._app_transport
    return secured


def _asks_for_websocket(head: h11.Request) -> bool:
    """Whether a request is a WebSocket opening handshake (websockets checks the rest)."""
    if head.method != b"GET":
        return False
    return any(name == b"upgrade" and b"websocket" in value.lower() for name, value in head.headers)


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is digits, and one value
    return None


def _plain_response(status: int, message: str) -> Response:
    import http

    body = f"{message}\n".encode()
    return Response(
        status,
        http.HTTPStatus(status).phrase,
        Headers(
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Content-Type-Options", "nosniff"),
            ]
        ),
        body,
    )


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header's value now (formatted once a second)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


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
