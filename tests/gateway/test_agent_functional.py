"""arpc's agent loop against a real gateway and a real session manager running a fake CLI.

The fake `claude` prints Claude's stream-json: an init line, `lines=N` text lines `delay=S`
seconds apart, then a result. The agent is killed mid-task, the gateway restarted mid-task:
every event the session stored reaches the stream once, and exactly one result.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from arp.agents.sessions import SessionConfig, SessionManager
from arp.gateway.agent import AgentLoop, AgentOptions
from arp.gateway.config import GatewayConfig
from arp.gateway.server import Gateway
from tests.conftest import units
from tests.gateway.conftest import RedisServer, base, gateway_config, register
from tests.gateway.conftest import stream as read_stream

FAKE_CLAUDE = """\
import json, sys, time
prompt = sys.argv[sys.argv.index("-p") + 1]
opts = dict(part.split("=") for part in prompt.split())
lines, delay = int(opts.get("lines", 3)), float(opts.get("delay", 0))
print(json.dumps({"type": "system", "subtype": "init", "session_id": "fake-1"}), flush=True)
for i in range(lines):
    text = {"type": "text", "text": f"line {i}"}
    print(json.dumps({"type": "assistant", "message": {"content": [text]}}), flush=True)
    time.sleep(delay)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done",
                  "usage": {"input_tokens": 7, "output_tokens": 11}}), flush=True)
