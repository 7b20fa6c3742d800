"""The data path's socket calls (`arp.net.sockio`): the C ones and the socket module's agree,
over real sockets, in what they move and in what they raise."""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arp import native
from arp.net import sockio
from arp.protocol.tunnel import HEADER


@dataclass(frozen=True)
class Calls:
    name: str
    recv_into: Callable[[socket.socket, bytearray, int], int]
    recv_frame: Callable[[socket.socket, bytearray], int]
    send: Callable[[socket.socket, bytes | bytearray | memoryview, int, int, int], int]
    dispatch: Callable[..., list[tuple[Any, int]] | None]
    forward_frame: Callable[[socket.socket, socket.socket, bytearray], int | tuple[int, int]]
    frame_out: Callable[[socket.socket, socket.socket, bytearray], int | tuple[int, int]]
    forward_if_same: Callable[
        [socket.socket, socket.socket, bytearray, bytes, bytes], int | tuple[int, int]
    ]


def _implementations() -> list[Calls]:
    calls = [
        Calls(
            "socket module",
            sockio._recv_into,
            sockio._recv_frame,
            sockio._send,
            sockio._dispatch,
            sockio._forward_frame,
            sockio._frame_out,
            sockio._forward_if_same,
        )
    ]
    if native.active():
        from arp.net import _sockio

        calls.append(
            Calls(
                "C",
                _sockio.recv_into,
                _sockio.recv_frame,
                _sockio.send,
                _sockio.dispatch,
                _sockio.forward_frame,
                _sockio.frame_out,
                _sockio.forward_if_same,
            )
        )
    return calls


IMPLEMENTATIONS = _implementations()
each = pytest.mark.parametrize("calls", IMPLEMENTATIONS, ids=lambda calls: calls.name)


def _wait_readable(sock: socket.socket) -> None:
    import select

    assert select.select([sock], [], [], 5)[0], "nothing arrived within 5 s"


def test_the_suite_runs_the_c_calls() -> None:
    assert sockio.BUILT, "arp.net._sockio is not built: run bash scripts/setup.sh --dev"
    assert [calls.name for calls in IMPLEMENTATIONS] == ["socket module", "C"]


