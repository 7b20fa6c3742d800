"""Every node serves every client's dedicated TCP ports: a raw TCP connection to node B's port
reaches the client held by node A (nodes on 127.0.0.1 and 127.0.0.2, the same port number)."""

from __future__ import annotations

import asyncio

from arp.client.config import RelayAddress
from tests.cluster.conftest import NodeFactory
from tests.conftest import free_port, units
from tests.relay.conftest import wait_until


async def raw_http(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(units(5)):
        data = await reader.read(-1)
    writer.close()
    return data


async def test_a_tcp_port_of_a_client_on_a_is_served_by_b(make_node: NodeFactory) -> None:
    port = free_port()
    grant = range(port, port + 1)
    a = await make_node("a", tcp_ports=grant)
    b = await make_node("b", bind="127.0.0.2", tcp_ports=grant)
    await a.start_client("tester", tcp_targets={port: a.target})
    remote_ports = b.relay.remote_ports
    assert remote_ports is not None
    await wait_until(lambda: port in remote_ports.ports, units(5), "b did not bind it")
    for host in ("127.0.0.1", "127.0.0.2"):
        response = await raw_http(host, port, "/echo?via=" + host)
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert host.encode() in response
    assert b.relay.cluster is not None and b.relay.cluster.forwarded == 1
    assert a.relay.peers is not None and a.relay.peers.carried == 1


async def test_the_port_follows_its_client_to_another_node(make_node: NodeFactory) -> None:
    port = free_port()
    grant = range(port, port + 1)
    a = await make_node("a", tcp_ports=grant)
    b = await make_node("b", bind="127.0.0.2", tcp_ports=grant)
    relays = tuple(
        RelayAddress(host, n.relay.control_port, n.relay.proxy_port)
        for host, n in (("127.0.0.1", a), ("127.0.0.2", b))
    )
    await a.start_client("tester", tcp_targets={port: a.target}, relays=relays)
    remote_ports = b.relay.remote_ports
    assert remote_ports is not None
    await wait_until(lambda: port in remote_ports.ports, units(5), "b did not bind it")
    await a.relay.close()  # gracefully: the client moves to b, which binds the port itself
    await wait_until(
        lambda: "tester" in b.relay.clients and port in b.relay.clients["tester"].tcp_ports,
        units(5),
        "the client did not take its port to b",
    )
    assert port not in remote_ports.ports
    response = await raw_http("127.0.0.2", port, "/echo")
    assert response.startswith(b"HTTP/1.1 200")
