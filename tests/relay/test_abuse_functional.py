"""The relay under a URL holder's abuse (issue 14 items 1-2): bounds hold and service comes back.

Item 1: tunnels per client are one bound both ends keep; a caller beyond it gets 503 with
Retry-After at once (never a wait for a tunnel that will not come), and the client serves again
as soon as connections end, without reconnecting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from arp.client.control import Client
from arp.config import Limits, RegistrationBounds
from arp.relay.limits import AddressCounts, address_key
from tests.conftest import units
from tests.relay.conftest import Stack, StackFactory, wait_until

_GET = b"GET /echo?token=tester HTTP/1.1\r\nHost: relay\r\n\r\n"


async def _request(
    stack: Stack, keep: list[asyncio.StreamWriter] | None = None
) -> tuple[int, bytes]:
    """One request on a new keep-alive connection; its status and head. With `keep`, the
    connection stays open (holding its tunnel) and its writer goes there."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.relay.public_port)
    try:
        writer.write(_GET)
        async with asyncio.timeout(units(5)):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    if keep is not None and head.startswith(b"HTTP/1.1 200"):
        keep.append(writer)
    else:
        writer.close()
    return int(head[9:12]), head


async def _flood(stack: Stack, held: list[asyncio.StreamWriter], bound: int) -> None:
    """Hold `bound` keep-alive connections, then ask for more: the excess gets 503 at once."""
    for _ in range(bound):
        status, _ = await _request(stack, held)
        assert status == 200
    started = asyncio.get_running_loop().time()
    answers = await asyncio.gather(*(_request(stack) for _ in range(6)))
    elapsed = asyncio.get_running_loop().time() - started
    for status, head in answers:
        assert status == 503, head
        assert b"\r\nRetry-After: 1\r\n" in head, head
    # Answered as refused, not after the tunnel wait (units(2)) ran out.
    assert elapsed < units(1.5), elapsed


async def _recovers(stack: Stack, held: list[asyncio.StreamWriter]) -> None:
    """Connections end: service resumes at once, on the same registration."""
    for writer in held:
        writer.close()
    held.clear()
    await wait_until(
        lambda: not stack.relay.clients["tester"].carrying, units(3), "connections ended"
    )
    for _ in range(3):
        status, head = await _request(stack)
        assert status == 200, head
    assert stack.clients[0].registrations == 1


