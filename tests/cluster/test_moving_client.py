"""arpc with several relays: parsing the list, registering with the next when one fails, and
moving at once when a node stopping gracefully says so."""

from __future__ import annotations

import asyncio
import time

import pytest

from arp.client.config import RelayAddress, Target, parse_relays
from tests.cluster.conftest import NodeFactory
from tests.conftest import free_port, units
from tests.relay.conftest import wait_until


def test_parse_relays() -> None:
    assert parse_relays("a", 1, 2) == (RelayAddress("a", 1, 2),)
    assert parse_relays("a:5,b:6:7, c", 1, 2) == (
        RelayAddress("a", 5, 2),
        RelayAddress("b", 6, 7),
        RelayAddress("c", 1, 2),
    )
    assert parse_relays("[::1]:5:6,::1", 1, 2) == (
        RelayAddress("::1", 5, 6),
        RelayAddress("::1", 1, 2),
    )
    for bad in ("a,,b", "a:x", "a:1:2:3", "a:70000", ":5"):
        with pytest.raises(ValueError, match="--server-addr"):
            parse_relays(bad, 1, 2)


def relays_of(*nodes: object) -> tuple[RelayAddress, ...]:
    return tuple(
        RelayAddress("127.0.0.1", n.relay.control_port, n.relay.proxy_port)  # type: ignore[attr-defined]
        for n in nodes
    )


async def test_a_relay_that_is_down_is_passed_over(make_node: NodeFactory) -> None:
    b = await make_node("b")
    down = RelayAddress("127.0.0.1", free_port(), free_port())
    client = await b.start_client("tester", relays=(down, *relays_of(b)))
    assert client.relay == relays_of(b)[0]
    assert b.relay.clients["tester"].online


async def test_a_node_stopping_gracefully_sends_its_clients_to_the_next(
    make_node: NodeFactory,
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    client = await a.start_client("tester", relays=relays_of(a, b))
    assert "tester" in a.relay.clients
    started = time.monotonic()
    await a.relay.close()
    await wait_until(
        lambda: "tester" in b.relay.clients and b.relay.clients["tester"].online,
        units(5),
        "the client did not move to b",
    )
    # Told to move, it went at once: well before the move grace or any lease ran out.
    assert time.monotonic() - started < a.relay.cluster.bounds.move_grace  # type: ignore[union-attr]
    await client.wait_registered(units(2))
    assert client.relay == relays_of(b)[0]
    # And it is served there.
    reader, writer = await asyncio.open_connection("127.0.0.1", b.relay.public_port)
    writer.write(b"GET /echo?token=tester HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(units(5)):
        response = await reader.read(-1)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200")


def test_arpc_flags_take_several_relays(monkeypatch: pytest.MonkeyPatch) -> None:
    from arp.client import cli

    for name in ("CONTROL_PORT", "PROXY_PORT", "ARPC_SERVER_ADDR"):
        monkeypatch.delenv(name, raising=False)

    args = cli.build_parser().parse_args(
        ["--server-addr", "a.example:5:6,b.example", "--local-port", "3000", "--client-id", "x"]
    )
    config = cli.config_from_args(args, Target("127.0.0.1", 3000), "x")
    assert config.addresses == (
        RelayAddress("a.example", 5, 6),
        RelayAddress("b.example", 17001, 17002),
    )
    assert (config.server_addr, config.control_port, config.proxy_port) == ("a.example", 5, 6)
    single = cli.config_from_args(
        cli.build_parser().parse_args(["--server-addr", "relay.example", "--local-port", "1"]),
        Target("127.0.0.1", 1),
        "x",
    )
    assert single.relays == () and single.server_addr == "relay.example"
