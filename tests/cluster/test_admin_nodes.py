"""The admin port of a cluster node shows the node, its peers and the peer link's counts."""

from __future__ import annotations

import aiohttp

from arp.relay.admin import AdminServer
from arp.relay.settings import AdminSettings
from tests.cluster.conftest import NodeFactory
from tests.conftest import units
from tests.relay.conftest import wait_until


async def test_the_dashboard_data_and_metrics_name_the_node_and_its_peers(
    make_node: NodeFactory,
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    assert a.relay.cluster is not None
    await wait_until(lambda: len(a.relay.cluster.view) == 2, units(5), "a did not see b")  # type: ignore[union-attr]
    admin = AdminServer(a.relay, AdminSettings(port=0))
    await admin.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{admin.port}"
            async with http.get(base + "/api/clients") as reply:
                node = (await reply.json())["node"]
            async with http.get(base + "/metrics") as reply:
                text = await reply.text()
    finally:
        await admin.close()
    assert node["node_id"] == "a" and node["redis_up"] is True
    assert node["peer"] == a.relay.peers.advertise  # type: ignore[union-attr]
    peers = {p["node_id"]: (p["alive"], p["peer"]) for p in node["peers"]}
    assert peers == {
        "a": (True, a.relay.peers.advertise),  # type: ignore[union-attr]
        "b": (True, b.relay.peers.advertise),  # type: ignore[union-attr]
    }
    assert 'arps_cluster_peer_up{node="b"} 1.0' in text
    assert "arps_cluster_redis_up 1.0" in text
    assert "arps_cluster_carried_total 0.0" in text
