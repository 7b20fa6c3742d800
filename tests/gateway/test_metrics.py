"""The gateway's metrics come out of prometheus_client under the names docs/gateway.md lists."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from arp.gateway.metrics import GatewayMetrics


def test_the_documented_names_parse_and_carry_the_counts() -> None:
    metrics = GatewayMetrics()
    metrics.connected = lambda: 3
    metrics.count_in("log", 5)
    metrics.count_out("task")
    metrics.drop("bad_json")
    metrics.refuse("bad_token")
    metrics.duplicates += 2
    metrics.redis_up = False
    metrics.redis_write.observe(0.002)
    metrics.task_duration.observe(42.0)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render())
        for s in family.samples
    }
    p = "arp_gateway_"
    assert values[(p + "connected_agents", ())] == 3
    assert values[(p + "messages_in_total", (("type", "log"),))] == 5
    assert values[(p + "messages_out_total", (("type", "task"),))] == 1
    assert values[(p + "dropped_messages_total", (("reason", "bad_json"),))] == 1
    assert values[(p + "refused_connections_total", (("reason", "bad_token"),))] == 1
    assert values[(p + "duplicates_total", ())] == 2
    assert values[(p + "redeliveries_total", ())] == 0
    assert values[(p + "redis_up", ())] == 0
    assert values[(p + "redis_errors_total", ())] == 0
    assert values[(p + "acks_pending", ())] == 0
    assert values[(p + "redis_write_seconds_bucket", (("le", "0.0025"),))] == 1
    assert values[(p + "redis_write_seconds_count", ())] == 1
    assert values[(p + "task_duration_seconds_bucket", (("le", "60"),))] == 1
    assert values[(p + "task_duration_seconds_sum", ())] == 42.0
