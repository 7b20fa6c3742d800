"""The framed data path over real socket pairs: payloads intact in any split, both ends, reuse."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from arp.config import Limits
from arp.net.links import SocketLink
from arp.net.pump import pump
from arp.protocol.tunnel import END_FRAME, MAX_DATA_FRAME, data_frame
from tests.conftest import units

LIMITS = Limits()


def pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection, as the relay and client have them."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for sock in (a, b):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


async def send_in_pieces(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    """Write `data` in random-sized pieces with pauses, so frames split anywhere."""
    loop = asyncio.get_running_loop()
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 3, 4, 5, 100, 4096, 70_000, 300_000))
        await loop.sock_sendall(sock, data[pos : pos + size])
        pos += size
        if rng.random() < 0.3:
            await asyncio.sleep(0)


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await loop.sock_recv(sock, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def read_frames(sock: socket.socket) -> bytes:
    """Payloads from a framed stream up to its end frame (which must come)."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    out = bytearray()

    async def need(n: int) -> None:
        while len(buffer) < n:
            chunk = await loop.sock_recv(sock, 1 << 20)
            assert chunk, "the tunnel closed before the end frame"
            buffer.extend(chunk)

    while True:
        await need(4)
        (length,) = struct.unpack_from(">I", buffer)
        del buffer[:4]
        if length == 0:
            assert not buffer, "bytes after the end frame"
            return bytes(out)
        await need(length)
        out += buffer[:length]
        del buffer[:length]


def frames_of(payload: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(payload):
        size = rng.choice((1, 10, 1000, 65_536, 200_000, 1_500_000))
        out += data_frame(payload[pos : pos + size])
        pos += size
    return bytes(out)


@pytest.mark.parametrize("seed", range(6))
async def test_both_directions_arrive_intact_and_the_tunnel_stays_clean(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice((0, 17, 5_000, 3_000_000))
    down = rng.randbytes(size)  # tunnel → raw
    up = rng.randbytes(rng.choice((0, 9, 2_500_000)))  # raw → tunnel
    next_use = b"\x00\x00\x00\x0b{next use}"
    raw_mine, raw_peer = pair()
    tunnel_mine, tunnel_peer = pair()
    framed = frames_of(down, rng) + END_FRAME + next_use
    # The first bytes may already have been read with StartProxy.
    cut = rng.randrange(0, min(len(framed), 9) + 1)
    task = asyncio.create_task(
        pump(SocketLink(raw_mine), SocketLink(tunnel_mine), LIMITS, initial=framed[:cut])
    )
    try:
        async with asyncio.timeout(units(20)):
            sender = asyncio.create_task(send_in_pieces(tunnel_peer, framed[cut:], rng))
            uploader = asyncio.create_task(send_in_pieces(raw_peer, up, rng))
            await uploader
            raw_peer.shutdown(socket.SHUT_WR)
            assert await read_frames(tunnel_peer) == up
            assert await read_to_eof(raw_peer) == down
            await sender
            # The next use's bytes: those read already are handed back, the rest wait unread.
            rest = await task
            loop = asyncio.get_running_loop()
            while len(rest) < len(next_use):
                rest += await loop.sock_recv(tunnel_mine, len(next_use) - len(rest))
            assert rest == next_use
        assert raw_mine.fileno() == -1  # the raw side is closed, the clean tunnel is not
        assert tunnel_mine.fileno() != -1
    finally:
        task.cancel()
        for sock in (raw_peer, tunnel_peer, tunnel_mine):
            sock.close()


async def test_the_first_payload_can_be_rewritten() -> None:
    raw_mine, raw_peer = pair()
    tunnel_mine, tunnel_peer = pair()
    task = asyncio.create_task(
        pump(SocketLink(raw_mine), SocketLink(tunnel_mine), LIMITS, first=lambda b: b.upper())
    )
    try:
        async with asyncio.timeout(units(5)):
            loop = asyncio.get_running_loop()
            tunnel_peer.sendall(data_frame(b"head"))
            assert await loop.sock_recv(raw_peer, 100) == b"HEAD"
            tunnel_peer.sendall(data_frame(b"body") + END_FRAME)
            raw_peer.shutdown(socket.SHUT_WR)
            assert await read_to_eof(raw_peer) == b"body"
            assert await read_frames(tunnel_peer) == b""
            assert await task == b""
    finally:
        for sock in (raw_peer, tunnel_peer, tunnel_mine):
            sock.close()


async def test_a_tunnel_closed_between_frames_is_a_break_passed_on_as_a_reset() -> None:
    """No end frame: the peer died or gave up, so the raw side must not see a clean end
    (issue 14 item 3); the tunnel is not reused."""
    raw_mine, raw_peer = pair()
    tunnel_mine, tunnel_peer = pair()
    task = asyncio.create_task(pump(SocketLink(raw_mine), SocketLink(tunnel_mine), LIMITS))
    try:
        async with asyncio.timeout(units(5)):
            tunnel_peer.sendall(data_frame(b"answer"))
            await asyncio.sleep(units(0.05))
            tunnel_peer.shutdown(socket.SHUT_WR)  # no end frame
            assert await task is None
            received = b""
            with pytest.raises(ConnectionResetError):
                received = await read_to_eof(raw_peer)
            assert received == b""
    finally:
        raw_peer.close()
        tunnel_peer.close()
    assert tunnel_mine.fileno() == -1  # closed by the pump


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">I", 10) + b"cut",  # the tunnel closes inside a frame
        struct.pack(">I", MAX_DATA_FRAME + 1),  # an absurd length
    ],
)
async def test_a_broken_tunnel_closes_both_sides(garbage: bytes) -> None:
    raw_mine, raw_peer = pair()
    tunnel_mine, tunnel_peer = pair()
    task = asyncio.create_task(pump(SocketLink(raw_mine), SocketLink(tunnel_mine), LIMITS))
    try:
        async with asyncio.timeout(units(5)):
            tunnel_peer.sendall(garbage)
            tunnel_peer.shutdown(socket.SHUT_WR)
            assert await task is None
            with pytest.raises(ConnectionResetError):  # a break: the raw side sees a reset
                await read_to_eof(raw_peer)
    finally:
        raw_peer.close()
        tunnel_peer.close()
    assert raw_mine.fileno() == -1
    assert tunnel_mine.fileno() == -1
