"""Per-request routing on the public port, over real sockets: every request on one connection
reaches the client its own token names, and the service learns who is calling."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import ssl
import struct
from pathlib import Path

import pytest

from arp.protocol.forwarded import parse_networks
from tests.conftest import units
from tests.relay.conftest import StackFactory
from tests.relay.routing import NAMES, Service, connection, read_response, services
from tests.relay.test_relay_functional import tls_files  # noqa: F401 - a fixture

A, B, C = NAMES


def request(
    token: str,
    source: str,
    path: str = "/who",
    *,
    extra: str = "",
    body: bytes = b"",
    method: str = "GET",
) -> bytes:
    """A request naming `token` by `source` (query, header, cookie or subdomain)."""
    target, host, headers = path, "relay.test", ""
    if source == "query":
        target += ("&" if "?" in path else "?") + f"token={token}"
    elif source == "header":
        headers += f"X-ARP-Token: {token}\r\n"
    elif source == "cookie":
        headers += f"Cookie: arp_token={token}\r\n"
    elif source == "subdomain":
        host = f"{token}.relay.test"
    if body and "Transfer-Encoding" not in extra:
        headers += f"Content-Length: {len(body)}\r\n"
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}{extra}\r\n"
    return head.encode() + body


def assert_no_foreign_tokens(found: dict[str, Service]) -> None:
    for service in found.values():
        assert service.foreign_tokens() == [], f"{service.name} saw another client's token"


@pytest.mark.parametrize("source", ["query", "header", "cookie", "subdomain"])
async def test_one_connection_a_then_b_then_a(make_stack: StackFactory, source: str) -> None:
    stack = await make_stack(client_id=None, domain="relay.test")
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        for name in (A, B, A):
            writer.write(request(name, source))
            response = await read_response(reader)
            assert response.status == 200
            assert response.json()["client"] == name
        assert [s["client"] for s in found[A].log] == [A, A]
        assert [s["client"] for s in found[B].log] == [B]
        assert_no_foreign_tokens(found)


async def test_a_pipelined_burst_is_answered_in_order_by_the_right_clients(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(client_id=None)
    order = [A, B, A, B, C, C, A]
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        writer.write(b"".join(request(n, "header", f"/n{i}") for i, n in enumerate(order)))
        for i, name in enumerate(order):
            seen = (await read_response(reader)).json()
            assert (seen["client"], seen["path"]) == (name, f"/n{i}")
        assert_no_foreign_tokens(found)


async def test_the_same_request_again_is_rewritten_and_routed_every_time(
    make_stack: StackFactory,
) -> None:
    """A read that repeats the last request byte for byte goes to the tunnel in the call that
    reads it (`sockio.forward_if_same`); whole, cut in two, doubled in one read, or after
    another client's request, each reaches its own client with the relay's headers."""
    stack = await make_stack(client_id=None)
    again, other = request(A, "header", "/again"), request(B, "header", "/other")
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        sent = 0
        for chunks in (
            [again],
            [again],
            [again[:10], again[10:]],  # a read that is part of it: fed and parsed as usual
            [again + again],  # two in one read
            [other],
            [again],
            [again],
        ):
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(units(0.02))
            for _ in range(len(chunks[0]) // len(again) or 1):
                seen = (await read_response(reader)).json()
                sent += 1
                assert seen["headers"]["x-forwarded-for"] == "127.0.0.1", sent
        assert [s["path"] for s in found[A].log] == ["/again"] * 7
        assert [s["path"] for s in found[B].log] == ["/other"]
        assert all(s["headers"]["x-forwarded-host"] == "relay.test" for s in found[A].log)
        assert_no_foreign_tokens(found)


async def test_bodies_of_both_framings_between_route_changes(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None)
    big = os.urandom(300_000)
    chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    steps = [
        (A, request(A, "header", "/cl", body=b"first body", method="POST"), b"first body"),
        (
            B,
            request(B, "header", "/te", extra="Transfer-Encoding: chunked\r\n", method="POST")
            + chunked,
            b"hello world",
        ),
        (A, request(A, "header", "/big", body=big, method="PUT"), big),
        (B, request(B, "header", "/empty"), b""),
    ]
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        # All written at once: the relay must find each body's end to route the next request.
        writer.write(b"".join(data for _, data, _ in steps))
        for name, _, body in steps:
            seen = (await read_response(reader)).json()
            assert seen["client"] == name
            assert seen["body"].encode("latin-1") == body
        assert_no_foreign_tokens(found)


def ws_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_an_upgrade_after_a_route_change_turns_the_connection_raw(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(client_id=None)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "query", "/first"))
        assert (await read_response(reader)).json()["client"] == A
        writer.write(request(B, "query", "/ws", extra=upgrade))
        assert (await read_response(reader)).status == 101
        # Raw from here: a WebSocket frame naming another token is not a request.
        writer.write(ws_frame(f"GET /x?token={A} HTTP/1.1"))
        async with asyncio.timeout(units(5)):
            header = await reader.readexactly(2)
            text = (await reader.readexactly(header[1] & 0x7F)).decode()
        assert text == f"{B}: GET /x?token={A} HTTP/1.1"
        assert [s["client"] for s in found[A].log] == [A]
        assert [s["path"] for s in found[B].log] == ["/ws"]


async def test_an_unknown_token_after_a_routed_request_is_answered_like_a_fresh_one(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(client_id=None)
    async with services(stack) as found, connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "header", "/one") + request("nobody", "header", "/two"))
        assert (await read_response(reader)).json()["client"] == A
        refused = await read_response(reader)
        assert refused.status == 404
        assert b"no client is registered with token nobody" in refused.body
        assert await reader.read() == b""  # the relay's own answer closes the connection
        assert [s["path"] for s in found[A].log] == ["/one"]
        # A request naming no client at all after a routed one: the same as fresh, too.
    async with services(stack), connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "header", "/one") + b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await read_response(reader)).json()["client"] == A
        assert (await read_response(reader)).status == 404


async def test_the_original_token_path_form(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None)
    async with services(stack), connection(stack.relay.public_port) as (reader, writer):
        writer.write(f"GET /?token={B}/sessions&limit=5 HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        response = await read_response(reader)
        seen = response.json()
        assert (seen["client"], seen["path"], seen["query"]) == (B, "/sessions", "limit=5")
        assert f"arp_token={B}" in response.headers.get("set-cookie", "")


async def test_the_service_learns_who_is_calling_and_forgeries_are_removed(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(client_id=None)
    forged = (
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
        "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n"
    )
    async with services(stack), connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "header", "/plain") + request(A, "header", "/forged", extra=forged))
        plain = (await read_response(reader)).json()["headers"]
        assert plain["x-forwarded-for"] == "127.0.0.1"
        assert plain["x-real-ip"] == "127.0.0.1"
        assert plain["x-forwarded-proto"] == "http"
        assert plain["x-forwarded-host"] == "relay.test"
        spoofed = (await read_response(reader)).json()["headers"]
        assert spoofed["x-forwarded-for"] == "127.0.0.1"
        assert spoofed["x-real-ip"] == "127.0.0.1"
        assert spoofed["x-forwarded-host"] == "relay.test"
        assert spoofed["x-forwarded-proto"] == "http"


async def test_a_trusted_proxy_keeps_its_headers_and_the_relay_appends(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(client_id=None, trusted_proxies=parse_networks(["127.0.0.0/8"]))
    front = (
        "X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example\r\n"
    )
    async with services(stack), connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "header", "/", extra=front))
        seen = (await read_response(reader)).json()["headers"]
        assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert seen["x-real-ip"] == "203.0.113.7"
        assert seen["x-forwarded-proto"] == "https"
        assert seen["x-forwarded-host"] == "public.example"


async def test_no_forwarded_headers_leaves_requests_untouched(make_stack: StackFactory) -> None:
    stack = await make_stack(client_id=None)
    async with (
        services(stack, forwarded_headers=False),
        connection(stack.relay.public_port) as (reader, writer),
    ):
        writer.write(request(A, "header", "/", extra="X-Forwarded-For: 10.1.1.1\r\n"))
        seen = (await read_response(reader)).json()["headers"]
        assert seen["x-forwarded-for"] == "10.1.1.1"
        assert "x-real-ip" not in seen


def parse_proxy_v2(data: bytes) -> tuple[tuple[str, int], tuple[str, int], int]:
    """A PROXY v2 header, read by the spec (not by the relay's encoder): (src, dst, its size)."""
    assert data[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert data[12] == 0x21  # version 2, PROXY
    family, length = data[13], struct.unpack(">H", data[14:16])[0]
    block = data[16 : 16 + length]
    size = 4 if family == 0x11 else 16
    assert family in (0x11, 0x21)
    src = ipaddress.ip_address(block[:size])
    dst = ipaddress.ip_address(block[size : 2 * size])
    ports = struct.unpack(">HH", block[2 * size : 2 * size + 4])
    return (str(src), ports[0]), (str(dst), ports[1]), 16 + length


async def test_proxy_protocol_v2_on_a_raw_port_names_the_real_peer(
    make_stack: StackFactory,
) -> None:
    from arp.client.config import Target
    from tests.conftest import free_port

    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def raw_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while len(data) < 16 + 12 + 5:
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        await received.put(data)
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(raw_service, "127.0.0.1", 0)
    local_port = server.sockets[0].getsockname()[1]
    public_tcp = free_port()
    stack = await make_stack(client_id=None, tcp_ports=range(public_tcp, public_tcp + 1))
    try:
        await stack.start_client(
            "db", tcp_targets={public_tcp: Target("127.0.0.1", local_port)}, proxy_protocol=True
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", public_tcp)
        me = writer.get_extra_info("sockname")
        writer.write(b"hello")
        async with asyncio.timeout(units(10)):
            data = await received.get()
            assert await reader.read() == b"bye"
        writer.close()
        src, dst, size = parse_proxy_v2(data)
        assert src == ("127.0.0.1", me[1])
        assert dst == ("127.0.0.1", public_tcp)
        assert data[size:] == b"hello"
    finally:
        server.close()


async def test_a_keep_alive_connection_idle_past_its_deadline_is_ended(
    make_stack: StackFactory,
) -> None:
    from dataclasses import replace

    from tests.relay.conftest import fast_timeouts

    stack = await make_stack(
        client_id=None, timeouts=replace(fast_timeouts(), keepalive_idle=units(0.3))
    )
    async with services(stack), connection(stack.relay.public_port) as (reader, writer):
        writer.write(request(A, "header", "/one"))
        assert (await read_response(reader)).json()["client"] == A
        async with asyncio.timeout(units(5)):
            assert await reader.read() == b""  # ended by the relay, cleanly
        await asyncio.sleep(units(0.2))
        assert stack.relay.public.count == 0


async def test_tunnels_over_tls_are_routed_per_request_too(
    make_stack: StackFactory,
    tls_files: tuple[Path, Path],  # noqa: F811 - the fixture imported above
) -> None:
    cert, key = tls_files
    stack = await make_stack(client_id=None, tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    async with (
        services(stack, tls=context) as found,
        connection(stack.relay.public_port) as (reader, writer),
    ):
        for name in (A, B, A, C):
            writer.write(request(name, "header", body=b"x" * 70_000, method="POST"))
            response = await read_response(reader)
            assert response.json()["client"] == name
            assert len(response.json()["body"]) == 70_000
        assert_no_foreign_tokens(found)
