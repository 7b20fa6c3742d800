"""Relay nodes sharing one Redis, on loopback: the hijack rule across nodes, the peer link,
a client that moves, a node that stops gracefully."""

from __future__ import annotations

import asyncio
import json

import pytest

from arp.config import Limits
from arp.errors import ArpError
from arp.net.links import Link
from arp.protocol import frames
from arp.relay.peer import PeerUnreachable, carry
from tests.cluster.conftest import NodeFactory, cluster_settings
from tests.conftest import units
from tests.gateway.conftest import RedisServer
from tests.relay.conftest import wait_until


async def register_raw(
    port: int, client_id: str, resume_key: str | None = None, *, keep: bool = False
) -> tuple[frames.Message, asyncio.StreamWriter]:
    """One Register on a control port, by hand; the answer, and the link (closed unless
    `keep`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        message = frames.Register(
            client_id=client_id, resume_key=resume_key, tunnel_protocol=frames.TUNNEL_PROTOCOL
        )
        writer.write(frames.encode(message))
        decoder = frames.FrameDecoder()
        async with asyncio.timeout(units(5)):
            while True:
                data = await reader.read(65536)
                assert data, "the control link closed without an answer"
                for answer in decoder.feed(data):
                    return answer, writer
    finally:
        if not keep:
            writer.close()


async def http_over(link: Link, path: str) -> bytes:
    await link.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    async with asyncio.timeout(units(5)):
        while chunk := await link.recv(65536):
            data += chunk
    link.close()
    return data


async def test_a_live_client_id_is_refused_on_another_node(make_node: NodeFactory) -> None:
    a = await make_node("a")
    b = await make_node("b")
    await a.start_client("tester")
    answer, _ = await register_raw(b.relay.control_port, "tester")
    assert isinstance(answer, frames.RegisterResult)
    assert not answer.success and answer.retryable
    assert "in use" in (answer.error or "") and "node a" in (answer.error or "")
    assert "tester" not in b.relay.clients


async def test_the_peer_link_carries_a_connection_to_the_holding_node(
    make_node: NodeFactory, redis_server: RedisServer, prefix: str
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    await a.start_client("tester")
    assert b.relay.cluster is not None and a.relay.peers is not None
    assert await b.relay.cluster.locate("tester") == "a"
    peer = await b.relay.cluster.peer_of("a")
    assert peer == a.relay.peers.advertise
    settings = b.relay.config.cluster
    assert settings is not None
    link, rest = await carry(settings, peer, "tester", tcp_port=None, tls=None, limits=Limits())
    assert rest == b""
    response = await http_over(link, "/echo?via=b")
    assert response.startswith(b"HTTP/1.1 200")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["query"] == {"via": "b"}
    assert a.relay.peers.carried == 1
    # A client the holder does not have: its answer, carried back.
    with pytest.raises(ArpError) as refused:
        await carry(settings, peer, "nobody", tcp_port=None, tls=None, limits=Limits())
    assert refused.value.status == 404
    # A node that does not know the secret is not served.
    stranger = cluster_settings(redis_server.url, prefix, "c", secret="another-secret-entirely")
    with pytest.raises(PeerUnreachable, match="did not carry"):
        await carry(stranger, peer, "tester", tcp_port=None, tls=None, limits=Limits())
    assert a.relay.peers.carried == 1


async def test_a_client_that_moves_keeps_its_id_and_its_old_node_lets_go(
    make_node: NodeFactory,
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    client = await a.start_client("tester")
    key = client._resume_key
    # The same client comes to b (its link to a broke unnoticed): the resume key proves it.
    answer, link = await register_raw(b.relay.control_port, "tester", resume_key=key, keep=True)
    try:
        assert isinstance(answer, frames.RegisterResult) and answer.success
        # a's next renewal finds the claim lost and lets the client go; the arpc a had is
        # refused there from then on (it is no longer the live holder).
        await wait_until(lambda: "tester" not in a.relay.clients, units(5), "a kept the client")
        await asyncio.sleep(units(0.5))
        assert "tester" not in a.relay.clients or a.relay.clients["tester"].control is None
    finally:
        link.close()


async def test_a_node_stopping_gracefully_gives_its_clients_back(
    make_node: NodeFactory,
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    await a.start_client("tester")
    assert b.relay.cluster is not None
    await a.relay.close()
    b.relay.cluster.invalidate("tester")
    assert await b.relay.cluster.locate("tester") is None
    nodes = {n.node_id: n.alive for n in await b.relay.cluster.nodes()}
    assert nodes == {"a": False, "b": True}


async def test_http_and_websocket_through_b_reach_the_client_on_a(
    make_node: NodeFactory,
) -> None:
    import aiohttp

    a = await make_node("a")
    b = await make_node("b")
    await a.start_client("tester")
    remote = b.relay.remote
    assert remote is not None
    await wait_until(lambda: "tester" in remote.shadows, units(5), "b has no shadow")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http:
        base = f"http://127.0.0.1:{b.relay.public_port}"
        for n in range(5):  # keep-alive: the same peer tunnel is reused
            async with http.get(base + f"/echo?token=tester&n={n}") as reply:
                assert reply.status == 200
                assert (await reply.json())["query"]["n"] == str(n)
        async with http.ws_connect(base + "/ws?token=tester") as ws:
            await ws.send_str("hi")
            assert (await ws.receive()).data == "echo: hi"
        async with http.get(base + "/echo?token=nobody") as reply:
            assert reply.status == 404
    assert a.relay.peers is not None and 1 <= a.relay.peers.carried <= 4