@each
def test_send_a_range_and_receive_it_at_an_offset(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    assert calls.send(a, b"..hello..", 2, 7, 0) == 5
    _wait_readable(b)
    buffer = bytearray(b"#" * 16)
    assert calls.recv_into(b, buffer, 3) == 5
    assert buffer == b"###hello########"


@each
def test_recv_frame_writes_the_header_in_front(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendall(b"payload")
    _wait_readable(b)
    buffer = bytearray(64)
    assert calls.recv_frame(b, buffer) == 7
    assert bytes(buffer[:11]) == HEADER.pack(7) + b"payload"
    a.shutdown(socket.SHUT_WR)
    _wait_readable(b)
    assert calls.recv_frame(b, buffer) == 0
    assert bytes(buffer[:4]) == HEADER.pack(0)  # the end frame


@each
def test_a_read_never_takes_more_than_the_room(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendall(b"0123456789")
    _wait_readable(b)
    small = bytearray(b"......")
    assert calls.recv_frame(b, small) == 2
    assert small == HEADER.pack(2) + b"01"
    assert calls.recv_into(b, small, 4) == 2
    assert small[4:] == b"23"
    rest = bytearray(16)
    assert calls.recv_into(b, rest, 0) == 6
    assert rest[:6] == b"456789"


@each
def test_nothing_ready_raises_blocking_io_error_even_on_a_blocking_socket(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    b.setblocking(True)  # MSG_DONTWAIT: the call still cannot block
    with pytest.raises(BlockingIOError):
        calls.recv_into(b, bytearray(8), 0)
    with pytest.raises(BlockingIOError):
        calls.recv_frame(b, bytearray(8))
    a.setblocking(True)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"x" * 65536
    with pytest.raises(BlockingIOError):
        for _ in range(10_000):  # a bounded fill of both kernel buffers
            calls.send(a, chunk, 0, len(chunk), 0)


@each
def test_a_closed_socket_is_ebadf_and_a_reset_peer_is_its_errno(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    closed = socket.socket()
    closed.close()
    with pytest.raises(OSError) as caught:
        calls.recv_into(closed, bytearray(8), 0)
    assert caught.value.errno == errno.EBADF
    with pytest.raises(OSError) as caught:
        calls.send(closed, b"x", 0, 1, 0)
    assert caught.value.errno == errno.EBADF
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    b.close()  # a reset
    _wait_readable(a)
    with pytest.raises(ConnectionResetError):
        calls.recv_into(a, bytearray(8), 0)
    with pytest.raises(BrokenPipeError):  # and no SIGPIPE
        calls.send(a, b"x", 0, 1, 0)


@each
def test_bad_arguments_are_clear_errors(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    buffer = bytearray(8)
    for start in (-1, 8, 9):
        with pytest.raises(ValueError):
            calls.recv_into(b, buffer, start)
    with pytest.raises(ValueError):
        calls.recv_frame(b, bytearray(4))  # no room for a payload
    for start, end in ((-1, 2), (2, 1), (0, 9)):
        with pytest.raises(ValueError):
            calls.send(a, buffer, start, end, 0)
    with pytest.raises((TypeError, BufferError)):
        calls.recv_into(b, b"read-only", 0)  # type: ignore[arg-type]
    with pytest.raises((TypeError, AttributeError)):
        calls.recv_into(b.fileno(), buffer, 0)  # type: ignore[arg-type]
    with pytest.raises((TypeError, AttributeError)):
        calls.send("not a socket", b"x", 0, 1, 0)  # type: ignore[arg-type]
    assert calls.send(a, b"x", 0, 0, 0) == 0  # an empty range sends nothing


class _Bytes(bytearray):
    """A bytearray subclass: read through the buffer protocol, not directly."""


@each
def test_every_kind_of_buffer_works_and_a_bytearray_is_free_after(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    """bytes and bytearray are read directly in C, other buffers through the buffer protocol;
    each works, and a bytearray can be resized after every call (its export released, on
    errors too)."""
    import array

    a, b = pair
    for data in (b"bytes", bytearray(b"array"), _Bytes(b"subcl"), memoryview(b"mview")):
        assert calls.send(a, data, 0, 5, 0) == 5
    _wait_readable(b)
    targets = [bytearray(5), _Bytes(5), memoryview(bytearray(5)), array.array("B", bytes(5))]
    for target in targets:
        assert calls.recv_into(b, target, 0) == 5  # type: ignore[arg-type]
    assert [bytes(t) for t in targets] == [b"bytes", b"array", b"subcl", b"mview"]
    buffer = bytearray(8)
    for _ in range(3):
        with pytest.raises(BlockingIOError):
            calls.recv_into(b, buffer, 0)
        with pytest.raises(BlockingIOError):
            calls.recv_frame(b, buffer)
        with pytest.raises(ValueError):
            calls.send(a, buffer, 0, 9, 0)
        assert calls.send(a, buffer, 0, 1, 0) == 1
        _wait_readable(b)
        assert calls.recv_into(b, buffer, 7) == 1
        buffer.extend(b"x")  # BufferError if an export were still held
        del buffer[-1:]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8))
def test_what_one_sends_the_other_receives_in_order(chunks: list[bytes]) -> None:
    """Generated chunks through every pairing of the two implementations."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    with a, b:
        b.setblocking(False)
        for sender in IMPLEMENTATIONS:
            for receiver in IMPLEMENTATIONS:
                for chunk in chunks:
                    assert sender.send(a, b"<" + chunk + b">", 1, len(chunk) + 1, 0) == len(chunk)
                want = b"".join(chunks)
                got = bytearray()
                buffer = bytearray(128)
                while len(got) < len(want):
                    _wait_readable(b)
                    n = receiver.recv_frame(b, buffer)
                    assert n > 0
                    assert bytes(buffer[:4]) == HEADER.pack(n)
                    got += buffer[4 : 4 + n]
                assert bytes(got) == want


def _table(entries: dict[int, Any]) -> list[Any]:
    table: list[Any] = [None] * (max(entries, default=0) + 1)
    for fd, value in entries.items():
        table[fd] = value
    return table


@each
def test_dispatch_runs_each_ready_sockets_callbacks_and_hands_back_the_loops(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    heard: list[str] = []
    errors: list[BaseException] = []
    with select.epoll() as epoll:
        assert calls.dispatch(epoll, 0, 8, [], [], [], errors.append) is None  # nothing ready
        epoll.register(b.fileno(), select.EPOLLIN | select.EPOLLOUT)
        epoll.register(a.fileno(), select.EPOLLOUT)
        readers = _table({b.fileno(): lambda: heard.append("b read")})
        writers = _table(
            {b.fileno(): lambda: heard.append("b write"), a.fileno(): lambda: heard.append("a")}
        )
        key = object()
        a.sendall(b"x")
        _wait_readable(b)
        ready = calls.dispatch(epoll, 1000, 8, readers, writers, _table({a.fileno(): key}),
                               errors.append)  # fmt: skip
        assert sorted(heard) == ["a", "b read", "b write"]
        assert heard.index("b read") < heard.index("b write")  # the reader first
        assert ready == [(key, select.EPOLLOUT)]
        assert errors == []


@each
def test_dispatch_looks_each_callback_up_just_before_it_runs(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    heard: list[str] = []
    with select.epoll() as epoll:
        epoll.register(b.fileno(), select.EPOLLIN | select.EPOLLOUT)
        writers = _table({b.fileno(): lambda: heard.append("writer")})

        def reader() -> None:
            heard.append("reader")
            writers[b.fileno()] = None  # an earlier callback removes a later one

        a.sendall(b"x")
        _wait_readable(b)
        calls.dispatch(epoll, 0, 8, _table({b.fileno(): reader}), writers, None, print)
        assert heard == ["reader"]


@each
def test_dispatch_reports_a_failing_callback_and_goes_on(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    heard: list[str] = []
    errors: list[BaseException] = []
    with select.epoll() as epoll:
        epoll.register(b.fileno(), select.EPOLLIN | select.EPOLLOUT)

        def failing() -> None:
            raise RuntimeError("callback bug")

        a.sendall(b"x")
        _wait_readable(b)
        readers = _table({b.fileno(): failing})
        writers = _table({b.fileno(): lambda: heard.append("writer")})
        assert calls.dispatch(epoll, 0, 8, readers, writers, None, errors.append) == []
        assert [str(e) for e in errors] == ["callback bug"]
        assert errors[0].__traceback__ is not None
        assert heard == ["writer"]

        def leaving() -> None:
            raise SystemExit(3)

        with pytest.raises(SystemExit):
            calls.dispatch(epoll, 0, 8, _table({b.fileno(): leaving}), [], None, errors.append)
        assert len(errors) == 1


@each
def test_dispatch_refuses_bad_arguments(calls: Calls) -> None:
    epoll = select.epoll()
    for timeout, maxevents in ((-2, 8), (0, 0), (0, 5000)):
        with pytest.raises(ValueError):
            calls.dispatch(epoll, timeout, maxevents, [], [], None, print)
    with pytest.raises((TypeError, AttributeError)):
        calls.dispatch(object(), 0, 8, [], [], None, print)
    epoll.close()
    with pytest.raises(ValueError):  # a closed epoll
        calls.dispatch(epoll, 0, 8, [], [], None, print)


@pytest.fixture
def three() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """Two connected pairs: (feed, src) and (dst, out): bytes written to feed are read from
    src; what goes to dst comes out of out."""
    socks: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        for _ in range(2):
            a = socket.create_connection(server.getsockname())
            b, _ = server.accept()
            socks += [a, b]
    for sock in socks:
        sock.setblocking(False)
    try:
        yield socks[0], socks[1], socks[3], socks[2]
    finally:
        for sock in socks:
            sock.close()


def _fill(sock: socket.socket) -> None:
    """Send until nothing more fits (its peer reads nothing): the next send is partial or 0."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for _ in range(10_000):
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            return
    raise AssertionError("the socket never filled")


def _read_all_of(sock: socket.socket, size: int) -> None:
    """Wait until `size` bytes are readable from `sock` (a frame arrives whole, not cut)."""
    deadline = time.monotonic() + 5
    while len(sock.recv(size, socket.MSG_PEEK) if _readable(sock) else b"") < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{size} bytes did not arrive within 5 s")
        time.sleep(0.001)


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0.1)[0])


def _read_all(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `sock`, within 5 s; an end before them fails the test."""
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < size:
        assert time.monotonic() < deadline, f"{len(got)} of {size} bytes within 5 s"
        _wait_readable(sock)
        chunk = sock.recv(size - len(got))
        assert chunk, f"the peer ended after {len(got)} of {size} bytes"
        got += chunk
    return got


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.binary(min_size=1, max_size=200).map(lambda body: HEADER.pack(len(body)) + body),
        st.binary(min_size=1, max_size=64),
    )
)
def test_forward_frame_sends_on_exactly_one_whole_frame(data: bytes) -> None:
    """The n bytes read go on, without their header, only when they are one whole data frame
    with a payload (-n); anything else (a cut frame, two frames, the end frame, not a frame)
    stays in the buffer untouched and unsent (n)."""
    whole = len(data) > 4 and HEADER.unpack_from(data)[0] == len(data) - 4
    for calls in IMPLEMENTATIONS:
        feed, src = socket.socketpair()
        dst, out = socket.socketpair()
        with feed, src, dst, out:
            for sock in (src, dst, out):
                sock.setblocking(False)
            feed.sendall(data)
            _read_all_of(src, len(data))
            buffer = bytearray(256)
            got = calls.forward_frame(src, dst, buffer)
            assert bytes(buffer[: len(data)]) == data, calls.name
            if whole:
                assert got == -len(data), calls.name
                assert _read_all(out, len(data) - 4) == data[4:]
            else:
                assert got == len(data), calls.name
                with pytest.raises(BlockingIOError):
                    out.recv(1)


@each
def test_forward_frame_with_a_full_destination_says_how_much_went(
    calls: Calls, three: tuple[socket.socket, socket.socket, socket.socket, socket.socket]
) -> None:
    feed, src, dst, _ = three
    _fill(dst)
    frame = HEADER.pack(3000) + b"p" * 3000
    feed.sendall(frame)
    _read_all_of(src, len(frame))
    buffer = bytearray(8192)
    got = calls.forward_frame(src, dst, buffer)
    assert isinstance(got, tuple) and got[0] == len(frame) and 0 <= got[1] < 3000
    feed.close()
    _wait_readable(src)
    assert calls.forward_frame(src, dst, buffer) == 0  # the tunnel's end


@each
def test_frame_out_frames_a_read_and_sends_it_unless_it_fills_the_room(
    calls: Calls, three: tuple[socket.socket, socket.socket, socket.socket, socket.socket]
) -> None:
    feed, src, dst, out = three
    feed.sendall(b"hello")
    _wait_readable(src)
    buffer = bytearray(4 + 16)
    assert calls.frame_out(src, dst, buffer) == 5
    assert _read_all(out, 9) == HEADER.pack(5) + b"hello"
    feed.sendall(b"0123456789abcdefXYZ")  # more than the room of 16: a full read, not sent
    _read_all_of(src, 19)
    assert calls.frame_out(src, dst, buffer) == 16
    assert bytes(buffer) == HEADER.pack(16) + b"0123456789abcdef"
    with pytest.raises(BlockingIOError):
        out.recv(1)
    assert calls.frame_out(src, dst, buffer) == 3
    assert _read_all(out, 7) == HEADER.pack(3) + b"XYZ"
    feed.shutdown(socket.SHUT_WR)
    _wait_readable(src)
    assert calls.frame_out(src, dst, buffer) == 0  # the end: its end frame is the caller's
    assert bytes(buffer[:4]) == HEADER.pack(0)
    with pytest.raises(BlockingIOError):
        calls.frame_out(dst, src, buffer)  # nothing to read
    with pytest.raises(ValueError):
        calls.frame_out(src, dst, bytearray(4))
    with pytest.raises(ValueError):
        calls.forward_frame(src, dst, bytearray(4))


@each
def test_frame_out_with_a_full_tunnel_says_how_much_went(
    calls: Calls, three: tuple[socket.socket, socket.socket, socket.socket, socket.socket]
) -> None:
    feed, src, dst, _ = three
    _fill(dst)
    feed.sendall(b"q" * 3000)
    _read_all_of(src, 3000)
    buffer = bytearray(4 + 8192)
    got = calls.frame_out(src, dst, buffer)
    assert isinstance(got, tuple) and got[0] == 3000 and 0 <= got[1] < 3004
    assert bytes(buffer[:4]) == HEADER.pack(3000)


@each
def test_forward_if_same_sends_the_other_bytes_only_for_exactly_the_expected_ones(
    calls: Calls, three: tuple[socket.socket, socket.socket, socket.socket, socket.socket]
) -> None:
    feed, src, dst, out = three
    buffer = bytearray(64)
    expected, instead = b"GET / HTTP/1.1\r\n\r\n", b"framed and rewritten"
    for data, same in (
        (expected, True),
        (expected[:-1], False),  # cut short
        (expected.replace(b"/", b"?"), False),  # as long, not the same
        (expected + expected, False),  # more than it
        (expected, True),
    ):
        feed.sendall(data)
        _read_all_of(src, len(data))
        got = calls.forward_if_same(src, dst, buffer, expected, instead)
        assert bytes(buffer[: len(data)]) == data
        if same:
            assert got == -len(data)
            assert _read_all(out, len(instead)) == instead
        else:
            assert got == len(data)
            with pytest.raises(BlockingIOError):
                out.recv(1)
    with pytest.raises(BlockingIOError):
        calls.forward_if_same(src, dst, buffer, expected, instead)
    _fill(dst)
    feed.sendall(expected)
    _read_all_of(src, len(expected))
    big = b"i" * 300_000  # more than the full socket takes
    got = calls.forward_if_same(src, dst, buffer, expected, big)
    assert isinstance(got, tuple) and got[0] == len(expected) and 0 <= got[1] < len(big)
    feed.close()
    _wait_readable(src)
    assert calls.forward_if_same(src, dst, buffer, expected, instead) == 0
    with pytest.raises(ValueError):
        calls.forward_if_same(src, dst, bytearray(), expected, instead)
