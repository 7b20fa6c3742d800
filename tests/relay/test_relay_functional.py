"""The relay and client over real sockets on loopback: traffic, routing, failures, security."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from arp.client.config import ClientConfig, Target
from arp.client.control import Client
from arp.protocol import frames
from arp.protocol.tunnel import END_FRAME, data_frame
from tests.conftest import units
from tests.relay.conftest import Stack, StackFactory, blob, raw_exchange, wait_until

MB = 1 << 20


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=units(60)),
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
    )


async def test_get_and_post_reach_the_local_service(stack: Stack) -> None:
    async with session() as http:
        async with http.get(f"{stack.base}/echo/api/x?token=tester&q=1") as response:
            assert response.status == 200
            data = await response.json()
        assert data["path"] == "/echo/api/x"
        assert data["query"] == {"token": "tester", "q": "1"}
        async with http.post(f"{stack.base}/echo?token=tester", data=b"hello body") as response:
            assert (await response.json())["body"] == "hello body"


async def test_100_mb_each_way_arrive_intact(stack: Stack) -> None:
    size = 100 * MB
    payload = blob(size)
    async with session() as http:
        async with http.post(f"{stack.base}/sha256?token=tester", data=payload) as response:
            assert await response.json() == {
                "sha256": hashlib.sha256(payload).hexdigest(),
                "size": size,
            }
        digest = hashlib.sha256()
        received = 0
        async with http.get(f"{stack.base}/blob/{size}?token=tester") as response:
            async for chunk in response.content.iter_chunked(MB):
                digest.update(chunk)
                received += len(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_200_concurrent_requests_each_get_their_own_answer(stack: Stack) -> None:
    async with session() as http:

        async def one(n: int) -> str:
            async with http.get(f"{stack.base}/slow?token=tester&n={n}&s=0.05") as response:
                assert response.status == 200
                return await response.text()

        answers = await asyncio.gather(*(one(n) for n in range(200)))
    assert answers == [f"slow {n}" for n in range(200)]


async def test_websocket_echo_through_the_tunnel(stack: Stack) -> None:
    async with session() as http, http.ws_connect(f"{stack.base}/ws?token=tester") as ws:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=units(5))).data == "echo: ping"
        await ws.send_bytes(b"\x00\x01" * 5000)
        assert (await ws.receive(timeout=units(5))).data == b"\x00\x01" * 5000


async def test_browser_keeps_reaching_its_client_through_the_cookie(stack: Stack) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: lets the jar keep cookies of an IP host
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{stack.base}/echo/index.html?token=tester") as response:
            assert response.status == 200
            assert "arp_token=tester" in response.headers["Set-Cookie"]
            assert "HttpOnly" in response.headers["Set-Cookie"]
        async with browser.get(f"{stack.base}/echo/assets/app.js") as response:
            assert response.status == 200
            data = await response.json()
            assert data["path"] == "/echo/assets/app.js"
            assert "arp_token=tester" in data["cookie"]
            assert "Set-Cookie" not in response.headers  # already remembered
        async with browser.ws_connect(f"{stack.base}/ws") as ws:
            await ws.send_str("via cookie")
            assert (await ws.receive(timeout=units(5))).data == "echo: via cookie"


async def test_header_token_routes(stack: Stack) -> None:
    async with (
        session() as http,
        http.get(f"{stack.base}/echo/h", headers={"X-ARP-Token": "tester"}) as response,
    ):
        assert response.status == 200
        assert "Set-Cookie" not in response.headers


async def test_subdomain_routes(make_stack: StackFactory) -> None:
    stack = await make_stack(domain="relay.test", client_id="MyBox")
    async with (
        session() as http,
        http.get(
            f"{stack.base}/echo/s", headers={"Host": f"mybox.relay.test:{stack.relay.public_port}"}
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["path"] == "/echo/s"


async def test_unknown_and_missing_tokens_are_404_with_a_reason(stack: Stack) -> None:
    async with session() as http:
        async with http.get(f"{stack.base}/?token=nobody") as response:
            assert response.status == 404
            assert "no client is registered with token nobody" in await response.text()
        async with http.get(f"{stack.base}/api/x") as response:
            assert response.status == 404
            assert "?token=<client_id>" in await response.text()


async def test_browsers_get_the_token_page(stack: Stack) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    async with session() as http:
        async with http.get(f"{stack.base}/", headers=html) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert "default-src" in response.headers["Content-Security-Policy"]
            assert "<form" in await response.text()
        async with http.head(f"{stack.base}/") as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) > 0
        # A wrong token in a browser: the page again, saying why (404).
        async with http.get(f"{stack.base}/?token=nobody", headers=html) as response:
            assert response.status == 404
            assert "no client is registered with token nobody" in await response.text()
            assert "Set-Cookie" not in response.headers
        # A remembered token that names no client any more is forgotten.
        headers = {**html, "Cookie": "arp_token=gone"}
        async with http.get(f"{stack.base}/", headers=headers) as response:
            assert response.status == 404
            assert "arp_token=;" in response.headers["Set-Cookie"]
            assert "Max-Age=0" in response.headers["Set-Cookie"]


async def test_offline_client_is_503_then_forgotten(stack: Stack) -> None:
    await stack.clients[0].close()
    state = stack.relay.clients["tester"]
    await wait_until(lambda: not state.online, units(3), "relay noticed the client left")
    async with session() as http:
        async with http.get(f"{stack.base}/?token=tester") as response:
            assert response.status == 503
            assert "client tester is offline" in await response.text()
        await wait_until(lambda: "tester" not in stack.relay.clients, units(8), "retention")
        async with http.get(f"{stack.base}/?token=tester") as response:
            assert response.status == 404


async def test_malformed_oversized_slow_and_silent_requests(stack: Stack) -> None:
    port = stack.relay.public_port
    bad = await raw_exchange(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 ")
    not_http = await raw_exchange(port, b"\x16\x03\x01\x00\x05hello")
    assert not_http.startswith(b"HTTP/1.1 400 ")
    huge = b"GET /?token=tester HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (40 * 1024) + b"\r\n\r\n"
    assert (await raw_exchange(port, huge)).startswith(b"HTTP/1.1 431 ")
    partial = await raw_exchange(port, b"GET /?token=tester HTTP/1.1\r\nHost: x\r\n")
    assert partial.startswith(b"HTTP/1.1 408 ")
    # Nothing at all: closed once the first-byte deadline passes, with no answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(units(4)):
        assert await reader.read() == b""
    writer.close()
    # The relay still serves.
    async with session() as http, http.get(f"{stack.base}/echo?token=tester") as response:
        assert response.status == 200


async def test_http10_and_connection_close_end_the_connection(stack: Stack) -> None:
    port = stack.relay.public_port
    answer = await raw_exchange(port, b"GET /echo/old?token=tester HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") or answer.startswith(b"HTTP/1.0 200 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["path"] == "/echo/old"
    answer = await raw_exchange(
        port, b"GET /echo/c?token=tester HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert b" 200 " in answer.split(b"\r\n", 1)[0]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["path"] == "/echo/c"


async def test_keep_alive_serves_several_requests_on_one_connection(stack: Stack) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for n in range(5):
            async with http.get(f"{stack.base}/echo/{n}?token=tester") as response:
                assert (await response.json())["path"] == f"/echo/{n}"


async def test_pool_is_refilled_after_use(stack: Stack) -> None:
    state = stack.relay.clients["tester"]
    await wait_until(lambda: len(state.pool) == 2, units(3), "pool warmed to its size")
    async with session() as http:
        for _ in range(3):
            async with http.get(f"{stack.base}/echo?token=tester") as response:
                assert response.status == 200
    # Refilled on each take; the used tunnels come back as well, so the pool may hold more.
    await wait_until(lambda: len(state.pool) >= 2, units(3), "pool refilled to its size")


async def test_clean_connections_hand_their_tunnel_back(stack: Stack) -> None:
    state = stack.relay.clients["tester"]
    await wait_until(lambda: len(state.pool) == 2, units(3), "pool warmed to its size")
    before = stack.relay.pools.requested_total
    for n in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay.public_port)
        try:
            ending = "keep-alive" if n % 2 else "close"
            writer.write(
                f"GET /echo/{n}?token=tester HTTP/1.1\r\nHost: x\r\n"
                f"Connection: {ending}\r\n\r\n".encode()
            )
            async with asyncio.timeout(units(5)):
                if ending == "close":  # the server's side ends first, then the client's
                    answer = await reader.read(-1)
                else:  # the client's side ends first, once it has its answer
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    answer = head + await reader.readexactly(length)
                    writer.write_eof()
                    assert await reader.read(-1) == b""
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), (n, answer)
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["path"] == f"/echo/{n}"
    # Without reuse each connection costs a fresh tunnel: 20 here.
    assert stack.relay.pools.requested_total - before <= 4


async def _read_frame(reader: asyncio.StreamReader) -> frames.Message:
    async with asyncio.timeout(units(3)):
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        return frames.decode_body(await reader.readexactly(length))


def register(client_id: str, **fields: Any) -> frames.Register:
    """A Register as this version's arpc sends it."""
    return frames.Register(client_id=client_id, tunnel_protocol=frames.TUNNEL_PROTOCOL, **fields)


