"""The local request/reply protocol: framing, decoding, and request() against a real Unix socket."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from projctl import rpc
from projctl.errors import ServerError, ServerNotAnsweringError, ServerUnavailableError
from projctl.rpc import Request, RequestDecodeError

from .conftest import wait_until

#: How long a helper thread may live: every wait in these tests is bounded by it.
THREAD_LIMIT = 10.0

FORWARD_ARGS = {
    "event": {
        "event_type": "project_created",
        "timestamp": "2024-05-01T12:00:00.000000",
        "seq": 7,
        "data": {"project_id": "proj_1", "name": "Ünïcode ✓", "description": "a\nb"},
    },
    "version": [1, 2, 3],
}


# -- encode and decode -------------------------------------------------------------


def test_the_ops_are_forward_status_and_stop() -> None:
    assert sorted(rpc.OPS) == ["forward", "status", "stop"]
    assert (rpc.OP_FORWARD, rpc.OP_STATUS, rpc.OP_STOP) == ("forward", "status", "stop")


@pytest.mark.parametrize("op", sorted(rpc.OPS))
@pytest.mark.parametrize("args", [{}, FORWARD_ARGS], ids=["no-args", "args"])
def test_every_op_round_trips(op: str, args: dict[str, object]) -> None:
    line = rpc.encode_request(op, **args)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one line, whatever the arguments hold
    assert orjson.loads(line) == {"op": op, **args}
    assert rpc.decode_request(line) == Request(op, args)
    assert rpc.decode_request(line.rstrip(b"\n")) == Request(op, args)


def test_encode_request_is_compact_json_with_op_first() -> None:
    assert rpc.encode_request(rpc.OP_STATUS) == b'{"op":"status"}\n'
    assert rpc.encode_request(rpc.OP_FORWARD, version=[1, 2, 3]) == (
        b'{"op":"forward","version":[1,2,3]}\n'
    )


@pytest.mark.parametrize("op", ["launch", "", "STATUS", "status "])
def test_encode_request_refuses_an_unknown_op(op: str) -> None:
    with pytest.raises(ValueError, match=rf"^unknown op {re.escape(repr(op))}\Z"):
        rpc.encode_request(op)


@pytest.mark.parametrize("line", [b"", b"garbage", b"{", b'{"op": "status"', b"\xff\xfe"])
def test_decode_request_refuses_what_is_not_json(line: bytes) -> None:
    with pytest.raises(RequestDecodeError) as raised:
        rpc.decode_request(line)
    assert str(raised.value).startswith("not JSON: ")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("line", [b"[]", b'["status"]', b'"status"', b"1", b"null", b"true"])
def test_decode_request_refuses_what_is_not_an_object(line: bytes) -> None:
    with pytest.raises(RequestDecodeError) as raised:
        rpc.decode_request(line)
    assert str(raised.value) == "a request is a JSON object"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{}", "unknown op 'None'"),
        (b'{"event": {}}', "unknown op 'None'"),
        (b'{"op": null}', "unknown op 'None'"),
        (b'{"op": "launch"}', "unknown op 'launch'"),
        (b'{"op": "STATUS"}', "unknown op 'STATUS'"),
        (b'{"op": 1}', "unknown op '1'"),
        (b'{"op": true}', "unknown op 'True'"),
        (b'{"op": "' + b"x" * 100 + b'"}', f"unknown op {'x' * 40!r}"),
    ],
)
def test_decode_request_refuses_a_missing_or_unknown_op(line: bytes, message: str) -> None:
    with pytest.raises(RequestDecodeError) as raised:
        rpc.decode_request(line)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"op": []}', "unknown op '[]'"),
        (b'{"op": {}}', "unknown op '{}'"),
        (b'{"op": ["status"]}', "unknown op \"['status']\""),
    ],
)
def test_decode_request_refuses_an_op_of_the_wrong_kind(line: bytes, message: str) -> None:
    # An unhashable op must be refused like any other unknown op (RequestDecodeError,
    # which the server answers), not escape as a TypeError.
    with pytest.raises(RequestDecodeError) as raised:
        rpc.decode_request(line)
    assert str(raised.value) == message


def test_encode_reply_shapes() -> None:
    assert rpc.encode_reply() == b'{"ok":true}\n'
    assert rpc.encode_reply(None) == b'{"ok":true}\n'
    assert rpc.encode_reply({}) == b'{"ok":true}\n'
    assert rpc.encode_reply({"seq": 3, "latest_seq": 7}) == b'{"ok":true,"seq":3,"latest_seq":7}\n'


def test_encode_error_shape_is_one_line() -> None:
    assert rpc.encode_error("boom") == b'{"ok":false,"error":"boom"}\n'
    assert rpc.encode_error("two\nlines") == b'{"ok":false,"error":"two\\nlines"}\n'


# -- request() against a real Unix socket ------------------------------------------


@dataclass
class FakeServer:
    """A one-connection server on a Unix socket, run in a thread."""

    address: Path
    #: The bytes it read from its one connection, up to the first newline.
    received: list[bytes] = field(default_factory=list)
    #: Set when the test is done: a server told to hang waits for it.
    release: threading.Event = field(default_factory=threading.Event)


Respond = Callable[[socket.socket, FakeServer], None]


@pytest.fixture
def short_folder() -> Iterator[Path]:
    """A fresh folder under /tmp: a Unix socket path must stay under 100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="projctl-rpc-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def serve(short_folder: Path) -> Iterator[Callable[[Respond], FakeServer]]:
    """Start a server that reads one request line, then lets ``respond`` answer it (or not)."""
    started: list[tuple[threading.Thread, socket.socket, FakeServer]] = []
    failures: list[BaseException] = []

    def start(respond: Respond) -> FakeServer:
        server = FakeServer(short_folder / f"s{len(started)}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(server.address))
        listener.listen(1)
        listener.settimeout(THREAD_LIMIT)

        def run() -> None:
            try:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(THREAD_LIMIT)
                    line = bytearray()
                    while not line.endswith(b"\n"):
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        line += chunk
                    server.received.append(bytes(line))
                    respond(connection, server)
            except BaseException as error:  # reported by the fixture, not lost in the thread
                failures.append(error)

        thread = threading.Thread(target=run, name="fake rpc server", daemon=True)
        thread.start()
        started.append((thread, listener, server))
        return server

    yield start
    for thread, listener, server in started:
        server.release.set()
        thread.join(THREAD_LIMIT)
        listener.close()
        assert not thread.is_alive(), "the fake server thread did not finish"
    assert failures == []


def reply_with(*chunks: bytes) -> Respond:
    def respond(connection: socket.socket, server: FakeServer) -> None:
        for chunk in chunks:
            connection.sendall(chunk)
        # Keep the connection open: the client must stop at the newline, not wait for EOF.
        server.release.wait(THREAD_LIMIT)

    return respond


def test_request_returns_the_result_without_ok(serve: Callable[[Respond], FakeServer]) -> None:
    server = serve(reply_with(rpc.encode_reply({"seq": 7, "latest_seq": 9})))
    result = rpc.request(server.address, rpc.OP_FORWARD, timeout=THREAD_LIMIT, **FORWARD_ARGS)
    assert result == {"seq": 7, "latest_seq": 9}
    assert server.received == [rpc.encode_request(rpc.OP_FORWARD, **FORWARD_ARGS)]


def test_request_with_an_empty_result(serve: Callable[[Respond], FakeServer]) -> None:
    server = serve(reply_with(rpc.encode_reply()))
    assert rpc.request(server.address, rpc.OP_STOP, timeout=THREAD_LIMIT) == {}
    assert server.received == [b'{"op":"stop"}\n']


def test_request_reads_a_reply_longer_than_one_read(
    serve: Callable[[Respond], FakeServer],
) -> None:
    padding = "p" * 300_000  # several recv() calls of 64 KiB
    server = serve(reply_with(rpc.encode_reply({"pad": padding})))
    assert rpc.request(server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT) == {"pad": padding}


def test_a_reply_closed_without_a_newline_still_counts(
    serve: Callable[[Respond], FakeServer],
) -> None:
    server = serve(lambda connection, _server: connection.sendall(b'{"ok": true, "n": 1}'))
    assert rpc.request(server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT) == {"n": 1}


def test_a_refusal_raises_server_error_with_its_message(
    serve: Callable[[Respond], FakeServer],
) -> None:
    server = serve(reply_with(rpc.encode_error("x")))
    with pytest.raises(ServerError) as raised:
        rpc.request(server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert type(raised.value) is ServerError
    assert str(raised.value) == "the server refused the request: x"


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\n",
        b"[1, 2]\n",
        b'"ok"\n',
        b"{}\n",
        b'{"ok": "yes"}\n',
        b'{"ok": 1}\n',
        b'{"ok": null, "error": "x"}\n',
    ],
)
def test_a_malformed_reply_raises_server_error(
    serve: Callable[[Respond], FakeServer], reply: bytes
) -> None:
    server = serve(reply_with(reply))
    with pytest.raises(ServerError) as raised:
        rpc.request(server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert type(raised.value) is ServerError
    assert str(raised.value) == "the server sent a malformed reply"


def test_a_reply_without_end_is_cut_off_at_max_message(
    serve: Callable[[Respond], FakeServer],
) -> None:
    def respond(connection: socket.socket, server: FakeServer) -> None:
        # More than MAX_MESSAGE, no newline, and the connection stays open: a client
        # that did not bound its read would wait for the rest until its timeout.
        try:
            connection.sendall(b'{"ok": true, "pad": "' + b"x" * (rpc.MAX_MESSAGE * 2))
        except OSError:
            return  # the client stopped reading and hung up
        server.release.wait(THREAD_LIMIT)

    server = serve(respond)
    started = time.monotonic()
    with pytest.raises(ServerError) as raised:
        rpc.request(server.address, rpc.OP_STATUS, timeout=5.0)
    assert type(raised.value) is ServerError
    assert str(raised.value) == "the server sent a malformed reply"
    assert time.monotonic() - started < 4.0


def test_a_server_that_hangs_up_without_answering_is_no_reply_not_gone(
    serve: Callable[[Respond], FakeServer],
) -> None:
    """Only the caller, who knows the server's pid, can tell a bug from a server going."""
    server = serve(lambda _connection, _server: None)  # reads the request, closes
    with pytest.raises(rpc.NoReplyError) as raised:
        rpc.request(server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert str(raised.value) == "the server closed the connection without answering"
    assert server.received == [b'{"op":"status"}\n']


def test_a_server_that_never_answers_times_out(serve: Callable[[Respond], FakeServer]) -> None:
    server = serve(lambda _connection, server: server.release.wait(THREAD_LIMIT))
    started = time.monotonic()
    with pytest.raises(ServerError) as raised:
        rpc.request(server.address, rpc.OP_STATUS, timeout=0.3)
    elapsed = time.monotonic() - started
    # Not "unavailable": it is there, so it must never be replaced by a second server.
    assert type(raised.value) is ServerNotAnsweringError
    assert str(raised.value) == "the server did not answer within 0.3s"
    assert 0.25 <= elapsed < 3.0


def test_no_socket_at_the_address_is_unavailable(short_folder: Path) -> None:
    address = short_folder / "missing.sock"
    with pytest.raises(ServerUnavailableError) as raised:
        rpc.request(address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert str(raised.value) == f"no server answers on {address}: {os.strerror(errno.ENOENT)}"


def test_a_socket_file_nobody_listens_on_is_unavailable(short_folder: Path) -> None:
    address = short_folder / "left.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as abandoned:
        abandoned.bind(str(address))  # the file stays; nobody ever listens
    assert address.is_socket()
    with pytest.raises(ServerUnavailableError) as raised:
        rpc.request(address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert str(raised.value) == (
        f"no server answers on {address}: {os.strerror(errno.ECONNREFUSED)}"
    )


def test_an_address_too_long_for_a_socket_is_a_permanent_error() -> None:
    address = Path("/tmp") / ("x" * 200)
    with pytest.raises(ServerError) as raised:
        rpc.request(address, rpc.OP_STATUS, timeout=THREAD_LIMIT)
    assert type(raised.value) is ServerError
    assert str(raised.value).startswith(f"cannot reach the server on {address}: ")


def test_request_refuses_an_unknown_op_before_connecting(short_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"^unknown op 'launch'\Z"):
        rpc.request(short_folder / "missing.sock", "launch")
    assert not (short_folder / "missing.sock").exists()


# -- the peer check: only this user's server, and the expected process ---------------

needs_peercred = pytest.mark.skipif(
    not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux's"
)


@needs_peercred
def test_peer_credentials_are_the_kernels_word() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert rpc.peer_credentials(left) == (os.getpid(), os.geteuid())


def test_request_to_the_expected_pid(serve: Callable[[Respond], FakeServer]) -> None:
    server = serve(reply_with(rpc.encode_reply({"latest_seq": 1})))
    result = rpc.request(
        server.address, rpc.OP_STATUS, timeout=THREAD_LIMIT, expect_pid=os.getpid()
    )
    assert result == {"latest_seq": 1}


@needs_peercred
def test_request_to_another_process_is_refused_before_anything_is_sent(
    serve: Callable[[Respond], FakeServer],
) -> None:
    server = serve(lambda _connection, _server: None)
    other = os.getpid() + 1
    with pytest.raises(ServerError) as raised:
        rpc.request(
            server.address, rpc.OP_FORWARD, timeout=THREAD_LIMIT, expect_pid=other, **FORWARD_ARGS
        )
    assert type(raised.value) is ServerError
    assert str(raised.value) == (
        f"the process answering on {server.address} is not this user's server "
        f"(pid {os.getpid()}, uid {os.geteuid()}); refusing to talk to it"
    )
    # The forward (a whole project) never left: the server read only the hang-up.
    assert wait_until(lambda: server.received, what="the server read its connection") == [b""]
