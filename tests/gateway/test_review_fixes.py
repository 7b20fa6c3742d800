"""Defects found in review of the gateway (issue 6), each pinned by a test over real sockets and a
real Redis: duplicate ids scoped per agent, tasks scoped per agent, bounded Redis marks, a failed
script write never taken for a duplicate."""

from __future__ import annotations

import asyncio

import aiohttp

from arp.gateway import messages as m
from arp.gateway.config import GatewayConfig
from arp.gateway.server import Gateway
from tests.conftest import units
from tests.gateway.conftest import RawAgent, RedisServer, post_task, register, stream


async def assigned_agent(
    http: aiohttp.ClientSession, gateway: Gateway, agent_id: str, *task_ids: str
) -> RawAgent:
    """A connected raw agent that was handed (and acked) `task_ids`."""
    token = await register(http, gateway, agent_id)
    agent = await RawAgent.connect(http, gateway, agent_id, token)
    for task_id in task_ids:
        assert (await post_task(http, gateway, agent_id, task_id)).status == 202
        await agent.send(m.ack([(await agent.next("task"))["message_id"]]))
    return agent


async def test_another_agents_result_cannot_shadow_the_real_one(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    owner = await assigned_agent(http, gateway, "a1", "T")
    intruder = await assigned_agent(http, gateway, "b1")
    forged = [m.log("T", 0, "forged"), m.status("T", "running"), m.result("T", 0, "forged")]
    for message in forged:
        await intruder.send(message)
    # Refused, but acked: resending could never make it b1's task.
    await intruder.wait_acked({x["message_id"] for x in forged})
    real = [m.log("T", 0, "real"), m.result("T", 0, "real")]
    for message in real:
        await owner.send(message)
    await owner.wait_acked({x["message_id"] for x in real})
    assert [e["data"] for e in stream(redis_server, config, "agent_logs")] == ["real"]
    results = stream(redis_server, config, "agent_results")
    assert [(e["agent_id"], e["text"]) for e in results] == [("a1", "real")]
    assert not [e for e in stream(redis_server, config, "agent_status") if e["task_id"] == "T"]
    text = gateway.metrics.render()
    assert 'arp_gateway_dropped_messages_total{reason="unassigned_task"} 3' in text
    await owner.close()
    await intruder.close()


async def test_task_ids_numbered_per_agent_keep_every_output(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    agents = [await assigned_agent(http, gateway, name, "1") for name in ("a1", "b1")]
    for agent in agents:
        sent = [m.log("1", 0, "line"), m.status("1", "completed"), m.result("1", 0, "ok")]
        for message in sent:
            await agent.send(message)
        await agent.wait_acked({x["message_id"] for x in sent})
    logs = stream(redis_server, config, "agent_logs")
    assert sorted(e["agent_id"] for e in logs) == ["a1", "b1"]
    results = stream(redis_server, config, "agent_results")
    assert sorted(e["agent_id"] for e in results) == ["a1", "b1"]
    assert "arp_gateway_duplicates_total 0" in gateway.metrics.render()
    for agent in agents:
        await agent.close()


async def test_redis_marks_stay_small_and_resends_are_dropped(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    agent = await assigned_agent(http, gateway, "a1", "t1")
    lines = [m.log("t1", seq, f"line {seq}") for seq in range(300)]
    for message in lines:
        await agent.send(message)
    await agent.wait_acked({x["message_id"] for x in lines})
    client = redis_server.client()
    try:
        keys = set(client.keys(config.redis.prefix + "*"))
        marks = config.redis.prefix + "marks:a1:t1"
        # One small hash per running task, not one key per line.
        assert len(keys) < 10, keys
        assert client.hgetall(marks) == {"log": "299"}
        # A fresh gateway (empty memory) still drops resent lines by the high-water mark.
        async with Gateway(config) as second:
            await agent.close()
            agent = await RawAgent.connect(http, second, "a1", await register(http, second, "a1"))
            again = [*lines[-5:], m.log("t1", 300, "line 300"), m.result("t1", 0, "done")]
            for message in again:
                await agent.send(message)
            await agent.wait_acked({x["message_id"] for x in again})
            assert "arp_gateway_duplicates_total 5" in second.metrics.render()
            # The result leaves one small `done` mark behind, expiring.
            assert client.hgetall(marks) == {"done": "1"}
            assert 0 < client.ttl(marks) <= config.redis.dedup_ttl
            late = m.log("t1", 301, "after the result")
            await agent.send(late)
            await agent.wait_acked({late["message_id"]})
    finally:
        client.close()
    seqs = [int(e["seq"]) for e in stream(redis_server, config, "agent_logs")]
    assert seqs == list(range(301))
    assert len(stream(redis_server, config, "agent_results")) == 1
    await agent.close()


async def test_a_failed_script_write_is_retried_not_taken_for_a_duplicate(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    agent = await assigned_agent(http, gateway, "a1", "t1")
    client = redis_server.client()
    logs_key = config.redis.prefix + "agent_logs"
    try:
        client.set(logs_key, "not a stream")  # the XADD fails with WRONGTYPE mid-script
        message = m.log("t1", 0, "kept")
        await agent.send(message)
        await asyncio.sleep(units(0.5))
        assert message["message_id"] not in agent.acked, "acked although it was not written"
        client.delete(logs_key)
        await agent.wait_acked({message["message_id"]})
    finally:
        client.close()
    assert [e["data"] for e in stream(redis_server, config, "agent_logs")] == ["kept"]
    await agent.close()
