"""The new-connection calls of `arp.net.sockio` (accept, peer_closed, peer_ip, epoll_set): the
C ones and the socket module's agree, over real sockets, in what they answer and raise."""

from __future__ import annotations

import errno
import gc
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from arp import native
from arp.net import sockio


@dataclass(frozen=True)
class Calls:
    name: str
    accept: Callable[[socket.socket], int]
    peer_closed: Callable[[socket.socket], bool]
    peer_ip: Callable[[socket.socket], str | None]
    epoll_set: Callable[[Any, int, int, int], None]


def _implementations() -> list[Calls]:
    calls = [
        Calls(
            "socket module",
            sockio._accept,
            sockio._peer_closed,
            sockio._peer_ip,
            sockio._epoll_set,
        )
    ]
    if native.active():
        from arp.net import _sockio

        calls.append(
            Calls("C", _sockio.accept, _sockio.peer_closed, _sockio.peer_ip, _sockio.epoll_set)
        )
    return calls


IMPLEMENTATIONS = _implementations()
each = pytest.mark.parametrize("calls", IMPLEMENTATIONS, ids=lambda calls: calls.name)


def test_the_suite_runs_the_c_calls() -> None:
    assert [calls.name for calls in IMPLEMENTATIONS] == ["socket module", "C"]
    assert sockio.accept is IMPLEMENTATIONS[1].accept