async def test_a_client_of_another_tunnel_protocol_is_refused_for_good(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay.control_port)
    try:
        await _send(writer, frames.Register(client_id="old-arpc"))  # no tunnel_protocol: 1
        result = await _read_frame(reader)
        assert isinstance(result, frames.RegisterResult) and not result.success
        assert "tunnel protocol 2" in (result.error or "") and not result.retryable
    finally:
        writer.close()


async def test_a_relay_of_another_tunnel_protocol_stops_the_client() -> None:
    """An older relay answers without tunnel_protocol: the client says why and stops."""

    async def old_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_frame(reader)
        writer.write(frames.encode(frames.RegisterResult(success=True)))
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(old_relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(ClientConfig(
        client_id="new-arpc", http_target=Target("127.0.0.1", 9), control_port=port
    ))  # fmt: skip
    try:
        async with client:
            async with asyncio.timeout(units(5)):
                await client.wait_closed()
        assert client.fatal_error is not None
        assert "tunnel protocol 1" in client.fatal_error.message
    finally:
        server.close()


async def _send(writer: asyncio.StreamWriter, message: frames.Message) -> None:
    writer.write(frames.encode(message))
    await writer.drain()


async def test_garbage_on_control_and_proxy_ports_is_refused_and_the_relay_lives(
    stack: Stack,
) -> None:
    relay = stack.relay
    for port in (relay.control_port, relay.proxy_port):
        for junk in (
            b"\x00\x00\x00\x05{bad}",
            struct.pack(">I", 1 << 30),
            frames.encode(frames.Heartbeat()),  # valid frame, wrong place
            os.urandom(64),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            await writer.drain()
            async with asyncio.timeout(units(4)):
                rest = await reader.read(-1)
            writer.close()
            if rest:
                (length,) = struct.unpack(">I", rest[:4])
                message = frames.decode_body(rest[4 : 4 + length])
                assert isinstance(message, frames.Error), message
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.proxy_port)
    await _send(writer, frames.NewProxyConn(proxy_conn_id="made-up", client_id="tester"))
    message = await _read_frame(reader)
    assert isinstance(message, frames.Error) and "no tunnel was requested" in message.message
    writer.close()
    async with session() as http, http.get(f"{stack.base}/echo?token=tester") as response:
        assert response.status == 200


async def test_registration_needs_the_secret(make_stack: StackFactory) -> None:
    stack = await make_stack(auth_token="s3cret", client_id=None)
    for secret in (None, "wrong"):
        client = Client(stack.client_config("guarded", auth_token=secret))
        await client.start()
        async with asyncio.timeout(units(5)):
            await client.wait_closed()
        assert client.fatal_error is not None and not client.fatal_error.retryable
        assert "--auth-token" in client.fatal_error.message
        await client.close()
    assert "guarded" not in stack.relay.clients
    await stack.start_client("guarded", auth_token="s3cret")
    async with session() as http, http.get(f"{stack.base}/echo?token=guarded") as response:
        assert response.status == 200


async def test_a_live_client_id_cannot_be_hijacked_but_can_be_resumed(stack: Stack) -> None:
    relay = stack.relay
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.control_port)
    await _send(writer, register("tester"))
    result = await _read_frame(reader)
    assert isinstance(result, frames.RegisterResult)
    assert not result.success and "in use" in (result.error or "") and result.retryable
    writer.close()
    # The owner presents its resume key (as arpc does on reconnect) and takes over at once.
    owner = stack.clients[0]
    assert owner.last_result is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.control_port)
    await _send(writer, register("tester", resume_key="wrong-key"))
    refused = await _read_frame(reader)
    assert isinstance(refused, frames.RegisterResult) and not refused.success
    writer.close()
    await owner.close()
    await wait_until(lambda: not relay.clients["tester"].online, units(3), "old link gone")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.control_port)
    await _send(writer, register("tester"))
    taken = await _read_frame(reader)
    assert isinstance(taken, frames.RegisterResult) and taken.success
    writer.close()