async def test_a_client_at_the_relays_bound_answers_503_and_serves_again(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(
        client_id=None, pool_size=1, limits=dataclasses.replace(Limits(), max_client_tunnels=4)
    )
    await stack.start_client("tester")
    held: list[asyncio.StreamWriter] = []
    try:
        await _flood(stack, held, 4)
        await _recovers(stack, held)
    finally:
        for writer in held:
            writer.close()


async def test_a_client_that_refuses_tunnels_is_answered_503_not_wedged(
    make_stack: StackFactory,
) -> None:
    """The client's own bound is the smaller one: it refuses with ProxyConnRefused, and the
    relay answers the waiting callers at once and forgets the requests."""
    stack = await make_stack(client_id=None, pool_size=1)
    await stack.start_client("tester", limits=dataclasses.replace(Limits(), max_client_tunnels=3))
    held: list[asyncio.StreamWriter] = []
    try:
        await _flood(stack, held, 3)
        assert not stack.relay.clients["tester"].requested  # nothing left waiting forever
        await _recovers(stack, held)
    finally:
        for writer in held:
            writer.close()


async def test_requests_a_client_never_answers_are_forgotten(make_stack: StackFactory) -> None:
    stack = await make_stack()
    state = stack.relay.clients["tester"]
    state.requested["lost"] = 0.0  # asked long ago, never answered (an old client dropped it)
    stack.relay.pools.expire_requests(state, stack.relay.config.timeouts.tunnel_request + 1.0)
    assert "lost" not in state.requested


# -- item 2: per-caller bounds -----------------------------------------------------------------


async def _connect_from(source: str, port: int) -> socket.socket:
    """A connection to the public port from loopback address `source` (127.0.0.x)."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_one_address_flooding_half_sent_heads_does_not_deny_the_others(
    make_stack: StackFactory,
) -> None:
    """127.0.0.2 opens far more half-sent heads than its share; the shared limit (16 here) is
    never filled by it, so callers from other addresses are still served."""
    limits = dataclasses.replace(Limits(), max_public_connections=16, max_connections_per_ip=6)
    stack = await make_stack(limits=limits)
    port = stack.relay.public_port
    loop = asyncio.get_running_loop()
    flood: list[socket.socket] = []
    try:
        for _ in range(24):
            sock = await _connect_from("127.0.0.2", port)
            flood.append(sock)
            await loop.sock_sendall(sock, b"GET /echo?token=tester HTTP/1.1\r\nHo")
        await asyncio.sleep(units(0.2))
        assert stack.relay.public.per_address.counts.get("127.0.0.2", 0) <= 6
        for source in ("127.0.0.1", "127.0.0.3", "127.0.0.4"):
            for _ in range(4):
                sock = await _connect_from(source, port)
                try:
                    await loop.sock_sendall(
                        sock, _GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                    )
                    async with asyncio.timeout(units(5)):
                        answer = await loop.sock_recv(sock, 65536)
                finally:
                    sock.close()
                assert answer.startswith(b"HTTP/1.1 200 "), (source, answer[:200])
        # The excess of the flood was answered 503 (or just closed).
        refused = 0
        for sock in flood[6:]:
            try:
                async with asyncio.timeout(units(2)):
                    answer = await loop.sock_recv(sock, 4096)
            except (ConnectionError, TimeoutError):
                continue
            refused += answer == b"" or answer.startswith(b"HTTP/1.1 503 ")
        assert refused >= 12
    finally:
        for sock in flood:
            sock.close()
    await wait_until(lambda: not stack.relay.public.per_address.counts, units(5), "counts freed")


async def test_anonymous_registrations_are_bounded_per_address(
    make_stack: StackFactory,
) -> None:
    bounds = RegistrationBounds(per_address_rate=3, rate_window=60.0, per_address_clients=10)
    stack = await make_stack(client_id=None, registration=bounds)
    for n in range(3):
        await stack.start_client(f"anon{n}")
    extra = Client(stack.client_config("anon3"))
    await extra.start()
    try:
        await wait_until(
            lambda: stack.relay.public.stats.refused.get("per_address", 0) >= 1,
            units(5),
            "the fourth registration from one address within the window is refused",
        )
        assert "anon3" not in stack.relay.clients
    finally:
        await extra.close()


async def test_clients_held_per_address_are_bounded(make_stack: StackFactory) -> None:
    bounds = RegistrationBounds(per_address_rate=100, per_address_clients=2)
    stack = await make_stack(client_id=None, registration=bounds)
    for n in range(2):
        await stack.start_client(f"anon{n}")
    extra = Client(stack.client_config("anon2"))
    await extra.start()
    try:
        await wait_until(
            lambda: stack.relay.public.stats.refused.get("per_address", 0) >= 1,
            units(5),
            "a third client held from one address is refused",
        )
    finally:
        await extra.close()
    assert stack.relay.registrations.held == {"127.0.0.1": 2}


def test_the_tcp_ports_per_client_default_is_4() -> None:
    assert Limits().max_tcp_ports_per_client == 4


def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key("127.0.0.2") == "127.0.0.2"
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:2") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    counts = AddressCounts(2)
    keys = [counts.enter("2001:db8::1"), counts.enter("2001:db8::2"), counts.enter("2001:db8::3")]
    assert keys[2] is None and counts.enter("2001:db8:0:1::1") is not None
    counts.leave(keys[0] or "")
    assert counts.enter("2001:db8::9") == "2001:db8::/64"  # a slot freed is usable at once
