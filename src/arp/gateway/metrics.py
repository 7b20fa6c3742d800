"""The gateway's metrics, written in the Prometheus text format by prometheus_client.

The gateway counts in plain fields (a dict add per message, no library call on its paths); a
custom collector on a private `CollectorRegistry` turns them into metric families when
`/metrics` is read. The names are those docs/gateway.md lists.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            buckets.append((f"{bound:g}", float(running)))
        buckets.append(("+Inf", float(self.count)))
        return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=self.total)


@dataclass
class GatewayMetrics:
    messages_in: dict[str, int] = field(default_factory=dict)
    messages_out: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    redeliveries: int = 0
    duplicates: int = 0
    redis_errors: int = 0
    redis_up: bool = True
    redis_write: Histogram = field(default_factory=lambda: Histogram(_LATENCY_BUCKETS))
    task_duration: Histogram = field(default_factory=lambda: Histogram(_DURATION_BUCKETS))
    refused_connections: dict[str, int] = field(default_factory=dict)
    connected: Callable[[], int] = lambda: 0
    acks_pending: Callable[[], int] = lambda: 0
    registry: CollectorRegistry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_GatewayCollector(self))

    def count_in(self, kind: str, n: int = 1) -> None:
        self.messages_in[kind] = self.messages_in.get(kind, 0) + n

    def count_out(self, kind: str, n: int = 1) -> None:
        self.messages_out[kind] = self.messages_out.get(kind, 0) + n

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused_connections[reason] = self.refused_connections.get(reason, 0) + 1

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _GatewayCollector(Collector):
    """Reads one `GatewayMetrics` at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, p = self.metrics, "arp_gateway_"

        def labelled(name: str, help_text: str, label: str, values: dict[str, int]) -> Metric:
            family = CounterMetricFamily(p + name, help_text, labels=[label])
            for key in sorted(values):
                family.add_metric([key], values[key])
            return family

        yield GaugeMetricFamily(
            p + "connected_agents", "Agents with a live WebSocket.", value=m.connected()
        )
        yield labelled(
            "messages_in", "Messages received from agents, by type.", "type", m.messages_in
        )
        yield labelled("messages_out", "Messages sent to agents, by type.", "type", m.messages_out)
        yield GaugeMetricFamily(
            p + "acks_pending",
            "Messages sent to agents and not yet acknowledged.",
            value=m.acks_pending(),
        )
        yield CounterMetricFamily(
            p + "redeliveries", "Messages sent to an agent again.", value=m.redeliveries
        )
        yield CounterMetricFamily(
            p + "duplicates", "Received messages dropped as repeats.", value=m.duplicates
        )
        yield labelled(
            "dropped_messages", "Received messages not processed, by reason.", "reason", m.dropped
        )
        yield labelled(
            "refused_connections",
            "Agent WebSockets refused, by reason.",
            "reason",
            m.refused_connections,
        )
        yield GaugeMetricFamily(
            p + "redis_up", "1 while the last Redis command succeeded.", value=int(m.redis_up)
        )
        yield CounterMetricFamily(
            p + "redis_errors", "Redis commands that failed.", value=m.redis_errors
        )
        yield m.redis_write.family(
            p + "redis_write_seconds", "Latency of one batched Redis stream write."
        )
        yield m.task_duration.family(
            p + "task_duration_seconds", "Task handed over → its result written."
        )
