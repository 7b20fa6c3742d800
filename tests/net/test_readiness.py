"""The nested-epoll readiness registry: callbacks fire for the right sockets, and only for them."""

from __future__ import annotations

import asyncio
import socket

from arp.net.readiness import readiness, wait_readable
from tests.conftest import units


async def test_readers_and_writers_of_one_socket_are_independent() -> None:
    loop = asyncio.get_running_loop()
    ready = readiness(loop)
    a, b = socket.socketpair()
    a.setblocking(False)
    fired: list[str] = []
    try:
        ready.add_writer(a.fileno(), lambda: fired.append("write"))
        ready.add_reader(a.fileno(), lambda: fired.append("read"))
        await asyncio.sleep(units(0.05))
        assert "write" in fired and "read" not in fired  # writable, nothing to read
        assert ready.remove_writer(a.fileno())
        assert not ready.remove_writer(a.fileno())
        fired.clear()
        b.send(b"x")
        await asyncio.sleep(units(0.05))
        assert fired and set(fired) == {"read"}  # the reader lives on without the writer
        assert ready.remove_reader(a.fileno())
        fired.clear()
        await asyncio.sleep(units(0.05))
        assert fired == []
    finally:
        ready.remove_reader(a.fileno())
        a.close()
        b.close()


async def test_a_callback_can_unregister_another_ready_socket() -> None:
    loop = asyncio.get_running_loop()
    ready = readiness(loop)
    pairs = [socket.socketpair() for _ in range(2)]
    calls: list[int] = []

    def first() -> None:
        calls.append(0)
        ready.remove_reader(pairs[0][0].fileno())
        ready.remove_reader(pairs[1][0].fileno())  # ready too, in the same batch

    def second() -> None:
        calls.append(1)
        ready.remove_reader(pairs[0][0].fileno())
        ready.remove_reader(pairs[1][0].fileno())

    try:
        ready.add_reader(pairs[0][0].fileno(), first)
        ready.add_reader(pairs[1][0].fileno(), second)
        for _, peer in pairs:
            peer.send(b"x")
        await asyncio.sleep(units(0.05))
        assert len(calls) == 1  # whichever ran first, the other was never called
    finally:
        for mine, peer in pairs:
            ready.remove_reader(mine.fileno())
            mine.close()
            peer.close()


async def test_a_closed_socket_number_can_be_registered_again() -> None:
    loop = asyncio.get_running_loop()
    ready = readiness(loop)
    a, b = socket.socketpair()
    fd = a.fileno()
    ready.add_reader(fd, lambda: None)
    a.close()  # closed while registered: the kernel forgets it; the registry is told late
    ready.remove_reader(fd)
    c, d = socket.socketpair()
    try:
        d.send(b"x")
        async with asyncio.timeout(units(2)):
            await wait_readable(c.fileno())
        assert c.recv(1) == b"x"
    finally:
        for sock in (b, c, d):
            sock.close()