"""


@pytest.fixture
def fake_claude(tmp_path: Path) -> Path:
    path = tmp_path / "claude"
    path.write_text(f"#!{sys.executable}\n{FAKE_CLAUDE}")
    path.chmod(0o755)
    return path


def options(gateway: Gateway, agent_id: str, token: str, state_dir: Path) -> AgentOptions:
    return AgentOptions(
        gateway=f"ws://127.0.0.1:{gateway.port}",
        agent_id=agent_id,
        token=token,
        state_dir=state_dir,
        heartbeat_interval=units(0.5),
        ack_timeout=units(0.5),
        backoff_initial=units(0.05),
        backoff_max=units(0.3),
    )


@pytest.fixture
async def sessions(tmp_path: Path, fake_claude: Path) -> AsyncIterator[SessionManager]:
    config = SessionConfig(
        data_dir=tmp_path / "state" / "sessions",
        binaries={"claude": str(fake_claude)},
        sigint_grace=units(0.5),
        sigterm_grace=units(0.5),
    )
    async with SessionManager(config) as manager:
        yield manager


async def post(http: aiohttp.ClientSession, gateway: Gateway, path: str, body: object) -> int:
    async with http.post(base(gateway) + path, json=body) as reply:
        await reply.read()
        return reply.status


async def wait_for(predicate: Callable[[], object], timeout: float = units(15)) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(units(0.05))


def entries(
    server: RedisServer, config: GatewayConfig, name: str, task: str
) -> list[dict[str, str]]:
    return [e for e in read_stream(server, config, name) if e["task_id"] == task]


async def test_agent_runs_a_task_end_to_end(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
    sessions: SessionManager,
    tmp_path: Path,
) -> None:
    token = await register(http, gateway, "a1")
    async with AgentLoop(options(gateway, "a1", token, tmp_path / "state"), sessions) as agent:
        await asyncio.wait_for(agent.connected.wait(), units(5))
        task = {"task_id": "t1", "executor": "claude", "prompt": "lines=5 delay=0"}
        assert await post(http, gateway, "/api/agents/a1/tasks/", task) == 202
        await wait_for(lambda: entries(redis_server, config, "agent_results", "t1"))
        await wait_for(lambda: not agent.tasks)
        [result] = entries(redis_server, config, "agent_results", "t1")
        assert (result["exit_code"], result["text"]) == ("0", "done")
        assert json.loads(result["usage"])["output_tokens"] == 11
        logs = entries(redis_server, config, "agent_logs", "t1")
        seqs = [int(e["seq"]) for e in logs]
        assert seqs == list(range(1, len(seqs) + 1))
        texts = [json.loads(e["data"]).get("text") for e in logs if e["stream"] == "text"]
        assert texts == [f"line {i}" for i in range(5)]
        states = [e["state"] for e in entries(redis_server, config, "agent_status", "t1")]
        assert states == ["running", "completed"]
        assert not list((tmp_path / "state" / "tasks").glob("*.json")), "state kept after ack"
        async with http.get(base(gateway) + "/api/agents/a1/") as reply:
            assert (await reply.json())["running_tasks"] == []


async def test_cancel_stops_the_task(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
    sessions: SessionManager,
    tmp_path: Path,
) -> None:
    token = await register(http, gateway, "a1")
    async with AgentLoop(options(gateway, "a1", token, tmp_path / "state"), sessions):
        task = {"task_id": "t1", "executor": "claude", "prompt": "lines=400 delay=0.05"}
        await wait_for(lambda: "a1" in gateway.connections)
        assert await post(http, gateway, "/api/agents/a1/tasks/", task) == 202
        await wait_for(lambda: len(entries(redis_server, config, "agent_logs", "t1")) >= 3)
        assert await post(http, gateway, "/api/agents/a1/tasks/t1/cancel/", {}) == 202
        await wait_for(lambda: entries(redis_server, config, "agent_results", "t1"))
        states = [e["state"] for e in entries(redis_server, config, "agent_status", "t1")]
        assert states == ["running", "cancelled"]
        assert len(entries(redis_server, config, "agent_logs", "t1")) < 400


async def test_gateway_restarted_mid_task(
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
    sessions: SessionManager,
    tmp_path: Path,
) -> None:
    config = gateway_config(redis_server.url)
    first = Gateway(config)
    await first.start()
    port = first.port
    token = await register(http, first, "a1")
    agent = AgentLoop(options(first, "a1", token, tmp_path / "state"), sessions)
    async with agent:
        await wait_for(lambda: "a1" in first.connections)
        task = {"task_id": "t1", "executor": "claude", "prompt": "lines=60 delay=0.02"}
        assert await post(http, first, "/api/agents/a1/tasks/", task) == 202
        await wait_for(lambda: len(entries(redis_server, config, "agent_logs", "t1")) >= 5)
        await first.close()
        await asyncio.sleep(units(0.3))
        async with Gateway(config.replace(server={"port": port})):
            await wait_for(lambda: entries(redis_server, config, "agent_results", "t1"))
            await wait_for(lambda: not agent.tasks)
        assert agent.connections >= 2
    seqs = [int(e["seq"]) for e in entries(redis_server, config, "agent_logs", "t1")]
    stored = sessions.get(sessions.list()[0].session_id).last_seq
    assert seqs == list(range(1, stored + 1)), "every stored event once, in order"
    assert len(entries(redis_server, config, "agent_results", "t1")) == 1


async def test_redis_restarted_mid_task_agent_resends(
    tmp_path: Path, sessions: SessionManager
) -> None:
    redis_server = RedisServer(tmp_path / "r", persistent=True)
    (tmp_path / "r").mkdir()
    redis_server.start()
    config = gateway_config(redis_server.url)
    try:
        async with (
            Gateway(config) as gateway,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http,
        ):
            token = await register(http, gateway, "a1")
            agent = AgentLoop(options(gateway, "a1", token, tmp_path / "state"), sessions)
            async with agent:
                await wait_for(lambda: "a1" in gateway.connections)
                task = {"task_id": "t1", "executor": "claude", "prompt": "lines=60 delay=0.02"}
                assert await post(http, gateway, "/api/agents/a1/tasks/", task) == 202
                await wait_for(lambda: len(entries(redis_server, config, "agent_logs", "t1")) >= 5)
                redis_server.stop()
                await wait_for(lambda: len(agent.outbox) > 10)
                await asyncio.sleep(units(0.5))
                redis_server.start()
                await wait_for(lambda: not agent.tasks)
        seqs = [int(e["seq"]) for e in entries(redis_server, config, "agent_logs", "t1")]
        stored = sessions.get(sessions.list()[0].session_id).last_seq
        assert seqs == list(range(1, stored + 1)), "every stored event once, in order"
        assert len(entries(redis_server, config, "agent_results", "t1")) == 1
    finally:
        redis_server.stop()


def start_agent(port: int, token_file: Path, state: Path, fake: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "arp.gateway",
        "agent",
        "--gateway",
        f"ws://127.0.0.1:{port}",
        "--agent-id",
        "a1",
        "--agent-token-file",
        str(token_file),
        "--agent-state-dir",
        str(state),
        "--agent-heartbeat-interval",
        str(units(0.5)),
        "--binary",
        f"claude={fake}",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_agent_killed_mid_task_and_restarted(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    config: GatewayConfig,
    fake_claude: Path,
    tmp_path: Path,
) -> None:
    token = await register(http, gateway, "a1")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    state = tmp_path / "agent"
    process = start_agent(gateway.port or 0, token_file, state, fake_claude)
    try:
        await wait_for(lambda: "a1" in gateway.connections)
        task = {"task_id": "t1", "executor": "claude", "prompt": "lines=400 delay=0.02"}
        assert await post(http, gateway, "/api/agents/a1/tasks/", task) == 202
        await wait_for(lambda: len(entries(redis_server, config, "agent_logs", "t1")) >= 10)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=units(5))
        # The run goes on without arpc (its supervisor holds the pipes: issue 20).
        await asyncio.sleep(units(0.3))
        assert not entries(redis_server, config, "agent_results", "t1")

        process = start_agent(gateway.port or 0, token_file, state, fake_claude)
        await wait_for(lambda: entries(redis_server, config, "agent_results", "t1"))
        await wait_for(lambda: not list((state / "tasks").glob("*.json")))
    finally:
        process.terminate()
        process.wait(timeout=units(10))
    [events_file] = state.glob("**/events.jsonl")
    stored = [json.loads(line)["seq"] for line in events_file.read_text().splitlines()]
    seqs = [int(e["seq"]) for e in entries(redis_server, config, "agent_logs", "t1")]
    assert seqs == stored, "every stored event reaches the stream once"
    assert len(seqs) >= 400  # the lines printed while no arpc ran are there too
    [result] = entries(redis_server, config, "agent_results", "t1")
    assert result["exit_code"] == "0"
    states = [e["state"] for e in entries(redis_server, config, "agent_status", "t1")]
    assert states[0] == "running" and states[-1] == "completed", states


async def test_refused_agent_keeps_retrying_with_backoff(
    gateway: Gateway, http: aiohttp.ClientSession, sessions: SessionManager, tmp_path: Path
) -> None:
    await register(http, gateway, "a1")
    agent = AgentLoop(options(gateway, "a1", "wrong-token", tmp_path / "state"), sessions)
    async with agent:

        def refusals() -> int:
            return gateway.metrics.refused_connections.get("bad_token", 0)

        await wait_for(lambda: refusals() >= 3, timeout=units(5))
        assert agent.connections == 0 and "a1" not in gateway.connections
        seen = refusals()
        await asyncio.sleep(units(0.3))
        assert refusals() <= seen + 3, "retries are spaced by the backoff, not a busy loop"
