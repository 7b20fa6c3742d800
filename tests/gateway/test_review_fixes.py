"""Defects found in review of the gateway (issue 6), each pinned by a test over real sockets and a
real Redis: duplicate ids scoped per agent, tasks scoped per agent, bounded Redis marks, a failed
script write never taken for a duplicate."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from arp.agents.sessions import SessionConfig, SessionManager
from arp.errors import RemoteProtocolError
from arp.gateway import messages as m
from arp.gateway.agent import AgentLoop, AgentOptions
from arp.gateway.config import GatewayConfig
from arp.gateway.server import Gateway
from tests.conftest import units
from tests.gateway.conftest import (
    RawAgent,
    RedisServer,
    base,
    gateway_config,
    post_task,
    register,
    stream,
)


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
    # A finished task's id is not handed to the same agent again (its output would be dropped).
    assert (await post_task(http, gateway, "a1", "1")).status == 409
    assert (await post_task(http, gateway, "a1", "2")).status == 202
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


# -- H2: no message can jam a channel ---------------------------------------------------------


@pytest.mark.parametrize("text", ["😀" * 5000, '"' * 9000, "\\" * 9000, "a" * 9000, "é\n" * 4000])
@pytest.mark.parametrize(
    "build",
    [
        lambda text: m.log("t1", 7, text),
        lambda text: m.status("t1", "failed", text),
        lambda text: m.result("t1", 1, text, {"input_tokens": 1}),
    ],
)
def test_fit_cuts_by_encoded_bytes(build: Any, text: str) -> None:
    limit = 4096
    message = build(text)
    assert m.encoded_size(message) > limit
    fitted = m.fit(message, limit)
    assert limit - 8 <= m.encoded_size(fitted) <= limit
    assert fitted["truncated"] is True
    field = {"log": "data", "status": "detail", "result": "text"}[message["type"]]
    assert text.startswith(fitted[field]) and fitted[field]
    assert m.fit(m.log("t1", 0, "short"), limit) == m.log("t1", 0, "short")


def test_fit_drops_a_huge_usage_before_giving_up() -> None:
    message = m.result("t1", 0, "done", {"blob": "x" * 10_000})
    fitted = m.fit(message, 1024)
    assert fitted["usage"] == {} and fitted["text"] == "done"


async def test_oversize_agent_message_is_acked_and_dropped_not_resent_forever(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, max_message_size=4096)
    async with Gateway(config) as gateway:
        agent = await assigned_agent(http, gateway, "a1", "t1")
        big = m.log("t1", 0, "😀" * 1500)  # 1500 characters, 6000 bytes as UTF-8
        await agent.ws.send_str(m.encode(big))
        await agent.wait_acked({big["message_id"]})
        bad = m.log("t1", 1, "x")
        bad["seq"] = "one"
        await agent.send(bad)
        await agent.wait_acked({bad["message_id"]})
        fine = m.log("t1", 2, "fine")
        await agent.send(fine)
        await agent.wait_acked({fine["message_id"]})
        assert "a1" in gateway.connections
        text = gateway.metrics.render()
        assert 'arp_gateway_dropped_messages_total{reason="too_large"} 1' in text
        assert 'arp_gateway_dropped_messages_total{reason="bad_field"} 1' in text
        assert [e["data"] for e in stream(redis_server, config, "agent_logs")] == ["fine"]
        await agent.close()


async def test_a_task_too_large_for_the_agent_is_refused_with_413(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, max_message_size=4096)
    async with Gateway(config) as gateway:
        agent = await assigned_agent(http, gateway, "a1")
        body = {"task_id": "t1", "executor": "claude", "prompt": '"' * 3000}  # 6 KB encoded
        async with http.post(base(gateway) + "/api/agents/a1/tasks/", json=body) as reply:
            assert reply.status == 413, await reply.text()
            assert "max_message_size" in (await reply.json())["error"]["message"]
        assert (await post_task(http, gateway, "a1", "t2")).status == 202
        assert (await agent.next("task"))["task_id"] == "t2"
        client = redis_server.client()
        try:
            assert list(client.hkeys(config.redis.prefix + "outbox:a1")) == ["task:t2"]
        finally:
            client.close()
        await agent.close()


HUGE_CLAUDE = """\
import json
print(json.dumps({"type": "system", "subtype": "init", "session_id": "fake-1"}), flush=True)
text = {"type": "text", "text": "\\U0001F600" * 30000}
print(json.dumps({"type": "assistant", "message": {"content": [text]}}), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                  "result": '"' * 50000, "usage": {"input_tokens": 1}}), flush=True)
"""


async def test_agent_cuts_huge_output_to_the_message_limit(
    redis_server: RedisServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    limit = 64 * 1024
    config = gateway_config(redis_server.url, max_message_size=limit)
    claude = tmp_path / "claude"
    claude.write_text(f"#!{sys.executable}\n{HUGE_CLAUDE}")
    claude.chmod(0o755)
    session_config = SessionConfig(
        data_dir=tmp_path / "state" / "sessions",
        binaries={"claude": str(claude)},
        sigint_grace=units(0.5),
        sigterm_grace=units(0.5),
    )
    async with Gateway(config) as gateway, SessionManager(session_config) as sessions:
        token = await register(http, gateway, "a1")
        options = AgentOptions(
            gateway=f"ws://127.0.0.1:{gateway.port}",
            agent_id="a1",
            token=token,
            state_dir=tmp_path / "state",
            heartbeat_interval=units(0.5),
            ack_timeout=units(0.5),
            backoff_initial=units(0.05),
            backoff_max=units(0.3),
            max_message_size=limit,
        )
        async with AgentLoop(options, sessions) as agent:
            await asyncio.wait_for(agent.connected.wait(), units(5))
            assert (await post_task(http, gateway, "a1", "t1")).status == 202
            async with asyncio.timeout(units(15)):
                while not stream(redis_server, config, "agent_results") or agent.tasks:
                    await asyncio.sleep(units(0.05))
            assert agent.connections == 1, "the link never broke on an oversize message"
    [result] = stream(redis_server, config, "agent_results")
    assert 0 < len(result["text"]) < 50000 and set(result["text"]) == {'"'}
    logs = stream(redis_server, config, "agent_logs")
    texts = [json.loads(e["data"]) for e in logs if e["stream"] == "text"]
    assert len(texts) == 1 and texts[0]["truncated"] is True
    assert 0 < len(texts[0]["text"]) < 30000 and set(texts[0]["text"]) == {"\U0001f600"}
    assert "too_large" not in gateway.metrics.render()


async def test_agent_acks_a_task_it_can_never_run(tmp_path: Path) -> None:
    """A gateway → agent message that is invalid or over the agent's limit is acked and dropped
    by the agent, so the gateway's outbox does not redeliver it on every reconnect."""
    received: list[dict[str, Any]] = []
    done = asyncio.Event()
    bad = {"type": "task", "message_id": "task:x", "task_id": "no spaces allowed", "prompt": ""}
    big = m.TaskSpec("t2", "claude", "😀" * 1500).to_message()  # 6 KB over a 4 KB limit

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("agent-token",))
        await ws.prepare(request)
        await ws.send_str(m.encode(bad))
        await ws.send_str(m.encode(big))
        async for frame in ws:
            message = json.loads(frame.data)
            received.append(message)
            acked = {i for r in received if r["type"] == "ack" for i in r["ack_ids"]}
            if {"task:x", "task:t2"} <= acked:
                done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws/agent/a1", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    options = AgentOptions(
        gateway=f"ws://127.0.0.1:{port}",
        agent_id="a1",
        token="t",
        state_dir=tmp_path,
        heartbeat_interval=units(0.5),
        max_message_size=4096,
    )
    sessions: Any = object()  # never asked: neither task is run
    try:
        async with AgentLoop(options, sessions) as agent:
            await asyncio.wait_for(done.wait(), units(5))
            assert agent.tasks == {} and agent.connections == 1
    finally:
        await runner.cleanup()


