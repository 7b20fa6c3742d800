"""The relay's Prometheus metrics: one collector that reads the relay when it is scraped.

Nothing here runs on the relay's paths: the relay keeps plain counts (`arp.relay.stats`) and
its live state (clients, pools, open connections); `RelayCollector.collect` turns them into
metric families at scrape time, on a private `CollectorRegistry` (no global state, no default
process collectors). Imported only by the admin port, so a relay without `--admin-port` never
loads prometheus_client.

Names (all `arps_`): see docs/deploy.md, "Watching the relay".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from arp.relay.server import Relay

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RelayCollector(Collector):
    """Reads one relay's state and counts at scrape time."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        relay = self.relay
        stats = relay.public.stats
        states = list(relay.clients.values())
        online = sum(1 for s in states if s.online)

        clients = GaugeMetricFamily("arps_clients", "Clients the relay knows.", labels=["state"])
        clients.add_metric(["online"], online)
        clients.add_metric(["offline"], len(states) - online)
        yield clients

        pooled = GaugeMetricFamily(
            "arps_tunnels_pooled", "Idle tunnels waiting in the pool.", labels=["client"]
        )
        busy = GaugeMetricFamily(
            "arps_tunnels_busy", "Tunnels carrying a public connection.", labels=["client"]
        )
        up = GaugeMetricFamily(
            "arps_client_online", "1 while the client's control link lives.", labels=["client"]
        )
        served = CounterMetricFamily(
            "arps_client_connections",
            "Public connections joined to the client since the relay saw it first.",
            labels=["client"],
        )
        bytes_in = CounterMetricFamily(
            "arps_client_bytes_in",
            "Bytes from callers to the client, counted as connections end.",
            labels=["client"],
        )
        bytes_out = CounterMetricFamily(
            "arps_client_bytes_out",
            "Bytes from the client to its callers, counted as connections end.",
            labels=["client"],
        )
        for state in states:
            label = [state.client_id]
            pooled.add_metric(label, len(state.pool))
            busy.add_metric(label, state.stats.open)
            up.add_metric(label, 1 if state.online else 0)
            served.add_metric(label, state.stats.connections)
            bytes_in.add_metric(label, state.stats.bytes_in)
            bytes_out.add_metric(label, state.stats.bytes_out)
        yield from (pooled, busy, up, served, bytes_in, bytes_out)

        yield GaugeMetricFamily(
            "arps_public_connections",
            "Public connections being served (shared port and TCP ports).",
            value=relay.public.count,
        )

        requests = CounterMetricFamily(
            "arps_requests",
            "Public requests by status class: the relay's own answers (source=relay) and "
            "joined connections by their first response (source=service).",
            labels=["source", "status_class"],
        )
        for source, counts in (("relay", stats.answers), ("service", stats.served)):
            for key in sorted(counts):
                requests.add_metric([source, key], counts[key])
        yield requests

        refused = CounterMetricFamily(
            "arps_registrations_refused", "Registrations refused, by reason.", labels=["reason"]
        )
        for reason in sorted(stats.refused):
            refused.add_metric([reason], stats.refused[reason])
        yield refused

        waits = relay.pools.waits
        yield HistogramMetricFamily(
            "arps_tunnel_wait_seconds",
            "Seconds a public connection waited for a fresh tunnel (the slow path).",
            buckets=[(bound, float(count)) for bound, count in waits.cumulative()],
            sum_value=waits.total,
        )

        yield CounterMetricFamily(
            "arps_tunnels_requested",
            "Tunnels asked of clients since the start.",
            value=relay.pools.requested_total,
        )
        yield from _cluster_metrics(relay)


def _cluster_metrics(relay: Relay) -> Iterator[Metric]:
    """`arps --cluster`: this node, its peers as last seen in Redis, and the peer link."""
    cluster, peers = relay.cluster, relay.peers
    if cluster is None or peers is None:
        return
    info = GaugeMetricFamily(
        "arps_cluster_node", "1 for this node (its id and peer address as labels).",
        labels=["node", "peer"],
    )  # fmt: skip
    info.add_metric([cluster.node_id, peers.advertise], 1)
    yield info
    nodes = GaugeMetricFamily(
        "arps_cluster_peer_up", "1 while a node's lease lives in Redis.", labels=["node"]
    )
    for node in cluster.view:
        nodes.add_metric([node.node_id], 1 if node.alive else 0)
    yield nodes
    yield GaugeMetricFamily(
        "arps_cluster_redis_up", "1 while the cluster's Redis answers.", value=int(cluster.up)
    )
    yield GaugeMetricFamily(
        "arps_cluster_clients_held", "Clients this node holds in the cluster.",
        value=len(cluster.held),
    )  # fmt: skip
    yield CounterMetricFamily(
        "arps_cluster_carried",
        "Connections carried for other nodes (arrived on the peer port).",
        value=peers.carried,
    )
    yield CounterMetricFamily(
        "arps_cluster_forwarded",
        "Connections received here and handed to the node holding their client.",
        value=cluster.forwarded,
    )


def registry_for(relay: Relay) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def clients_json(relay: Relay) -> dict[str, Any]:
    """`/api/clients`: what the dashboard shows, per client (sorted: online first, then by id)."""
    now = time.time()
    states = sorted(relay.clients.values(), key=lambda s: (not s.online, s.client_id))
    return {
        "now": now,
        "node": _node_json(relay),
        "public_connections": relay.public.count,
        "clients": [
            {
                "client_id": s.client_id,
                "online": s.online,
                "last_seen": s.stats.last_seen,
                "offline_for": round(s.offline_for(), 1) if not s.online else None,
                "pool": len(s.pool),
                "open": s.stats.open,
                "connections": s.stats.connections,
                "bytes_in": s.stats.bytes_in,
                "bytes_out": s.stats.bytes_out,
                "tcp_ports": sorted(s.tcp_ports),
            }
            for s in states
        ],
    }


def _node_json(relay: Relay) -> dict[str, Any] | None:
    """This node and its peers (None for a relay that stands alone)."""
    cluster, peers = relay.cluster, relay.peers
    if cluster is None or peers is None:
        return None
    return {
        "node_id": cluster.node_id,
        "peer": peers.advertise,
        "redis_up": cluster.up,
        "carried": peers.carried,
        "forwarded": cluster.forwarded,
        "peers": [
            {"node_id": n.node_id, "peer": n.peer, "alive": n.alive, "last_seen": n.last_seen}
            for n in cluster.view
        ],
    }
