"""Per-request routing across nodes: on one keep-alive connection to node B, requests for a
client held by node A and for one held by B itself, in any order and pipelined, each reach
the client their own token names."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from arp.client.config import RelayAddress, Target
from arp.client.control import Client
from tests.cluster.conftest import NodeFactory
from tests.conftest import units
from tests.relay.conftest import Stack, wait_until


@pytest.fixture
async def named_targets() -> AsyncIterator[Callable[[str], Target]]:
    runners: list[web.AppRunner] = []
    targets: dict[str, Target] = {}

    async def start(name: str) -> Target:
        async def who(request: web.Request) -> web.Response:
            body = await request.read()
            return web.Response(text=f"{name} {request.path_qs} {len(body)}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", who)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return Target("127.0.0.1", port)

    for name in ("alpha", "beta"):
        targets[name] = await start(name)
    yield targets.__getitem__
    for runner in runners:
        await runner.cleanup()


def request(token: str, n: int, body: bytes = b"") -> bytes:
    head = f"POST /n{n}?token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[str]:
    bodies = []
    async with asyncio.timeout(units(10)):
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            match = re.search(rb"Content-Length: (\d+)", head, re.I)
            assert match
            bodies.append((await reader.readexactly(int(match.group(1)))).decode())
    return bodies


async def test_one_connection_to_b_alternates_between_a_client_on_a_and_one_on_b(
    make_node: NodeFactory, named_targets: Callable[[str], Target]
) -> None:
    a = await make_node("a")
    b = await make_node("b", bind="127.0.0.2")
    await a.start_client("alpha", http_target=named_targets("alpha"))
    b.clients.append(await _client_on(b, "beta", named_targets("beta")))
    remote = b.relay.remote
    assert remote is not None
    await wait_until(lambda: "alpha" in remote.shadows, units(5), "b has no shadow")
    reader, writer = await asyncio.open_connection("127.0.0.2", b.relay.public_port)
    try:
        order = ["alpha", "beta", "alpha", "alpha", "beta", "alpha"]
        # One at a time.
        for n, token in enumerate(order):
            writer.write(request(token, n, b"x" * n))
            assert await read_responses(reader, 1) == [f"{token} /n{n}?token={token} {n}"]
        # Pipelined: written at once, answered in order, each by its own client.
        writer.write(b"".join(request(t, 10 + n, b"y" * n) for n, t in enumerate(order)))
        answers = await read_responses(reader, len(order))
        assert answers == [f"{t} /n{10 + n}?token={t} {n}" for n, t in enumerate(order)]
    finally:
        writer.close()


async def _client_on(node: Stack, client_id: str, target: Target) -> Client:
    relay = node.relay
    config = node.client_config(
        client_id,
        http_target=target,
        relays=(RelayAddress("127.0.0.2", relay.control_port, relay.proxy_port),),
    )
    client = Client(config)
    await client.start()
    await client.wait_registered(units(5))
    return client
