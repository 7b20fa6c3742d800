"""What breaks mid-task: Redis stopped and started, the gateway restarted. Nothing lost, nothing
doubled in the streams, as long as the agent resends what was not acked (as arpc does)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from arp.gateway import messages as m
from arp.gateway.server import Gateway
from tests.conftest import units
from tests.gateway.conftest import RawAgent, RedisServer, base, gateway_config, post_task, register
from tests.gateway.conftest import stream as read_stream


async def test_redis_stopped_and_started_mid_task(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path, persistent=True)
    redis_server.start()
    config = gateway_config(redis_server.url)
    try:
        async with (
            Gateway(config) as gateway,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http,
        ):
            token = await register(http, gateway, "a1")
            agent = await RawAgent.connect(http, gateway, "a1", token)
            assert (await post_task(http, gateway, "a1", "t1")).status == 202
            await agent.send(m.ack([(await agent.next("task"))["message_id"]]))
            first = [m.log("t1", seq, f"line {seq}") for seq in range(5)]
            for message in first:
                await agent.send(message)
            await agent.wait_acked({x["message_id"] for x in first})

            redis_server.stop()
            second = [m.log("t1", seq, f"line {seq}") for seq in range(5, 10)]
            second.append(m.result("t1", 0, "done"))
            for message in second:
                await agent.send(message)
            with pytest.raises(TimeoutError):
                await agent.wait_acked({x["message_id"] for x in second}, timeout=units(1))
            assert not agent.acked & {x["message_id"] for x in second}, "acked while Redis down"
            async with http.get(base(gateway) + "/healthz") as reply:
                assert reply.status == 503
            assert "arp_gateway_redis_up 0" in gateway.metrics.render()
            assert "a1" in gateway.connections, "the agent stays connected while Redis is down"

            redis_server.start()
            # The agent resends what was not acked (and, harmlessly, something that was).
            for message in [first[-1], *second]:
                await agent.send(message)
            await agent.wait_acked({x["message_id"] for x in second}, timeout=units(5))
            async with http.get(base(gateway) + "/healthz") as reply:
                assert reply.status == 200
            await agent.close()

        logs = read_stream(redis_server, config, "agent_logs")
        assert [int(entry["seq"]) for entry in logs] == list(range(10))
        assert len(read_stream(redis_server, config, "agent_results")) == 1
    finally:
        redis_server.stop()


async def test_gateway_restarted_mid_task(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url)
    gateway = Gateway(config)
    await gateway.start()
    try:
        token = await register(http, gateway, "a1")
        agent = await RawAgent.connect(http, gateway, "a1", token)
        assert (await post_task(http, gateway, "a1", "t1")).status == 202
        await agent.next("task")  # not acked: it must come back after the restart
        first = [m.log("t1", seq, f"line {seq}") for seq in range(5)]
        for message in first:
            await agent.send(message)
        await agent.wait_acked({x["message_id"] for x in first[:3]})
        # The last writes may land in Redis with their ack lost to the restart.
        await asyncio.sleep(units(0.1))
    finally:
        await gateway.close()
    await agent.ws.close()
    assert agent.ws.closed

    async with Gateway(config) as second_gateway:
        agent = await RawAgent.connect(http, second_gateway, "a1", token)
        task = await agent.next("task")
        assert task["message_id"] == "task:t1", "an unacked task is delivered again"
        await agent.send(m.ack([task["message_id"]]))
        rest = [*first, *(m.log("t1", seq, f"line {seq}") for seq in range(5, 8))]
        rest.append(m.result("t1", 0, "done"))
        for message in rest:
            await agent.send(message)
        await agent.wait_acked({x["message_id"] for x in rest})
        await agent.close()

    logs = read_stream(redis_server, config, "agent_logs")
    assert [int(entry["seq"]) for entry in logs] == list(range(8))
    assert len(read_stream(redis_server, config, "agent_results")) == 1