# -- M3: token rotation ends the old token's connection ----------------------------------------


async def test_re_registration_disconnects_the_old_tokens_websocket(
    gateway: Gateway, http: aiohttp.ClientSession, config: GatewayConfig
) -> None:
    old = await register(http, gateway, "a1")
    agent = await RawAgent.connect(http, gateway, "a1", old)
    new = await register(http, gateway, "a1")
    with pytest.raises(ConnectionError):
        await agent.next("never")
    assert agent.ws.close_code == 4003
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await RawAgent.connect(http, gateway, "a1", old)
    assert refused.value.status == 401
    agent = await RawAgent.connect(http, gateway, "a1", new)
    # Another node sharing the Redis rotates the token: this node notices at its next sweep.
    async with Gateway(config) as other:
        await register(http, other, "a1")
        with pytest.raises(ConnectionError):
            await agent.next("never", timeout=units(3))
    assert agent.ws.close_code == 4003


# -- M5: a malformed poll response never ends polling -------------------------------------------


async def test_malformed_poll_responses_do_not_stop_polling(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    polls = 0

    async def pending(request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        if polls == 1:
            tasks: list[Any] = [{"agent_id": ["a1"], "task_id": "p0", "prompt": "x"}]
        elif polls == 2:
            tasks = [{"agent_id": {"a": 1}, "task_id": "p0", "prompt": "x"}, 7, None]
        else:
            tasks = [{"agent_id": "a1", "task_id": "p1", "executor": "codex", "prompt": "ok"}]
        return web.json_response({"tasks": tasks})

    app = web.Application()
    app.router.add_get("/api/agent-server/tasks/pending/", pending)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config = gateway_config(redis_server.url).replace(
        control_plane={
            "url": f"http://127.0.0.1:{runner.addresses[0][1]}",
            "task_poll_interval": units(0.1),
        }
    )
    try:
        async with Gateway(config) as gateway:
            agent = await assigned_agent(http, gateway, "a1")
            task = await agent.next("task")
            assert task["task_id"] == "p1" and polls >= 3
            await agent.close()
    finally:
        await runner.cleanup()


# -- L1, L2: ids matched whole; undecodable auth headers are 401, not 500 ---------------------


@pytest.mark.parametrize("bad", ["abc\n", "abc\r\n", "a b", "", "-a"])
def test_task_ids_are_matched_whole(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        m.check_task_id(bad)
    with pytest.raises(RemoteProtocolError):
        Gateway._agent_id(bad)
    message = m.log("t1", 0, "x")
    message["task_id"] = bad
    with pytest.raises(m.DroppedMessage):
        m.parse(json.dumps(message), allowed=m.FROM_AGENT)


async def raw_status(port: int, request: bytes) -> int:
    """Send `request` as is (headers may hold any bytes) and return the answer's status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(units(5)):
            line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_non_ascii_auth_headers_are_401(redis_server: RedisServer) -> None:
    config = gateway_config(redis_server.url).replace(
        auth={"shared_secret": "s3cret"}, control_plane={"token": "plane"}
    )
    async with Gateway(config) as gateway:
        assert gateway.port is not None
        head = b"GET /api/agents/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        bearer = head + b"Authorization: Bearer \xff\xfe\r\n\r\n"
        assert await raw_status(gateway.port, bearer) == 401
        bearer_utf8 = head + "Authorization: Bearer plané\r\n\r\n".encode()
        assert await raw_status(gateway.port, bearer_utf8) == 401
        signed = head + (
            b"X-ARP-Timestamp: %d\r\nX-ARP-Request-Id: r1\r\nX-ARP-Signature: \xe9\xff\r\n\r\n"
            % int(time.time())
        )
        assert await raw_status(gateway.port, signed) == 401
        stamp = int(time.time())
        signed_utf8 = (
            head
            + (
                f"X-ARP-Timestamp: {stamp}\r\nX-ARP-Request-Id: r2\r\nX-ARP-Signature: é\r\n\r\n"
            ).encode()
        )
        assert await raw_status(gateway.port, signed_utf8) == 401
        async with aiohttp.ClientSession() as http:
            await register_with(http, gateway, "a1", {"Authorization": "Bearer plane"})
        upgrade = (
            b"GET /ws/agent/a1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Protocol: agent-token, \xff\xfe\r\n\r\n"
        )
        assert await raw_status(gateway.port, upgrade) == 401


async def register_with(
    http: aiohttp.ClientSession, gateway: Gateway, agent_id: str, headers: dict[str, str]
) -> None:
    async with http.post(
        base(gateway) + "/api/agents/register/", json={"agent_id": agent_id}, headers=headers
    ) as reply:
        assert reply.status == 201, await reply.text()


# -- L4: a Redis outage does not get busy, healthy agents swept ---------------------------------


async def test_redis_outage_longer_than_the_heartbeat_timeout_keeps_busy_agents(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    config = gateway_config(server.url).replace(bounds={"inbound_queue": 4, "max_write_batch": 8})
    try:
        async with (
            Gateway(config) as gateway,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http,
        ):
            agent = await assigned_agent(http, gateway, "a1", "t1")
            server.stop()
            # More than one batch (8) plus the queue (4): the reader stops reading.
            lines = [m.log("t1", seq, f"line {seq}") for seq in range(20)]
            for message in lines:
                await agent.send(message)
            # Past heartbeat_timeout (2 units) with the gateway not reading: beats wait unread.
            for _ in range(6):
                await agent.send(m.heartbeat(time.time()))
                await asyncio.sleep(units(0.5))
            assert "a1" in gateway.connections, "swept while Redis, not the agent, was down"
            server.start()
            await agent.wait_acked({x["message_id"] for x in lines}, timeout=units(10))
            await agent.close()
        assert [int(e["seq"]) for e in stream(server, config, "agent_logs")] == list(range(20))
    finally:
        server.stop()