async def test_resume_key_takes_over_a_half_dead_registration(stack: Stack) -> None:
    relay = stack.relay
    key = stack.clients[0].last_result.resume_key  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.control_port)
    await _send(writer, register("tester", resume_key=key))
    result = await _read_frame(reader)
    assert isinstance(result, frames.RegisterResult) and result.success
    writer.close()


async def test_invalid_client_id_is_refused_for_good(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None)
    client = Client(stack.client_config("bad id/with slash"))
    await client.start()
    async with asyncio.timeout(units(5)):
        await client.wait_closed()
    assert client.fatal_error is not None and "not allowed" in client.fatal_error.message
    await client.close()


class FakeClient:
    """A hand-driven arpc, to put the relay in states a real client avoids."""

    def __init__(self, stack: Stack, client_id: str) -> None:
        self.stack = stack
        self.client_id = client_id
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []

    async def register(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stack.relay.control_port)
        self.writers.append(writer)
        await _send(writer, register(self.client_id))
        result = await _read_frame(reader)
        assert isinstance(result, frames.RegisterResult) and result.success

        async def pump_requests() -> None:
            while True:
                message = await _read_frame_forever(reader)
                if isinstance(message, frames.RequestNewProxyConn):
                    await self.requests.put(message.proxy_conn_id)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(units(0.2))
                await _send(writer, frames.Heartbeat())

        self.task = asyncio.create_task(pump_requests())
        self.heartbeat = asyncio.create_task(heartbeat())

    async def open_tunnel(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(units(3)):
            proxy_conn_id = await self.requests.get()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stack.relay.proxy_port)
        self.writers.append(writer)
        await _send(
            writer, frames.NewProxyConn(proxy_conn_id=proxy_conn_id, client_id=self.client_id)
        )
        return reader, writer

    async def close(self) -> None:
        self.task.cancel()
        self.heartbeat.cancel()
        for writer in self.writers:
            writer.close()


