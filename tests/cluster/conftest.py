"""Cluster fixtures: a private redis-server per test session, and relay nodes on loopback that
share it (each test under its own key prefix), with the relay tests' client and target."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from arp.config import ClusterBounds, Limits
from arp.relay.server import Relay, RelayConfig
from arp.relay.settings import ClusterSettings
from tests.conftest import units
from tests.gateway.conftest import RedisServer
from tests.relay.conftest import Stack, fast_timeouts, target  # noqa: F401 - fixture

SECRET = "a-cluster-secret-for-tests"


def fast_bounds() -> ClusterBounds:
    """Short leases so expiry is seen in test time."""
    return ClusterBounds(
        lease=units(1.5),
        renew_every=units(0.3),
        redis=units(2),
        move_grace=units(2),
        peer_handshake=units(1),
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-cluster"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:cluster:"


def cluster_settings(redis_url: str, prefix: str, node_id: str, **changes: Any) -> ClusterSettings:
    settings = ClusterSettings(
        redis_url=redis_url,
        node_id=node_id,
        secret=SECRET,
        peer_port=0,
        prefix=prefix,
        bounds=fast_bounds(),
    )
    return dataclasses.replace(settings, **changes)


NodeFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_node(
    redis_server: RedisServer,
    prefix: str,
    target: Any,  # noqa: F811
) -> AsyncIterator[NodeFactory]:
    stacks: list[Stack] = []

    async def make(node_id: str, **changes: Any) -> Stack:
        settings = cluster_settings(redis_server.url, prefix, node_id, **changes.pop("cluster", {}))
        config = RelayConfig(
            bind="127.0.0.1",
            control_port=0,
            proxy_port=0,
            public_port=0,
            pool_size=2,
            timeouts=fast_timeouts(),
            limits=Limits(),
            cluster=settings,
        )
        relay = Relay(dataclasses.replace(config, **changes))
        await relay.start()
        stack = Stack(relay=relay, target=target)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        for client in stack.clients:
            await client.close()
        await stack.relay.close()
