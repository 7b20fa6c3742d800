"""The cluster registry against a real (private) Redis: claims, ports, renewal, expiry."""

from __future__ import annotations

import asyncio

import pytest

from arp.relay.cluster import Cluster, ClusterUnavailable
from arp.relay.lease import Claimed, HeldElsewhere, PortTaken
from tests.cluster.conftest import cluster_settings
from tests.conftest import units
from tests.gateway.conftest import RedisServer


def node(server: RedisServer, prefix: str, node_id: str, lost: list[str] | None = None) -> Cluster:
    sink = lost if lost is not None else []
    return Cluster(cluster_settings(server.url, prefix, node_id), on_lost=sink.append)


async def test_one_node_at_a_time_unless_the_client_proves_it_is_the_same(
    redis_server: RedisServer, prefix: str
) -> None:
    a, b = node(redis_server, prefix, "a"), node(redis_server, prefix, "b")
    await a.start("127.0.0.1:1")
    await b.start("127.0.0.1:2")
    try:
        assert await a.claim("x", presented_resume=None, resume_key="k1") == Claimed()
        # Again on the same node (a reconnect there): the node's own rules decided already.
        assert await a.claim("x", presented_resume=None, resume_key="k1") == Claimed()
        # Another machine with the same id on another node: refused, naming the holder.
        assert await b.claim("x", presented_resume=None, resume_key="k2") == HeldElsewhere("a")
        assert await b.claim("x", presented_resume="wrong", resume_key="k2") == HeldElsewhere("a")
        assert await b.locate("x") == "a"
        # The same client, come back to b with the resume key a gave it: it moves.
        assert await b.claim("x", presented_resume="k1", resume_key="k2") == Claimed("a")
        b.invalidate("x")
        assert await b.locate("x") == "b"
        # a's next renewal finds it lost.
        assert await a.renew() == ["x"]
        assert "x" not in a.held
    finally:
        await a.close()
        await b.close()


async def test_a_tcp_port_is_granted_once_in_the_cluster(
    redis_server: RedisServer, prefix: str
) -> None:
    a, b = node(redis_server, prefix, "a"), node(redis_server, prefix, "b")
    await a.start("127.0.0.1:1")
    await b.start("127.0.0.1:2")
    try:
        assert await a.claim("x", presented_resume=None, resume_key="k", tcp_ports=[20001])
        outcome = await b.claim("y", presented_resume=None, resume_key="j", tcp_ports=[20001])
        assert outcome == PortTaken(20001, "x")
        assert await b.locate("y") is None  # nothing written by a refused claim
        assert await a.tcp_grants() == {20001: "x"}
        await a.release("x")
        assert await b.claim("y", presented_resume=None, resume_key="j", tcp_ports=[20001])
        assert await a.tcp_grants() == {20001: "y"}
    finally:
        await a.close()
        await b.close()


async def test_release_gives_back_only_the_claim_it_names(
    redis_server: RedisServer, prefix: str
) -> None:
    a = node(redis_server, prefix, "a")
    await a.start("127.0.0.1:1")
    try:
        await a.claim("x", presented_resume=None, resume_key="k")
        old = a.claim_of("x")
        await a.claim("x", presented_resume=None, resume_key="k")  # a newer claim
        await a.release("x", old)  # a late release of the old one
        a.invalidate("x")
        assert await a.locate("x") == "a"
    finally:
        await a.close()


async def test_a_dead_nodes_claims_expire_and_a_live_ones_do_not(
    redis_server: RedisServer, prefix: str
) -> None:
    a, b = node(redis_server, prefix, "a"), node(redis_server, prefix, "b")
    await a.start("127.0.0.1:1")
    await b.start("127.0.0.1:2")
    try:
        await a.claim("x", presented_resume=None, resume_key="k", tcp_ports=[20002])
        await b.claim("y", presented_resume=None, resume_key="j")
        # a dies without a word: its renewals stop, nothing is released.
        assert a._task is not None
        a._task.cancel()
        await asyncio.sleep(a.bounds.lease + units(0.5))
        b.invalidate("x")
        b.invalidate("y")
        assert await b.locate("x") is None
        assert await b.locate("y") == "b"  # renewed all along
        nodes = {n.node_id: n.alive for n in await b.nodes()}
        assert nodes == {"a": False, "b": True}
        assert await b.claim("x", presented_resume=None, resume_key="j", tcp_ports=[20002])
    finally:
        await a.close()
        await b.close()


async def test_no_redis_is_a_clear_unavailable(prefix: str) -> None:
    from tests.conftest import free_port

    dead = Cluster(
        cluster_settings(f"redis://127.0.0.1:{free_port()}/0", prefix, "a"), on_lost=print
    )
    with pytest.raises(ClusterUnavailable, match="Redis did not answer"):
        await dead.start("127.0.0.1:1")
    await dead.close()