async def _read_frame_forever(reader: asyncio.StreamReader) -> frames.Message:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return frames.decode_body(await reader.readexactly(length))


async def test_a_dead_pooled_tunnel_never_eats_a_request(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None, pool_size=2)
    fake = FakeClient(stack, "fake")
    await fake.register()
    state = stack.relay.clients["fake"]
    for _ in range(2):  # fill the pool, then kill both tunnels from the client's side
        _, writer = await fake.open_tunnel()
        await wait_until(lambda: len(state.pool) >= 1, units(3), "tunnel pooled")
        writer.close()
    await wait_until(lambda: len(state.pool) == 2, units(3), "both pooled")
    await asyncio.sleep(units(0.05))  # let the FINs land

    async def serve_one() -> None:
        while True:
            reader, writer = await fake.open_tunnel()
            start = await _read_frame_forever(reader)
            assert isinstance(start, frames.StartProxy)
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            assert (await reader.readexactly(length)).endswith(b"\r\n\r\n")
            writer.write(
                data_frame(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfresh"
                )
                + END_FRAME
            )
            await writer.drain()
            writer.close()

    server = asyncio.create_task(serve_one())
    try:
        async with session() as http, http.get(f"{stack.base}/?token=fake") as response:
            assert response.status == 200
            assert await response.text() == "fresh"
    finally:
        server.cancel()
        await fake.close()


