"""The local request/reply protocol between projctl commands and their database's server.

It runs over the server's Unix socket: one JSON object per line each way. A
request is ``{"op": OP, ...arguments}``; a reply is ``{"ok": true, ...result}``
or ``{"ok": false, "error": "one line"}``. The socket lives in the user's
private runtime folder, so reaching it is what authenticates a local command.

This module knows the op names, the framing and how to send one request to an
address; it knows nothing of state files or servers (``runtime`` finds the
address, ``server`` answers). Plain sockets, not WebSocket: a WebSocket client
costs more to import than the whole exchange takes.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from projctl.errors import ServerError, ServerNotAnsweringError, ServerUnavailableError

__all__ = [
    "MAX_MESSAGE",
    "OPS",
    "OP_FORWARD",
    "OP_STATUS",
    "OP_STOP",
    "REQUEST_TIMEOUT",
    "NoReplyError",
    "Request",
    "RequestDecodeError",
    "decode_request",
    "encode_error",
    "encode_reply",
    "encode_request",
    "peer_credentials",
    "request",
]

#: Hand a committed event to the server: arguments ``event`` and ``version``.
OP_FORWARD = "forward"
#: The server's health report (what ``/healthz`` shows, and ``latest_seq``).
OP_STATUS = "status"
#: Ask the server to shut down.
OP_STOP = "stop"
OPS = frozenset({OP_FORWARD, OP_STATUS, OP_STOP})

#: One message either way: a forward of an event with a 10,000-character description
#: fits with room to spare.
MAX_MESSAGE = 1 << 20
REQUEST_TIMEOUT = 10.0


class NoReplyError(ServerError):
    """The server took the request and closed the connection without a reply.

    Not by itself a sign that the server is gone: a server that is still running did
    this because of a bug (its log says which). The caller, who knows the pid, tells.
    """


class RequestDecodeError(ValueError):
    """A line that is not a request of this protocol."""


class Request(NamedTuple):
    """One decoded request: its op and its arguments (everything but ``op``)."""

    op: str
    args: dict[str, Any]


def encode_request(op: str, **args: Any) -> bytes:
    """One request line."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    return orjson.dumps({"op": op, **args}) + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse one request line; :class:`RequestDecodeError` for anything but a known op."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise RequestDecodeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestDecodeError("a request is a JSON object")
    op = value.pop("op", None)
    if not isinstance(op, str) or op not in OPS:
        raise RequestDecodeError(f"unknown op {str(op)[:40]!r}")
    return Request(op, value)


def encode_reply(result: Mapping[str, Any] | None = None) -> bytes:
    """A success reply line carrying ``result``."""
    return orjson.dumps({"ok": True, **(result or {})}) + b"\n"


def encode_error(message: str) -> bytes:
    """A failure reply line."""
    return orjson.dumps({"ok": False, "error": message}) + b"\n"


def peer_credentials(connection: socket.socket) -> tuple[int, int] | None:
    """The ``(pid, uid)`` of the process at the other end of a Unix socket, as the kernel
    vouches for it; ``None`` where the platform cannot tell (``SO_PEERCRED`` is Linux's)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def request(
    address: Path,
    op: str,
    *,
    timeout: float = REQUEST_TIMEOUT,
    expect_pid: int | None = None,
    **args: Any,
) -> dict[str, Any]:
    """Send one request to the server listening at ``address``; return its result.

    Before anything is sent, the kernel's word on the peer is checked: it must run as
    this user and, when ``expect_pid`` is given, be that process. So a request (a
    forward holds a whole project) never reaches another user's socket.

    Raises :class:`~projctl.errors.ServerUnavailableError` when nothing listens
    there (the server is gone), :class:`~projctl.errors.ServerNotAnsweringError` when
    it does not answer within ``timeout`` (hung or stopped: it is there, do not replace
    it), :class:`NoReplyError` when it hangs up without a reply, and
    :class:`~projctl.errors.ServerError` when the peer is not ours, answers garbage or
    refuses.
    """
    line = encode_request(op, **args)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        try:
            connection.connect(str(address))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise ServerUnavailableError(
                f"no server answers on {address}: {error.strerror}"
            ) from None
        except TimeoutError:
            # Its backlog is full and nobody takes from it: a server that is not answering.
            raise ServerNotAnsweringError(
                f"the server did not accept the connection within {round(timeout, 2):g}s"
            ) from None
        except OSError as error:
            raise ServerError(f"cannot reach the server on {address}: {error}") from None
        peer = peer_credentials(connection)
        if peer is not None:
            pid, uid = peer
            if uid != os.geteuid() or (expect_pid is not None and pid != expect_pid):
                raise ServerError(
                    f"the process answering on {address} is not this user's server "
                    f"(pid {pid}, uid {uid}); refusing to talk to it"
                )
        try:
            connection.sendall(line)
            reply = bytearray()
            while not reply.endswith(b"\n") and len(reply) <= MAX_MESSAGE:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise ServerNotAnsweringError(
                f"the server did not answer within {round(timeout, 2):g}s"
            ) from None
        except OSError as error:
            raise ServerError(f"lost the connection to the server: {error}") from None
    return _decode_reply(bytes(reply))


def _decode_reply(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise NoReplyError("the server closed the connection without answering")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ServerError("the server sent a malformed reply") from None
    if not isinstance(value, dict) or not isinstance(value.get("ok"), bool):
        raise ServerError("the server sent a malformed reply")
    if not value.pop("ok"):
        raise ServerError(f"the server refused the request: {value.get('error')}")
    return value
