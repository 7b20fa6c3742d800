"""The gateway's metrics in the Prometheus text format (0.0.4), hand-rolled.

Counters, gauges and histograms are a handful of dicts here; the format is simple enough that
pulling in prometheus_client (not a dependency) would buy nothing but a global registry.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

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

    def lines(self, name: str) -> list[str]:
        out = []
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {self.count}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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

    def count_in(self, kind: str, n: int = 1) -> None:
        self.messages_in[kind] = self.messages_in.get(kind, 0) + n

    def count_out(self, kind: str, n: int = 1) -> None:
        self.messages_out[kind] = self.messages_out.get(kind, 0) + n

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused_connections[reason] = self.refused_connections.get(reason, 0) + 1

    def render(self) -> str:
        p = "arp_gateway_"
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {p}{name} {help_text}")
            lines.append(f"# TYPE {p}{name} {kind}")

        def labelled(name: str, label: str, values: dict[str, int]) -> None:
            for key in sorted(values):
                lines.append(f'{p}{name}{{{label}="{_escape(key)}"}} {values[key]}')

        family("connected_agents", "gauge", "Agents with a live WebSocket.")
        lines.append(f"{p}connected_agents {self.connected()}")
        family("messages_in_total", "counter", "Messages received from agents, by type.")
        labelled("messages_in_total", "type", self.messages_in)
        family("messages_out_total", "counter", "Messages sent to agents, by type.")
        labelled("messages_out_total", "type", self.messages_out)
        family("acks_pending", "gauge", "Messages sent to agents and not yet acknowledged.")
        lines.append(f"{p}acks_pending {self.acks_pending()}")
        family("redeliveries_total", "counter", "Messages sent to an agent again.")
        lines.append(f"{p}redeliveries_total {self.redeliveries}")
        family("duplicates_total", "counter", "Received messages dropped as repeats.")
        lines.append(f"{p}duplicates_total {self.duplicates}")
        family("dropped_messages_total", "counter", "Received messages not processed, by reason.")
        labelled("dropped_messages_total", "reason", self.dropped)
        family("refused_connections_total", "counter", "Agent WebSockets refused, by reason.")
        labelled("refused_connections_total", "reason", self.refused_connections)
        family("redis_up", "gauge", "1 while the last Redis command succeeded.")
        lines.append(f"{p}redis_up {int(self.redis_up)}")
        family("redis_errors_total", "counter", "Redis commands that failed.")
        lines.append(f"{p}redis_errors_total {self.redis_errors}")
        family("redis_write_seconds", "histogram", "Latency of one batched Redis stream write.")
        lines.extend(self.redis_write.lines(f"{p}redis_write_seconds"))
        family("task_duration_seconds", "histogram", "Task handed over → its result written.")
        lines.extend(self.task_duration.lines(f"{p}task_duration_seconds"))
        return "\n".join(lines) + "\n"