async def test_no_tunnel_in_time_is_504(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None, pool_size=0)
    fake = FakeClient(stack, "mute")
    await fake.register()
    try:
        async with session() as http, http.get(f"{stack.base}/?token=mute") as response:
            assert response.status == 504
            assert "did not open a tunnel" in await response.text()
    finally:
        await fake.close()


async def test_local_service_down_is_502_from_the_client(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None)
    from tests.conftest import free_port

    await stack.start_client("nolocal", http_target=Target("127.0.0.1", free_port()))
    async with session() as http, http.get(f"{stack.base}/?token=nolocal") as response:
        assert response.status == 502
        assert "cannot reach the local service" in await response.text()


async def test_client_reregisters_after_relay_restart(make_stack: StackFactory) -> None:
    stack = await make_stack()
    client = stack.clients[0]
    ports = (stack.relay.control_port, stack.relay.proxy_port, stack.relay.public_port)
    await stack.relay.close()
    await wait_until(lambda: not client.registered.is_set(), units(3), "client saw the drop")
    stack2 = await make_stack(
        client_id=None, control_port=ports[0], proxy_port=ports[1], public_port=ports[2]
    )
    await wait_until(lambda: "tester" in stack2.relay.clients, units(5), "re-registered")
    async with session() as http, http.get(f"{stack2.base}/echo?token=tester") as response:
        assert response.status == 200
    assert client.registrations == 2


async def test_client_gone_mid_transfer_closes_the_public_side(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id="flaky")
    client = stack.clients[0]
    received = 0
    async with session() as http:
        async with http.get(f"{stack.base}/blob/{500 * MB}?token=flaky") as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_chunked(MB):
                    received += len(chunk)
                    if received >= 5 * MB and not client.closing:
                        await client.close()
        assert 5 * MB <= received < 500 * MB
        state = stack.relay.clients["flaky"]
        await wait_until(lambda: not state.online, units(3), "relay saw the client go")
        assert not state.pool and not state.waiters
        # The same client comes back; the pool recovers and traffic flows again.
        await stack.start_client("flaky")
        await wait_until(lambda: len(state.pool) == 2, units(3), "pool recovered")
        async with http.get(f"{stack.base}/echo?token=flaky") as response:
            assert response.status == 200


async def test_spare_tunnels_left_by_a_burst_are_closed_once_idle(stack: Stack) -> None:
    state = stack.relay.clients["tester"]
    await wait_until(lambda: len(state.pool) == 2, units(3), "pool warmed to its size")
    async with session() as http:

        async def slow(n: int) -> None:
            async with http.get(f"{stack.base}/slow?s=0.2&n={n}&token=tester") as response:
                assert await response.text() == f"slow {n}"

        await asyncio.gather(*(slow(n) for n in range(10)))
    # The burst's tunnels come back clean once its connections close...
    await wait_until(lambda: len(state.pool) > 2, units(3), "the burst's tunnels pooled")
    # ...and the tick closes those beyond the pool size after they idled past idle_tunnel.
    await wait_until(lambda: len(state.pool) == 2, units(5), "spare tunnels closed")
    async with session() as http, http.get(f"{stack.base}/echo?token=tester") as response:
        assert response.status == 200