def _listener(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen(8)
    server.setblocking(False)
    return server


def _accepted(calls: Calls, server: socket.socket) -> int:
    """The next connection's descriptor, waiting up to 5 s for the kernel to queue it."""
    deadline = time.monotonic() + 5
    while (fd := calls.accept(server)) < 0:
        assert time.monotonic() < deadline, "no connection to accept within 5 s"
        select.select([server], [], [], 0.1)
    return fd


@each
def test_accept_hands_out_non_blocking_descriptors_then_minus_one(calls: Calls) -> None:
    with _listener() as server:
        assert calls.accept(server) == -1  # nothing pending: an answer, not an exception
        clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
        try:
            fds = [_accepted(calls, server) for _ in clients]
            assert len(set(fds)) == 3
            for fd, client in zip(fds, clients, strict=True):
                assert not os.get_blocking(fd)  # made so by accept itself
                conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
                with conn:
                    assert conn.getpeername() == client.getsockname()
                    client.sendall(b"ping")
                    select.select([conn], [], [], 5)
                    assert conn.recv(8) == b"ping"
            assert calls.accept(server) == -1
        finally:
            for client in clients:
                client.close()


@each
def test_accept_on_a_bad_listener_raises_its_errno(calls: Calls) -> None:
    closed = _listener()
    closed.close()
    with pytest.raises(OSError) as caught:
        calls.accept(closed)
    assert caught.value.errno == errno.EBADF
    with socket.socket() as unlistening:
        unlistening.setblocking(False)
        with pytest.raises(OSError) as caught:
            calls.accept(unlistening)
        assert caught.value.errno == errno.EINVAL
    with pytest.raises((TypeError, AttributeError)):
        calls.accept(3)  # type: ignore[arg-type]


@each
def test_peer_closed_is_false_only_for_a_live_silent_peer(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    assert calls.peer_closed(b) is False
    a.sendall(b"x")  # bytes an idle link must never carry
    select.select([b], [], [], 5)
    assert calls.peer_closed(b) is True
    assert b.recv(8) == b"x"  # a peek: the byte is still there to read
    assert calls.peer_closed(b) is False
    a.shutdown(socket.SHUT_WR)  # a FIN
    select.select([b], [], [], 5)
    assert calls.peer_closed(b) is True
    closed = socket.socket()
    closed.close()
    assert calls.peer_closed(closed) is True


@each
def test_peer_closed_sees_a_reset(calls: Calls, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    a.close()  # a reset
    select.select([b], [], [], 5)
    assert calls.peer_closed(b) is True


@each
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_peer_ip_is_the_peers_address_as_text(calls: Calls, host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback")  # the suite's machine has one
    with _listener(host) as server:
        client = socket.create_connection(server.getsockname()[:2])
        with client:
            conn = socket.socket(server.family, socket.SOCK_STREAM, 0, _accepted(calls, server))
            with conn:
                assert calls.peer_ip(conn) == client.getsockname()[0] == host
                assert calls.peer_ip(client) == host


@each
@pytest.mark.parametrize("source", ["127.0.0.1", "127.45.100.9", "127.200.10.99", "127.1.0.254"])
def test_peer_ip_writes_every_octet_length(calls: Calls, source: str) -> None:
    """IPv4 is formatted by hand in C: one, two and three digits, zeros inside."""
    with _listener() as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.bind((source, 0))
            client.connect(server.getsockname())
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, _accepted(calls, server))
            with conn:
                assert calls.peer_ip(conn) == source


@each
def test_peer_ip_is_none_without_an_ip_peer(calls: Calls) -> None:
    left, right = socket.socketpair()
    with left, right:
        assert calls.peer_ip(left) is None  # a Unix socket
    with socket.socket() as unconnected:
        assert calls.peer_ip(unconnected) is None
    assert calls.peer_ip(left) is None  # closed


@each
def test_epoll_set_adds_changes_and_removes_one_registration(
    calls: Calls, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    with select.epoll() as epoll:
        fd = b.fileno()
        calls.epoll_set(epoll, fd, 0, select.EPOLLOUT)
        assert epoll.poll(1) == [(fd, select.EPOLLOUT)]
        calls.epoll_set(epoll, fd, select.EPOLLOUT, select.EPOLLIN)
        assert epoll.poll(0) == []  # nothing to read yet
        a.sendall(b"x")
        assert epoll.poll(5) == [(fd, select.EPOLLIN)]
        calls.epoll_set(epoll, fd, select.EPOLLIN, select.EPOLLIN)  # no change: no call
        calls.epoll_set(epoll, fd, select.EPOLLIN, 0)
        assert epoll.poll(0) == []
        with pytest.raises(FileNotFoundError):  # a change of what is not registered
            calls.epoll_set(epoll, fd, select.EPOLLIN, select.EPOLLOUT)


@each
def test_epoll_set_takes_a_closed_descriptors_leftovers_as_the_kernel_left_them(
    calls: Calls,
) -> None:
    """A descriptor closed while registered leaves nothing behind when it was the only
    reference (removing it is then done already); one whose file is still open elsewhere
    leaves its entry, and adding the same number again changes that entry."""
    with select.epoll() as epoll:
        left, right = socket.socketpair()
        fd = left.fileno()
        calls.epoll_set(epoll, fd, 0, select.EPOLLIN)
        left.close()
        calls.epoll_set(epoll, fd, select.EPOLLIN, 0)  # EBADF: gone with it
        right.close()
        left, right = socket.socketpair()
        with left, right:
            fd = left.fileno()
            calls.epoll_set(epoll, fd, 0, select.EPOLLIN)
            calls.epoll_set(epoll, fd, 0, select.EPOLLOUT)  # EEXIST: the entry is changed
            assert epoll.poll(1) == [(fd, select.EPOLLOUT)]
        with pytest.raises(ValueError):
            calls.epoll_set(epoll, -1, 0, select.EPOLLIN)
        with pytest.raises((TypeError, AttributeError)):
            calls.epoll_set("not an epoll", 3, 0, select.EPOLLIN)
        with pytest.raises(OSError) as caught:
            calls.epoll_set(epoll, 1 << 20, 0, select.EPOLLIN)  # no such descriptor
        assert caught.value.errno == errno.EBADF


def test_an_ended_joint_is_freed_without_the_cyclic_collector() -> None:
    """A joint and its two flows hold each other through their callbacks while they run; at
    the end the flows forget theirs, so reference counting frees all three at once and arpc's
    connections leave nothing for the collector to find (it was a tenth of arpc's work per
    connection when each joint was a cycle)."""
    import asyncio

    from arp.config import Limits
    from arp.net.links import SocketLink
    from arp.net.pump import FromTunnel, Joint
    from arp.protocol.tunnel import END_FRAME

    def live(kind: type) -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is kind)

    async def run() -> None:
        raw_a, raw_b = socket.socketpair()
        tun_a, tun_b = socket.socketpair()
        for sock in (raw_a, tun_a):
            sock.setblocking(False)
        ended: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        joint = Joint(
            SocketLink(raw_a),
            SocketLink(tun_a),
            Limits(),
            on_end=ended.set_result,
        )
        joint.start()
        raw_b.shutdown(socket.SHUT_WR)  # the raw side ends: an end frame goes to the tunnel
        tun_b.sendall(END_FRAME)  # and the tunnel's end comes back
        async with asyncio.timeout(5):
            assert await ended == b""  # clean: the tunnel may carry another connection
        del joint
        for sock in (raw_b, tun_a, tun_b):
            sock.close()

    gc.collect()
    gc.disable()
    try:
        before_joints, before_flows = live(Joint), live(FromTunnel)
        asyncio.run(run())
        assert live(Joint) == before_joints
        assert live(FromTunnel) == before_flows
    finally:
        gc.enable()
