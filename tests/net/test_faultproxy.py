"""The fault proxy itself: it passes bytes faithfully until told otherwise, then misbehaves
exactly as asked (delay, split, reset, black hole, one direction cut), within its bounds."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import units
from tests.net.faultproxy import Direction, FaultProxy, Faults


@dataclass
class Target:
    """An echo service that records what each connection received and how it ended."""

    port: int = 0
    chunks: list[bytes] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)
    """Per connection: "eof" (a FIN), "reset", or "open" while it lasts."""
    echo: bool = True


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(state.endings)
        state.endings.append("open")
        try:
            while chunk := await reader.read(65536):
                state.chunks.append(chunk)
                if chunk == b"die":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    state.endings[index] = "died"
                    return
                if state.echo:
                    writer.write(chunk)
                    await writer.drain()
            state.endings[index] = "eof"
            writer.write(b"bye")
            await writer.drain()
        except ConnectionResetError:
            state.endings[index] = "reset"
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()


@pytest.fixture
async def proxy(target: Target) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", target.port) as proxy:
        yield proxy


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxy.host, proxy.port)


async def read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    async with asyncio.timeout(units(2)):
        return await reader.readexactly(size)


async def test_passes_bytes_both_ways_and_a_half_close(proxy: FaultProxy, target: Target) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"hello")
    assert await read_exactly(reader, 5) == b"hello"
    writer.write_eof()
    async with asyncio.timeout(units(2)):
        assert await reader.read() == b"bye"  # the target saw our FIN and still answered
    writer.close()
    assert target.endings == ["eof"]
    assert proxy.port != 0 and proxy.host == "127.0.0.1"


async def test_split_and_delay_pass_bytes_in_small_late_pieces(
    proxy: FaultProxy, target: Target
) -> None:
    target.echo = False
    proxy.faults = Faults(delay=units(0.02), split=1)
    _reader, writer = await connect(proxy)
    started = time.monotonic()
    writer.write(b"abcdefghij")
    (connection,) = await proxy.wait_connections(1, units(2))
    async with asyncio.timeout(units(3)):
        while b"".join(target.chunks) != b"abcdefghij":
            await asyncio.sleep(0.01)
    assert time.monotonic() - started >= 10 * units(0.02)
    assert connection.forwarded[Direction.UP] == 10
    assert len(target.chunks) >= 5  # pieces, not one write
    writer.close()


async def test_reset_reaches_both_sides_as_a_reset(proxy: FaultProxy, target: Target) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"x")
    await read_exactly(reader, 1)
    (connection,) = proxy.connections
    connection.reset()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(units(2)):
            await reader.read(10)
    async with asyncio.timeout(units(2)):
        while target.endings[0] == "open":
            await asyncio.sleep(0.01)
    assert target.endings == ["reset"]
    writer.close()
    assert not proxy.connections


async def test_a_reset_from_the_target_is_passed_on_as_a_reset(
    proxy: FaultProxy, target: Target
) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"die")
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(units(2)):
            await reader.read(10)
    assert target.endings == ["died"]
    writer.close()


async def test_blackhole_holds_bytes_and_keeps_both_sides_open(
    proxy: FaultProxy, target: Target
) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"a")
    await read_exactly(reader, 1)
    (connection,) = proxy.connections
    connection.blackhole()
    writer.write(b"lost")
    await writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(units(0.3)):
            await reader.read(10)  # no echo, and no end either
    assert target.chunks == [b"a"] and target.endings == ["open"]
    assert not reader.at_eof()
    connection.resume()
    writer.write(b"b")
    received = b""
    async with asyncio.timeout(units(2)):
        while not received.endswith(b"b"):
            received += await reader.read(10)
    writer.close()


async def test_cut_one_direction_with_a_fin(proxy: FaultProxy, target: Target) -> None:
    target.echo = False
    reader, writer = await connect(proxy)
    (connection,) = await proxy.wait_connections(1, units(2))
    connection.cut(Direction.UP, fin=True)
    async with asyncio.timeout(units(2)):
        assert await reader.read() == b"bye"  # the target saw an end and answered: DOWN flows
    writer.write(b"never arrives")
    await asyncio.sleep(units(0.1))
    assert target.chunks == []
    writer.close()


async def test_cut_one_direction_silently(proxy: FaultProxy, target: Target) -> None:
    reader, writer = await connect(proxy)
    (connection,) = await proxy.wait_connections(1, units(2))
    connection.cut(Direction.DOWN)
    writer.write(b"ping")
    async with asyncio.timeout(units(2)):
        while not target.chunks:
            await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(units(0.3)):
            await reader.read(10)  # the echo is swallowed; nothing ends
    assert target.endings == ["open"]
    writer.close()


async def test_connections_beyond_the_bound_are_reset(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.port, max_connections=1) as proxy:
        first = await connect(proxy)
        await proxy.wait_connections(1, units(2))
        reader, writer = await connect(proxy)
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(units(2)):
                await reader.read(10)
        assert proxy.refused == 1
        writer.close()
        first[1].close()


async def test_close_resets_what_is_left(target: Target) -> None:
    proxy = FaultProxy("127.0.0.1", target.port)
    await proxy.start()
    reader, writer = await connect(proxy)
    await proxy.wait_connections(1, units(2))
    await proxy.close()
    await proxy.close()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(units(2)):
            await reader.read(10)
    writer.close()


def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("192.0.2.1", 80)
