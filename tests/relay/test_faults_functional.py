"""The relay and client when the network between them misbehaves (issue 14's fault bench).

A `FaultProxy` sits between arpc and the relay's control or proxy port (and, for slow heads,
between a public caller and the public port) and half-opens, resets, delays or drips links while
requests flow. What must hold: a dead control link is noticed by heartbeat and the client comes
back; slow heads meet their deadlines; a request that completed is never lost; a tunnel that
breaks reaches the public side as a reset, never as a clean end (issue 14 item 3).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from arp.client.config import Target
from arp.client.control import Client
from tests.conftest import units
from tests.net.faultproxy import Direction, FaultProxy, Faults
from tests.relay.conftest import Stack, StackFactory, wait_until
from tests.relay.routing import read_response

MB = 1 << 20
_RESET = struct.pack("ii", 1, 0)


@dataclass
class ProxiedStack:
    """A relay, and a client that reaches its control and proxy ports through fault proxies."""

    stack: Stack
    control: FaultProxy
    tunnels: FaultProxy
    client: Client


ProxiedFactory = Callable[..., Awaitable[ProxiedStack]]


@pytest.fixture
async def proxied(make_stack: StackFactory) -> AsyncIterator[ProxiedFactory]:
    proxies: list[FaultProxy] = []

    async def make(client_id: str = "tester", **client_changes: object) -> ProxiedStack:
        stack = await make_stack(client_id=None)
        control = FaultProxy("127.0.0.1", stack.relay.control_port)
        tunnels = FaultProxy("127.0.0.1", stack.relay.proxy_port)
        for proxy in (control, tunnels):
            await proxy.start()
            proxies.append(proxy)
        client = await stack.start_client(
            client_id, control_port=control.port, proxy_port=tunnels.port, **client_changes
        )
        return ProxiedStack(stack, control, tunnels, client)

    yield make
    for proxy in proxies:
        await proxy.close()


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=units(20)),
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
    )


async def fetch(base: str, path: str) -> tuple[int, str]:
    async with session() as http, http.get(f"{base}{path}") as response:
        return response.status, await response.text()


# -- the control link --------------------------------------------------------------------------


async def test_a_half_open_control_link_is_noticed_and_the_client_registers_again(
    proxied: ProxiedFactory,
) -> None:
    p = await proxied()
    assert p.client.registrations == 1
    p.control.blackhole_all()  # the link stays open at both ends; nothing passes any more
    # Heartbeats stop arriving: both ends give the link up within the heartbeat timeout
    # (units(1) here) and the client registers again over a new connection.
    await wait_until(lambda: p.client.registrations >= 2, units(6), "client registered again")
    state = p.stack.relay.clients["tester"]
    await wait_until(lambda: state.online, units(3), "relay holds the new link")
    status, body = await fetch(p.stack.base, "/echo?token=tester")
    assert status == 200 and '"path": "/echo"' in body


# -- slow heads on the public port -----------------------------------------------------------


async def _drip(stack: Stack, faults: Faults, head: bytes) -> bytes:
    """Send `head` to the public port through a proxy that drips it, read the whole answer."""
    async with FaultProxy("127.0.0.1", stack.relay.public_port, faults=faults) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            writer.write(head)
            async with asyncio.timeout(units(10)):
                return await reader.read(-1)
        finally:
            writer.close()


_HEAD = b"GET /echo?token=tester HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"


async def test_a_head_dripped_a_byte_at_a_time_within_its_deadline_is_served(
    stack: Stack,
) -> None:
    # 69 bytes, 10 ms apart: 0.7 s, inside the head deadline (units(2)).
    answer = await _drip(stack, Faults(delay=units(0.01), split=1, direction=Direction.UP), _HEAD)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"path": "/echo"' in answer


async def test_a_head_dripped_past_its_deadline_is_408(stack: Stack) -> None:
    # 69 bytes, 50 ms apart: 3.5 s, past the head deadline (units(2)).
    started = asyncio.get_running_loop().time()
    answer = await _drip(stack, Faults(delay=units(0.05), split=1, direction=Direction.UP), _HEAD)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"did not arrive in time" in answer
    elapsed = asyncio.get_running_loop().time() - started
    assert units(1.5) <= elapsed <= units(4)


# -- tunnels -----------------------------------------------------------------------------------


async def test_no_request_is_lost_when_idle_pooled_tunnels_are_reset(
    proxied: ProxiedFactory,
) -> None:
    p = await proxied()
    state = p.stack.relay.clients["tester"]
    for round_ in range(3):
        await wait_until(lambda: len(state.pool) == 2, units(3), "pool warmed")
        before = len(p.tunnels.connections)
        assert before >= 2
        p.tunnels.reset_all()  # every idle pooled tunnel dies under the relay and the client
        await asyncio.sleep(units(0.05))
        answers = await asyncio.gather(
            *(fetch(p.stack.base, f"/echo/{round_}/{n}?token=tester") for n in range(8))
        )
        for n, (status, body) in enumerate(answers):
            assert status == 200, (round_, n, status, body)
            assert f'"path": "/echo/{round_}/{n}"' in body


async def _read_until_end(reader: asyncio.StreamReader, timeout: float) -> tuple[int, str]:
    """Read to the end; the bytes read and how the stream ended: "reset", "eof" or "stalled"."""
    received = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(MB):
                received += len(chunk)
    except ConnectionResetError:
        return received, "reset"
    except TimeoutError:
        return received, "stalled"
    return received, "eof"


async def _start_download(
    stack: Stack, size: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw public connection downloading `size` bytes; returns once the first bytes came.
    (Keep the writer: a writer collected as garbage closes the connection.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay.public_port)
    writer.write(f"GET /blob/{size}?token=tester HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
    async with asyncio.timeout(units(5)):
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(MB)
    return reader, writer


async def test_a_tunnel_reset_mid_transfer_reaches_the_public_side_as_a_reset(
    proxied: ProxiedFactory,
) -> None:
    p = await proxied()
    size = 256 * MB
    reader, writer = await _start_download(p.stack, size)
    p.tunnels.reset_all()  # the tunnel carrying the download breaks
    received, ending = await _read_until_end(reader, units(10))
    writer.close()
    assert received < size
    assert ending == "reset", f"after {received} bytes the public side saw {ending}"


async def test_a_vanished_client_mid_transfer_reaches_the_public_side_as_a_reset(
    proxied: ProxiedFactory,
) -> None:
    """The client's host drops off the network (every link black-holed, nothing closes). Only the
    control link's heartbeat can tell; once the relay gives the link up, the connections the
    client was carrying must end as resets, not hang."""
    p = await proxied()
    size = 256 * MB
    reader, writer = await _start_download(p.stack, size)
    p.tunnels.blackhole_all()
    p.control.blackhole_all()
    received, ending = await _read_until_end(reader, units(6))
    writer.close()
    assert received < size
    assert ending == "reset", f"after {received} bytes the public side saw {ending}"


# -- the local service and the public caller breaking ------------------------------------------


@dataclass
class RawService:
    """A local "HTTP" service that answers with the start of a body and then does as told,
    recording how each connection from the client ended."""

    port: int = 0
    endings: list[str] = field(default_factory=list)
    reset_after_bytes: int | None = 64 * 1024


@pytest.fixture
async def raw_service() -> AsyncIterator[RawService]:
    service = RawService()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if service.reset_after_bytes is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                writer.write(b"x" * service.reset_after_bytes)
                await writer.drain()
                await asyncio.sleep(units(0.1))
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, _RESET
                )
                writer.transport.abort()
                service.endings.append("we reset")
                return
            while await reader.read(MB):  # read the upload until it ends
                pass
            service.endings.append("eof")
        except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
            service.endings.append("reset" if isinstance(exc, ConnectionResetError) else "eof")
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    service.port = server.sockets[0].getsockname()[1]
    yield service
    server.close()


async def test_a_local_service_reset_mid_transfer_reaches_the_public_side_as_a_reset(
    make_stack: StackFactory, raw_service: RawService
) -> None:
    stack = await make_stack(client_id=None)
    await stack.start_client("tester", http_target=Target("127.0.0.1", raw_service.port))
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay.public_port)
    writer.write(b"GET /?token=tester HTTP/1.1\r\nHost: relay\r\n\r\n")
    received, ending = await _read_until_end(reader, units(5))
    writer.close()
    assert raw_service.endings == ["we reset"]
    assert received > 0
    assert ending == "reset", f"after {received} bytes the public side saw {ending}"


async def test_a_public_reset_mid_upload_reaches_the_local_service_as_a_reset(
    make_stack: StackFactory, raw_service: RawService
) -> None:
    raw_service.reset_after_bytes = None  # the service reads the upload to its end
    stack = await make_stack(client_id=None)
    await stack.start_client("tester", http_target=Target("127.0.0.1", raw_service.port))
    _, writer = await asyncio.open_connection("127.0.0.1", stack.relay.public_port)
    writer.write(
        b"POST /?token=tester HTTP/1.1\r\nHost: relay\r\nContent-Length: 100000000\r\n\r\n"
        + b"y" * MB
    )
    await writer.drain()
    await asyncio.sleep(units(0.2))
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    writer.transport.abort()
    await wait_until(lambda: bool(raw_service.endings), units(5), "the service saw an end")
    assert raw_service.endings == ["reset"]


async def test_a_full_tunnel_loses_no_repeated_request(proxied: ProxiedFactory) -> None:
    """A read that repeats the last request byte for byte goes to the tunnel in the call that
    reads it (`sockio.forward_if_same`). When the tunnel stops draining, that send goes out in
    part, the rest waits and the relay stops reading the caller; once the tunnel drains again,
    every request the caller sent is answered, in order."""
    p = await proxied()
    pad = "".join(f"X-Pad-{i}: {'p' * 4000}\r\n" for i in range(4))  # a 16 KB head
    head = f"GET /echo?token=tester HTTP/1.1\r\nHost: relay\r\n{pad}\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", p.stack.relay.public_port)
    try:
        writer.write(head)
        assert (await asyncio.wait_for(read_response(reader), units(10))).status == 200
        for connection in p.tunnels.connections:
            connection.cut(Direction.DOWN)  # relay → client: the tunnel fills
        sent, stalled = 1, False
        for _ in range(3000):  # bounded: the buffers on the way hold a few MB at most
            writer.write(head)
            sent += 1
            try:
                await asyncio.wait_for(writer.drain(), units(1))
            except TimeoutError:
                stalled = True  # the relay stopped reading: its send to the tunnel waits
                break
            await asyncio.sleep(0.002)  # each request a read of its own, mostly
        assert stalled, "the relay read every request although the tunnel did not drain"
        for connection in p.tunnels.connections:
            connection.resume()
        for n in range(1, sent):
            response = await asyncio.wait_for(read_response(reader), units(20))
            assert response.status == 200, n
            assert response.json()["path"] == "/echo", n
        writer.write(head)  # and the connection still serves
        assert (await asyncio.wait_for(read_response(reader), units(10))).status == 200
    finally:
        writer.close()
