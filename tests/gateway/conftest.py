"""Gateway fixtures: a private redis-server (never the system one), a gateway, a raw agent."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from arp.gateway.config import GatewayConfig
from arp.gateway.server import Gateway
from tests.conftest import free_port, units


class RedisServer:
    """A redis-server child on a free loopback port in its own folder; stop/start keeps data
    when `persistent` (append-only file, fsync always), so a restart test can check streams."""

    def __init__(self, folder: Path, *, persistent: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required for the gateway tests"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.folder), "--daemonize", "no", "--loglevel", "warning"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + units(10)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=units(10))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            decode_responses=True,
            socket_timeout=units(5),
            socket_connect_timeout=units(5),
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def gateway_config(redis_url: str, **agent: Any) -> GatewayConfig:
    """A test configuration: ephemeral port, a private key prefix, a fast clock."""
    settings: dict[str, Any] = {
        "heartbeat_timeout": units(2),
        "cleanup_interval": units(0.2),
    }
    settings.update(agent)
    return GatewayConfig().replace(
        server={"host": "127.0.0.1", "port": 0},
        redis={"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}:", "timeout": units(1)},
        agent=settings,
    )


@pytest.fixture
def config(redis_server: RedisServer) -> GatewayConfig:
    return gateway_config(redis_server.url)


@pytest.fixture
async def gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    async with Gateway(config) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as session:
        yield session


def base(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


async def register(http: aiohttp.ClientSession, gateway: Gateway, agent_id: str) -> str:
    async with http.post(
        base(gateway) + "/api/agents/register/", json={"agent_id": agent_id, "name": agent_id}
    ) as response:
        assert response.status in (200, 201), await response.text()
        return str((await response.json())["token"])


async def post_task(
    http: aiohttp.ClientSession, gateway: Gateway, agent_id: str, task_id: str
) -> aiohttp.ClientResponse:
    async with http.post(
        base(gateway) + f"/api/agents/{agent_id}/tasks/",
        json={"task_id": task_id, "executor": "claude", "prompt": "hello"},
    ) as response:
        await response.read()
        return response


class RawAgent:
    """A hand-driven agent over a real WebSocket: the test decides what is sent and acked."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acked: set[str] = set()
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, gateway: Gateway, agent_id: str, token: str
    ) -> RawAgent:
        url = f"ws://127.0.0.1:{gateway.port}/ws/agent/{agent_id}"
        ws = await http.ws_connect(url, protocols=("agent-token", token))
        return cls(ws)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, kind: str, timeout: float = units(5)) -> dict[str, Any]:
        """The next received message of `kind` (acks are recorded on the way)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.receive()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"websocket ended: {frame.type} {frame.extra}")
                message = json.loads(frame.data)
                self.received.append(message)
                if message["type"] == "ack":
                    self.acked.update(message["ack_ids"])
                if message["type"] == kind:
                    return message

    async def wait_acked(self, ids: set[str], timeout: float = units(5)) -> None:
        async with asyncio.timeout(timeout):
            while not ids <= self.acked:
                await self.next("ack")

    async def close(self) -> None:
        await self.ws.close()


def stream(server: RedisServer, config: GatewayConfig, name: str) -> list[dict[str, str]]:
    client = server.client()
    try:
        return [fields for _id, fields in client.xrange(config.redis.prefix + name)]
    finally:
        client.close()
