"""The gateway over real sockets, with a private redis-server: the control plane's view."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest
from aiohttp import web

from arp.gateway import auth
from arp.gateway import messages as m
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


async def test_task_round_trip_lands_in_streams_once(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    token = await register(http, gateway, "a1")
    agent = await RawAgent.connect(http, gateway, "a1", token)
    response = await post_task(http, gateway, "a1", "t1")
    assert response.status == 202
    task = await agent.next("task")
    assert (task["task_id"], task["prompt"], task["message_id"]) == ("t1", "hello", "task:t1")
    await agent.send(m.ack([task["message_id"]]))

    async with http.get(base(gateway) + "/api/agents/a1/") as reply:
        described = await reply.json()
    assert described["status"] == "online" and described["running_tasks"] == ["t1"]

    sent = [m.status("t1", "running")]
    sent += [m.log("t1", seq, f"line {seq}") for seq in range(5)]
    sent += [m.result("t1", 0, "done", {"input_tokens": 3}), m.result("t1", 0, "done")]
    for message in sent:
        await agent.send(message)
    await agent.wait_acked({message["message_id"] for message in sent})

    logs = stream(redis_server, config, "agent_logs")
    assert [entry["data"] for entry in logs] == [f"line {seq}" for seq in range(5)]
    assert {entry["agent_id"] for entry in logs} == {"a1"}
    results = stream(redis_server, config, "agent_results")
    assert len(results) == 1
    assert results[0]["text"] == "done" and json.loads(results[0]["usage"]) == {"input_tokens": 3}
    states = [(e["task_id"], e["state"]) for e in stream(redis_server, config, "agent_status")]
    assert ("", "online") in states and ("t1", "running") in states

    async with http.get(base(gateway) + "/api/agents/") as reply:
        listed = (await reply.json())["agents"]
    assert [(a["agent_id"], a["status"], a["running_tasks"]) for a in listed] == [
        ("a1", "online", [])
    ]
    async with http.get(base(gateway) + "/metrics") as reply:
        text = await reply.text()
    assert 'arp_gateway_messages_in_total{type="log"} 5' in text
    assert "arp_gateway_duplicates_total 1" in text
    assert "arp_gateway_connected_agents 1" in text
    assert "arp_gateway_task_duration_seconds_count 1" in text
    await agent.close()


async def test_cancel_reaches_the_agent(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    token = await register(http, gateway, "a1")
    agent = await RawAgent.connect(http, gateway, "a1", token)
    assert (await post_task(http, gateway, "a1", "t1")).status == 202
    await agent.next("task")
    async with http.post(base(gateway) + "/api/agents/a1/tasks/t1/cancel/") as reply:
        assert reply.status == 202
    cancel = await agent.next("task_cancel")
    assert cancel["task_id"] == "t1"
    await agent.close()


async def test_unknown_agent_404_and_offline_agent_409(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    assert (await post_task(http, gateway, "ghost", "t1")).status == 404
    await register(http, gateway, "a1")
    assert (await post_task(http, gateway, "a1", "t1")).status == 409
    async with http.post(base(gateway) + "/api/agents/a1/tasks/", data=b"{nope") as reply:
        assert reply.status == 400


async def test_every_error_has_the_one_json_shape(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    # The gateway's own errors and aiohttp's (unknown path, wrong method) alike.
    async with http.post(base(gateway) + "/api/agents/a1/tasks/", data=b"{nope") as reply:
        assert (await reply.json())["error"] == {
            "status": 400,
            "code": "remote_protocol_error",
            "message": "the body is not valid JSON",
        }
    async with http.get(base(gateway) + "/api/nothing/") as reply:
        assert reply.status == 404
        assert (await reply.json())["error"]["code"] == "not_found"
    async with http.delete(base(gateway) + "/api/agents/") as reply:
        assert reply.status == 405
        error = (await reply.json())["error"]
        assert error["code"] == "method_not_allowed" and "DELETE" in error["message"]


async def test_message_without_id_is_dropped(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
) -> None:
    token = await register(http, gateway, "a1")
    agent = await RawAgent.connect(http, gateway, "a1", token)
    assert (await post_task(http, gateway, "a1", "t1")).status == 202
    await agent.send(m.ack([(await agent.next("task"))["message_id"]]))
    anonymous = m.log("t1", 0, "no id")
    del anonymous["message_id"]
    await agent.send(anonymous)
    await agent.ws.send_str("not json")
    marker = m.log("t1", 1, "with id")
    await agent.send(marker)
    await agent.wait_acked({marker["message_id"]})
    assert [e["data"] for e in stream(redis_server, config, "agent_logs")] == ["with id"]
    assert len(agent.acked) == 1
    text = gateway.metrics.render()
    assert 'arp_gateway_dropped_messages_total{reason="missing_message_id"} 1' in text
    assert 'arp_gateway_dropped_messages_total{reason="bad_json"} 1' in text
    await agent.close()


async def test_wrong_token_or_no_subprotocol_refused(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    await register(http, gateway, "a1")
    url = f"ws://127.0.0.1:{gateway.port}/ws/agent/a1"
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await http.ws_connect(url, protocols=("agent-token", "wrong"))
    assert wrong.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        await http.ws_connect(url)
    assert missing.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
        await http.ws_connect(url.replace("a1", "ghost"), protocols=("agent-token", "x"))
    assert unknown.value.status == 403
    assert gateway.connections == {}


async def test_newer_connection_replaces_the_older(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = await register(http, gateway, "a1")
    first = await RawAgent.connect(http, gateway, "a1", token)
    second = await RawAgent.connect(http, gateway, "a1", token)
    with pytest.raises(ConnectionError):
        await first.next("task")
    assert first.ws.close_code == 4000
    assert (await post_task(http, gateway, "a1", "t1")).status == 202
    assert (await second.next("task"))["task_id"] == "t1"
    await second.close()


async def test_heartbeat_timeout_marks_offline(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, heartbeat_timeout=units(0.6))
    async with Gateway(config) as gateway:
        token = await register(http, gateway, "a1")
        token2 = await register(http, gateway, "a2")
        lively = await RawAgent.connect(http, gateway, "a2", token2)
        started = time.monotonic()
        quiet = await RawAgent.connect(http, gateway, "a1", token)
        while not quiet.ws.closed:
            assert time.monotonic() - started < units(5), "the silent agent was never closed"
            await lively.send(m.heartbeat(time.time()))
            with contextlib.suppress(TimeoutError, ConnectionError):
                await quiet.next("task", timeout=units(0.1))
        assert time.monotonic() - started >= units(0.6)
        assert quiet.ws.close_code == 4001
        async with http.get(base(gateway) + "/api/agents/a1/") as reply:
            assert (await reply.json())["status"] == "offline"
        async with http.get(base(gateway) + "/api/agents/a2/") as reply:
            assert (await reply.json())["status"] == "online"
        offline = [
            e for e in stream(redis_server, config, "agent_status") if e["state"] == "offline"
        ]
        assert [(e["agent_id"], e["detail"]) for e in offline] == [("a1", "heartbeat timeout")]
        await lively.close()


async def test_max_connections_enforced(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, max_connections=2)
    async with Gateway(config) as gateway:
        tokens = {name: await register(http, gateway, name) for name in ("a1", "a2", "a3")}
        first = await RawAgent.connect(http, gateway, "a1", tokens["a1"])
        second = await RawAgent.connect(http, gateway, "a2", tokens["a2"])
        third = await RawAgent.connect(http, gateway, "a3", tokens["a3"])
        with pytest.raises(ConnectionError):
            await third.next("task")
        assert third.ws.close_code == 1013
        assert set(gateway.connections) == {"a1", "a2"}
        again = await RawAgent.connect(http, gateway, "a1", tokens["a1"])
        assert (await post_task(http, gateway, "a1", "t1")).status == 202
        assert (await again.next("task"))["task_id"] == "t1"
        with pytest.raises(ConnectionError):
            await first.next("task")
        assert first.ws.close_code == 4000, "the older a1 connection was replaced"
        assert not second.ws.closed
        assert 'refused_connections_total{reason="max_connections"} 1' in gateway.metrics.render()


async def test_task_unacked_is_redelivered_on_reconnect(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = await register(http, gateway, "a1")
    agent = await RawAgent.connect(http, gateway, "a1", token)
    assert (await post_task(http, gateway, "a1", "t1")).status == 202
    await agent.next("task")
    await agent.close()
    agent = await RawAgent.connect(http, gateway, "a1", token)
    again = await agent.next("task")
    assert again["message_id"] == "task:t1"
    await agent.send(m.ack([again["message_id"]]))
    await asyncio.sleep(units(0.2))
    await agent.close()
    agent = await RawAgent.connect(http, gateway, "a1", token)
    with pytest.raises(TimeoutError):
        await agent.next("task", timeout=units(0.5))
    assert gateway.metrics.redeliveries == 1
    await agent.close()


async def test_polling_hands_pending_tasks_to_connected_agents(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    seen_headers: list[str] = []
    verifier = auth.RequestVerifier(
        shared_secret="poll-secret", require_signature=True, clock_skew=30, bearer=""
    )

    async def pending(request: web.Request) -> web.Response:
        seen_headers.append(request.headers.get("Authorization", ""))
        # The control plane can check our signature with the same rules the gateway uses.
        verifier.verify("GET", request.raw_path, request.headers, b"", time.time())
        assert request.query["scope"] == "team a&b"
        tasks = [
            {"agent_id": "a1", "task_id": "p1", "executor": "codex", "prompt": "polled"},
            {"agent_id": "elsewhere", "task_id": "p2", "executor": "codex", "prompt": "x"},
        ]
        return web.json_response({"tasks": tasks})

    app = web.Application()
    app.router.add_get("/api/agent-server/tasks/pending/", pending)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    plane_port = runner.addresses[0][1]
    config = gateway_config(redis_server.url).replace(
        control_plane={
            "url": f"http://127.0.0.1:{plane_port}",
            "token": "plane-token",
            "scope": "team a&b",
            "task_poll_interval": units(0.1),
        },
        auth={"shared_secret": "poll-secret"},
    )
    try:
        async with Gateway(config) as gateway:
            headers = {"Authorization": "Bearer plane-token"}
            async with http.post(
                base(gateway) + "/api/agents/register/", json={"agent_id": "a1"}, headers=headers
            ) as reply:
                token = (await reply.json())["token"]
            agent = await RawAgent.connect(http, gateway, "a1", token)
            task = await agent.next("task")
            assert (task["task_id"], task["executor"], task["prompt"]) == ("p1", "codex", "polled")
            await asyncio.sleep(units(0.4))
            assert [x for x in agent.received if x["type"] == "task"] == [task]
            assert seen_headers and set(seen_headers) == {"Bearer plane-token"}
            await agent.close()
    finally:
        await runner.cleanup()


async def test_health_and_metrics_report_redis_down(http: aiohttp.ClientSession) -> None:
    config = gateway_config("redis://127.0.0.1:1/0")
    async with Gateway(config) as gateway:
        async with http.get(base(gateway) + "/healthz") as reply:
            assert reply.status == 503
            assert (await reply.json())["redis"] == "down"
        async with http.post(base(gateway) + "/api/agents/register/", json={}) as reply:
            assert reply.status == 503
        url = f"ws://127.0.0.1:{gateway.port}/ws/agent/a1"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, protocols=("agent-token", "t"))
        assert refused.value.status == 503
        text = gateway.metrics.render()
        assert "arp_gateway_redis_up 0" in text


async def test_signed_requests(redis_server: RedisServer, http: aiohttp.ClientSession) -> None:
    secret = "s3cret"
    config = gateway_config(redis_server.url).replace(
        auth={"shared_secret": secret, "require_signature": True, "clock_skew": 300.0},
        control_plane={"token": "bearer-token"},
    )
    path = "/api/agents/register/"
    body = json.dumps({"agent_id": "a1"}).encode()

    async def post(headers: dict[str, str], data: bytes = body) -> int:
        async with http.post(base(gateway) + path, data=data, headers=headers) as reply:
            return reply.status

    async with Gateway(config) as gateway:
        now = time.time()
        good = auth.signed_headers(secret, "POST", path, body, now)
        assert await post(good) == 201
        assert await post(good) == 401, "a reused request id is refused"
        assert await post({}) == 401
        assert await post({"Authorization": "Bearer bearer-token"}) == 401
        stale = auth.signed_headers(secret, "POST", path, body, now - 301)
        assert await post(stale) == 401
        future = auth.signed_headers(secret, "POST", path, body, now + 301)
        assert await post(future) == 401
        wrong_key = auth.signed_headers("other", "POST", path, body, now)
        assert await post(wrong_key) == 401
        other_body = auth.signed_headers(secret, "POST", path, b"{}", now)
        assert await post(other_body) == 401
        async with http.get(base(gateway) + "/api/agents/") as reply:
            assert reply.status == 401
            error = (await reply.json())["error"]
            assert error["status"] == 401 and "signed request" in error["message"]
            assert error["code"] == "auth_error"


async def test_slow_consumer_is_disconnected_with_a_reason(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, outbound_queue=4)
    async with Gateway(config) as gateway:
        token = await register(http, gateway, "a1")
        agent = await RawAgent.connect(http, gateway, "a1", token)
        connection = gateway.connections["a1"]
        # Faster than any writer can drain: the fifth queued message overflows the bound.
        sent = [connection.send(m.task_cancel(f"t{i}")) for i in range(6)]
        assert sent == [True] * 4 + [False] * 2
        with pytest.raises(ConnectionError, match="does not keep up"):
            await agent.next("never")
        assert agent.ws.close_code == 4002
        assert 'dropped_messages_total{reason="outbound_queue_full"}' in gateway.metrics.render()


async def test_oversize_message_closes_the_connection(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    config = gateway_config(redis_server.url, max_message_size=1024)
    async with Gateway(config) as gateway:
        token = await register(http, gateway, "a1")
        agent = await RawAgent.connect(http, gateway, "a1", token)
        await agent.send(m.log("t1", 0, "x" * 2048))
        with pytest.raises(ConnectionError):
            await agent.next("never")
        assert agent.ws.close_code == 1009
        async with asyncio.timeout(units(5)):
            while "a1" in gateway.connections:
                await asyncio.sleep(units(0.02))


async def test_port_taken_fails_start_cleanly(gateway: Gateway, config: GatewayConfig) -> None:
    taken = config.replace(server={"port": gateway.port})
    second = Gateway(taken)
    with pytest.raises(OSError):
        await second.start()
    await second.close()  # idempotent after a failed start
    await second.wait_closed()


async def test_a_cancel_during_a_failing_redis_call_still_cancels() -> None:
    """A cancel arriving while Redis fails must end the task, not become a Redis error."""
    from arp.gateway.metrics import GatewayMetrics
    from arp.gateway.store import Store

    store = Store(gateway_config("redis://127.0.0.1:1/0").redis, GatewayMetrics())
    await store.start()
    started = asyncio.Event()

    async def failing_slowly() -> None:
        started.set()
        try:
            await asyncio.sleep(units(5))
        except asyncio.CancelledError:
            raise ConnectionError("connection lost") from None  # as a client library might

    async def caller() -> None:
        await store._call("probe", failing_slowly)

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()
