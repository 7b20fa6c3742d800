"""The gateway across nodes on one private Redis: a task or cancel posted to one node reaches
the agent connected to another, the agent list says where each agent is, a signed request id
is refused on every node once used, and delivery holds across kill -9 of the agent's node."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from arp.gateway import auth
from arp.gateway import messages as m
from arp.gateway.config import GatewayConfig
from arp.gateway.server import Gateway
from tests.cluster.conftest import SECRET
from tests.conftest import units
from tests.gateway.conftest import RawAgent, RedisServer, base, post_task, register, stream

GatewayFactory = Callable[..., Any]


def node_config(server: RedisServer, prefix: str, **auth_settings: Any) -> GatewayConfig:
    return GatewayConfig().replace(
        server={"host": "127.0.0.1", "port": 0},
        redis={"url": server.url, "prefix": prefix, "timeout": units(1)},
        agent={"heartbeat_timeout": units(5), "cleanup_interval": units(0.2)},
        auth=auth_settings or {},
    )


@pytest.fixture
def gw_prefix() -> str:
    return f"g{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def nodes(redis_server: RedisServer, gw_prefix: str) -> AsyncIterator[GatewayFactory]:
    async with AsyncExitStack() as stack:

        async def make(node_id: str, **auth_settings: Any) -> Gateway:
            config = node_config(redis_server, gw_prefix, **auth_settings)
            return await stack.enter_async_context(Gateway(config, node_id=node_id))

        yield make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as session:
        yield session


async def quiet(agent: RawAgent, seconds: float) -> list[dict[str, Any]]:
    """Everything the agent receives within `seconds` (nothing expected)."""
    got: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = await agent.ws.receive()
                got.append(json.loads(frame.data))
    return got


async def test_a_task_and_its_cancel_posted_to_another_node_reach_the_agent_once(
    nodes: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    b, c = await nodes("b"), await nodes("c")
    token = await register(http, c, "a1")
    agent = await RawAgent.connect(http, b, "a1", token)
    await asyncio.sleep(units(0.2))  # b has recorded where the agent is
    response = await post_task(http, c, "a1", "t1")
    assert response.status == 202
    task = await agent.next("task")
    assert (task["task_id"], task["message_id"]) == ("t1", "task:t1")
    await agent.send(m.ack([task["message_id"]]))
    async with http.post(base(c) + "/api/agents/a1/tasks/t1/cancel/") as reply:
        assert reply.status == 202
    cancel = await agent.next("task_cancel")
    assert cancel["task_id"] == "t1"
    await agent.send(m.ack([cancel["message_id"]]))
    assert [x for x in await quiet(agent, units(0.5)) if x["type"] != "ack"] == []
    # Where each agent is connected, seen from any node.
    for gateway in (b, c):
        async with http.get(base(gateway) + "/api/agents/") as reply:
            listed = (await reply.json())["agents"]
        assert [(a["agent_id"], a["status"], a["node"]) for a in listed] == [("a1", "online", "b")]
    await agent.close()
    await asyncio.sleep(units(0.3))
    async with http.get(base(c) + "/api/agents/a1/") as reply:
        described = await reply.json()
    assert described["status"] == "offline" and described["node"] is None
    assert (await post_task(http, c, "a1", "t2")).status == 409


async def test_a_signed_request_id_is_used_once_in_the_cluster(
    nodes: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    secret = "s" * 32
    b, c = await nodes("b", shared_secret=secret), await nodes("c", shared_secret=secret)
    body = json.dumps({"agent_id": "a1"}).encode()
    path = "/api/agents/register/"
    headers = auth.signed_headers(secret, "POST", path, body, time.time())
    headers["Content-Type"] = "application/json"
    async with http.post(base(b) + path, data=body, headers=headers) as reply:
        assert reply.status == 201
    for gateway in (c, b):
        async with http.post(base(gateway) + path, data=body, headers=headers) as reply:
            assert reply.status == 401
            assert "already used" in (await reply.json())["error"]["message"]


def start_node(
    redis_server: RedisServer, gw_prefix: str, node_id: str, cluster_prefix: str
) -> tuple[subprocess.Popen[str], int]:
    """`arps --cluster --with-gateway` as a child on loopback; its gateway port."""
    argv = [
        sys.executable, "-m", "arp.relay", "--bind", "127.0.0.1",
        "--control-port", "0", "--proxy-port", "0", "--public-port", "0",
        "--cluster", "--node-id", node_id, "--peer-port", "0",
        "--with-gateway", "--gateway-host", "127.0.0.1", "--gateway-port", "0",
        "--redis-url", redis_server.url, "--redis-prefix", gw_prefix,
        "--agent-heartbeat-timeout", "5s", "--agent-cleanup-interval", "0.2s",
    ]  # fmt: skip
    env = dict(os.environ, ARPS_CLUSTER_SECRET=SECRET, ARPS_CLUSTER_PREFIX=cluster_prefix)
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=env)  # fmt: skip
    assert child.stdout is not None
    deadline = time.monotonic() + units(20)
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        found = re.search(r"gateway listening on port (\d+)", line)
        if found:
            return child, int(found.group(1))
    child.kill()
    child.wait()
    raise RuntimeError("the node did not start")


async def test_delivery_and_dedupe_hold_across_kill_9_of_the_agents_node(
    nodes: GatewayFactory,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    gw_prefix: str,
    prefix: str,
) -> None:
    child, port = start_node(redis_server, gw_prefix, "b", prefix)
    try:
        c = await nodes("c")
        token = await register(http, c, "a1")
        url = f"ws://127.0.0.1:{port}/ws/agent/a1"
        agent = RawAgent(await http.ws_connect(url, protocols=("agent-token", token)))
        await asyncio.sleep(units(0.3))
        assert (await post_task(http, c, "a1", "t1")).status == 202
        task = await agent.next("task")
        assert task["task_id"] == "t1"
        # The agent works: a log line (acked by b), then its result, and b dies at once,
        # before or after writing it: nobody knows which.
        log_line = m.log("t1", 1, "working")
        await agent.send(log_line)
        await agent.wait_acked({log_line["message_id"]})
        result = m.result("t1", 0, "done")
        await agent.send(result)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=units(10))
        with pytest.raises((ConnectionError, TimeoutError, aiohttp.ClientError)):
            await agent.next("never", timeout=units(5))
        # It reconnects to c: the unacked task comes again (redelivery), and it resends its
        # unacked result (its own rule), which lands once.
        again = await RawAgent.connect(http, c, "a1", token)
        redelivered = await again.next("task")
        assert redelivered["message_id"] == task["message_id"]
        await again.send(m.ack([redelivered["message_id"]]))
        await again.send(result)
        await again.wait_acked({result["message_id"]})
        config = node_config(redis_server, gw_prefix)
        results = [e for e in stream(redis_server, config, "agent_results") if e["task_id"] == "t1"]
        assert len(results) == 1 and results[0]["text"] == "done"
        logs = [e for e in stream(redis_server, config, "agent_logs") if e["task_id"] == "t1"]
        assert [e["data"] for e in logs] == ["working"]
        # A new task posted to c reaches it there, once.
        assert (await post_task(http, c, "a1", "t2")).status == 202
        assert (await again.next("task"))["task_id"] == "t2"
        await again.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