async def test_reused_tunnels_survive_clean_and_aborted_connections(stack: Stack) -> None:
    """Many connections at once ending every way; then every pooled tunnel still works and
    nothing is left open."""
    port = stack.relay.public_port
    state = stack.relay.clients["tester"]
    await wait_until(lambda: len(state.pool) == 2, units(3), "pool warmed to its size")
    fds_before = len(os.listdir("/proc/self/fd"))

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(units(10)):
                if n % 3 == 2:  # a client that resets in the middle of a large download
                    writer.write(
                        f"GET /blob/{20 * MB}?token=tester HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    )
                    await reader.readexactly(MB)
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                ending = "keep-alive" if n % 3 else "close"
                writer.write(
                    f"GET /echo/{n}?token=tester HTTP/1.1\r\nHost: x\r\n"
                    f"Connection: {ending}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                assert json.loads(await reader.readexactly(length))["path"] == f"/echo/{n}"
                writer.write_eof()
                assert await reader.read(-1) == b""
        finally:
            writer.close()

    await asyncio.gather(*(one(n) for n in range(60)))
    # Whatever is pooled now carries requests: nothing half-finished came back to the pool.
    for n in range(2 * stack.relay.pools.max_idle):
        request = f"GET /echo/after{n}?token=tester HTTP/1.1\r\nHost: x\r\nConnection: close"
        answer = await raw_exchange(port, f"{request}\r\n\r\n".encode())
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["path"] == f"/echo/after{n}"
    # Connections and tunnels opened for the burst are closed or idle in the pool (each idle
    # tunnel holds one socket on each side, in this one process).
    await wait_until(
        lambda: len(os.listdir("/proc/self/fd")) <= fds_before + 2 * len(state.pool) + 4,
        units(5),
        "sockets of finished connections closed",
    )
    assert len(state.pool) <= stack.relay.pools.max_idle


async def banner_server() -> tuple[asyncio.Server, int]:
    """A service that speaks first (as SSH and MySQL do), then echoes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"BANNER ready\n")
        await writer.drain()
        while line := await reader.readline():
            writer.write(b"echo " + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_dedicated_tcp_port_with_a_server_that_speaks_first(
    make_stack: StackFactory,
) -> None:
    from tests.conftest import free_port

    public_tcp = free_port()
    stack = await make_stack(client_id=None, tcp_ports=range(public_tcp, public_tcp + 1))
    server, port = await banner_server()
    try:
        client = await stack.start_client("db", tcp_targets={public_tcp: Target("127.0.0.1", port)})
        assert client.last_result is not None and client.last_result.tcp_ports == [public_tcp]
        reader, writer = await asyncio.open_connection("127.0.0.1", public_tcp)
        async with asyncio.timeout(units(5)):
            assert await reader.readline() == b"BANNER ready\n"
            writer.write(b"hi\n")
            assert await reader.readline() == b"echo hi\n"
        writer.close()
    finally:
        server.close()


async def test_tcp_ports_outside_the_range_or_taken_are_refused(make_stack: StackFactory) -> None:
    from tests.conftest import free_port

    allowed = free_port()
    stack = await make_stack(client_id=None, tcp_ports=range(allowed, allowed + 1))
    outside = Client(stack.client_config("o", tcp_targets={allowed + 1: stack.target}))
    await outside.start()
    async with asyncio.timeout(units(5)):
        await outside.wait_closed()
    assert outside.fatal_error is not None and "outside" in outside.fatal_error.message
    await outside.close()
    await stack.start_client("first", tcp_targets={allowed: stack.target})
    second = Client(stack.client_config("second", tcp_targets={allowed: stack.target}))
    await second.start()
    async with asyncio.timeout(units(5)):
        await second.wait_closed()
    assert second.fatal_error is not None and "held by another client" in second.fatal_error.message
    await second.close()


async def test_tcp_port_is_held_during_retention_and_freed_after(make_stack: StackFactory) -> None:
    from tests.conftest import free_port

    public_tcp = free_port()
    stack = await make_stack(client_id=None, tcp_ports=range(public_tcp, public_tcp + 1))
    client = await stack.start_client("holder", tcp_targets={public_tcp: stack.target})
    await client.close()
    state = stack.relay.clients["holder"]
    await wait_until(lambda: not state.online, units(3), "offline")
    assert public_tcp in state.tcp_ports  # still held for its owner
    other = Client(stack.client_config("other", tcp_targets={public_tcp: stack.target}))
    await other.start()
    async with asyncio.timeout(units(5)):
        await other.wait_closed()
    assert other.fatal_error is not None
    await other.close()
    await wait_until(lambda: "holder" not in stack.relay.clients, units(8), "retention over")
    await stack.start_client("other", tcp_targets={public_tcp: stack.target})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_on_control_and_proxy_links(
    make_stack: StackFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    stack = await make_stack(client_id=None, tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    await stack.start_client("secure", tls=context)
    payload = blob(3 * MB)
    async with (
        session() as http,
        http.post(f"{stack.base}/sha256?token=secure", data=payload) as response,
    ):
        assert (await response.json())["sha256"] == hashlib.sha256(payload).hexdigest()
    # A client that does not trust the certificate never registers.
    untrusting = Client(stack.client_config("doubter", tls=ssl.create_default_context()))
    await untrusting.start()
    await asyncio.sleep(units(0.5))
    assert not untrusting.registered.is_set() and "doubter" not in stack.relay.clients
    await untrusting.close()


async def test_public_connection_limit_answers_503(make_stack: StackFactory) -> None:
    from arp.config import Limits

    stack = await make_stack(limits=Limits(max_public_connections=2))
    port = stack.relay.public_port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await wait_until(lambda: stack.relay.public.count == 2, units(3), "two held")
    answer = await raw_exchange(port, b"GET /echo?token=tester HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ") and b"connection limit" in answer
    for _, writer in idle:
        writer.close()
    await wait_until(lambda: stack.relay.public.count == 0, units(3), "released")
    async with session() as http, http.get(f"{stack.base}/echo?token=tester") as response:
        assert response.status == 200


async def test_too_many_waiting_for_tunnels_is_503(make_stack: StackFactory) -> None:
    from arp.config import Limits

    stack = await make_stack(client_id=None, pool_size=0, limits=Limits(max_pending_tunnels=1))
    fake = FakeClient(stack, "slow")
    await fake.register()
    try:
        async with session() as http:
            first = asyncio.create_task(http.get(f"{stack.base}/?token=slow"))
            await wait_until(
                lambda: len(stack.relay.clients["slow"].requested) == 1, units(3), "one waiting"
            )
            async with http.get(f"{stack.base}/?token=slow") as response:
                assert response.status == 503
                assert "too many requests waiting" in await response.text()
            async with await first as response:
                assert response.status == 504
    finally:
        await fake.close()


async def test_the_tick_drops_pooled_tunnels_that_died_idle(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None, pool_size=2)
    fake = FakeClient(stack, "idle")
    await fake.register()
    state = stack.relay.clients["idle"]
    try:
        writers = []
        for _ in range(2):
            _, writer = await fake.open_tunnel()
            writers.append(writer)
        await wait_until(lambda: len(state.pool) == 2, units(3), "both pooled")
        for writer in writers:
            writer.close()
        # No request comes: the periodic tick itself finds them dead and asks for new ones.
        await wait_until(lambda: not state.pool, units(3), "dead tunnels pruned")
        assert len(state.requested) >= 2
    finally:
        await fake.close()
