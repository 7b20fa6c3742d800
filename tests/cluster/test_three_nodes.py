"""Three `arps --cluster` processes on loopback (127.0.0.1, .2, .3) sharing a private Redis,
one arpc (in-process) that may use any of them: reach it through every node (HTTP, WebSocket,
raw TCP), 200 concurrent requests spread over the nodes, kill -9 of its node while requests
run, and the hijack rule across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from arp.client.config import ClientConfig, RelayAddress, Target
from arp.client.control import Client
from arp.protocol import frames
from tests.cluster.conftest import SECRET
from tests.conftest import free_port, units
from tests.gateway.conftest import RedisServer
from tests.relay.conftest import fast_timeouts, wait_until

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass
class Node:
    name: str
    host: str
    control: int
    proxy: int
    public: int
    peer: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def relay(self) -> RelayAddress:
        return RelayAddress(self.host, self.control, self.proxy)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.public}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=units(10))


def start(node: Node, redis: RedisServer, prefix: str, tcp_port: int, log: Path) -> None:
    argv = [
        sys.executable, "-m", "arp.relay", "--bind", node.host,
        "--control-port", str(node.control), "--proxy-port", str(node.proxy),
        "--public-port", str(node.public), "--tcp-ports", f"{tcp_port}-{tcp_port}",
        "--cluster", "--node-id", node.name, "--peer-port", str(node.peer),
        "--redis-url", redis.url, "--cluster-prefix", prefix, "--log-level", "info",
        "--heartbeat-interval", "0.2", "--heartbeat-timeout", "2", "--tunnel-wait", "5",
    ]  # fmt: skip
    env = dict(os.environ, ARPS_CLUSTER_SECRET=SECRET)
    with log.open("ab") as out:
        node.process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + units(20)
    while time.monotonic() < deadline:
        assert node.process.poll() is None, log.read_text()[-2000:]
        with contextlib.suppress(OSError), socket.create_connection((node.host, node.public), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"node {node.name} did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def tcp_port() -> int:
    return free_port()


@pytest.fixture
def three(
    redis_server: RedisServer, prefix: str, tcp_port: int, tmp_path: Path
) -> Iterator[list[Node]]:
    nodes = [
        Node(name, host, free_port(host), free_port(host), free_port(host), free_port(host))
        for name, host in zip("abc", HOSTS, strict=True)
    ]
    try:
        for node in nodes:
            start(node, redis_server, prefix, tcp_port, tmp_path / f"{node.name}.log")
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
async def client(three: list[Node], target: Target, tcp_port: int) -> AsyncIterator[Client]:
    config = ClientConfig(
        client_id="tester",
        http_target=target,
        tcp_targets={tcp_port: target},
        relays=tuple(n.relay for n in three),
        timeouts=fast_timeouts(),
    )
    async with Client(config) as arpc:
        await arpc.wait_registered(units(10))
        yield arpc


async def echo(http: aiohttp.ClientSession, node: Node, n: int) -> tuple[int, str]:
    async with http.get(node.base + f"/echo?token=tester&n={n}") as reply:
        if reply.status != 200:
            return reply.status, ""
        return 200, (await reply.json())["query"]["n"]


async def raw_http(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(units(5)):
        data = await reader.read(-1)
    writer.close()
    return data


async def raw_when_bound(host: str, port: int, path: str) -> bytes:
    """`raw_http` once the node listens on the port (it learns of grants at each renewal)."""
    async with asyncio.timeout(units(10)):
        while True:
            try:
                return await raw_http(host, port, path)
            except ConnectionRefusedError:
                await asyncio.sleep(0.2)


async def reachable_everywhere(http: aiohttp.ClientSession, nodes: list[Node]) -> None:
    """Wait (bounded) until every node has learnt where the client is."""

    async def ok() -> bool:
        for node in nodes:
            with contextlib.suppress(aiohttp.ClientError):
                if (await echo(http, node, 0))[0] != 200:
                    return False
        return True

    async with asyncio.timeout(units(10)):
        while not await ok():
            await asyncio.sleep(0.2)


async def test_http_websocket_and_raw_tcp_through_every_node(
    three: list[Node], client: Client, tcp_port: int
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http:
        await reachable_everywhere(http, three)
        for node in three:
            assert await echo(http, node, 7) == (200, "7")
            async with http.ws_connect(node.base + "/ws?token=tester") as ws:
                await ws.send_str(node.name)
                assert (await ws.receive()).data == "echo: " + node.name
            response = await raw_when_bound(node.host, tcp_port, "/echo?raw=" + node.name)
            assert response.startswith(b"HTTP/1.1 200"), (node.name, response[:200])
            assert node.name.encode() in response.split(b"\r\n\r\n", 1)[1]

        # 200 concurrent requests spread over the three nodes: every answer the right one.
        async def one(n: int) -> tuple[int, str]:
            return await echo(http, three[n % 3], n)

        results = await asyncio.gather(*(one(n) for n in range(200)))
        assert results == [(200, str(n)) for n in range(200)]


async def test_the_same_client_id_elsewhere_is_refused_while_the_first_is_live(
    three: list[Node], client: Client
) -> None:
    holder = next(n for n in three if n.relay == client.relay)
    for node in three:
        if node is holder:
            continue
        answer, _ = await register_raw_at(node, "tester")
        assert isinstance(answer, frames.RegisterResult) and not answer.success
        assert f"node {holder.name}" in (answer.error or "")


async def register_raw_at(node: Node, client_id: str) -> tuple[frames.Message, object]:
    reader, writer = await asyncio.open_connection(node.host, node.control)
    try:
        writer.write(
            frames.encode(
                frames.Register(client_id=client_id, tunnel_protocol=frames.TUNNEL_PROTOCOL)
            )
        )
        decoder = frames.FrameDecoder()
        async with asyncio.timeout(units(5)):
            while True:
                data = await reader.read(65536)
                assert data
                for answer in decoder.feed(data):
                    return answer, None
    finally:
        writer.close()


async def test_kill_9_of_the_clients_node_while_requests_run(
    three: list[Node], client: Client
) -> None:
    holder = next(n for n in three if n.relay == client.relay)
    survivors = [n for n in three if n is not holder]
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await reachable_everywhere(http, three)
        wrong: list[tuple[int, str]] = []
        failed = 0
        ok_before = 0
        stop = asyncio.Event()

        async def hammer(worker: int) -> None:
            nonlocal failed, ok_before
            n = worker * 100_000
            while not stop.is_set() and n < worker * 100_000 + 5000:
                n += 1
                node = three[n % 3]
                try:
                    status, body = await echo(http, node, n)
                except (TimeoutError, aiohttp.ClientError):
                    failed += 1
                    continue
                if status == 200 and body != str(n):
                    wrong.append((n, body))
                elif status == 200:
                    ok_before += 1

        workers = [asyncio.ensure_future(hammer(w)) for w in range(12)]
        await asyncio.sleep(units(1))
        registrations = client.registrations
        killed_at = time.monotonic()
        holder.kill()
        await wait_until(
            lambda: client.registrations > registrations and client.registered.is_set(),
            units(10),
            "the client did not re-register within 10 s",
        )
        moved_after = time.monotonic() - killed_at
        assert moved_after < 10
        assert client.relay in [n.relay for n in survivors]
        await asyncio.sleep(units(2))  # traffic through the survivors meanwhile
        stop.set()
        await asyncio.gather(*workers)
        assert not wrong, f"answered wrongly: {wrong[:5]}"
        assert ok_before > 0
        # Through any surviving node requests succeed now (every node has learnt the move).
        await reachable_everywhere(http, survivors)
        for n, node in enumerate(survivors * 10):
            assert await echo(http, node, n) == (200, str(n))


async def test_a_download_through_a_peer_node_ends_as_a_reset_when_the_holder_dies(
    three: list[Node], client: Client
) -> None:
    """Issue 19: a request in flight when the client's node dies fails cleanly, as a reset on
    the public side, never as a clean end that would pass for a complete download."""
    holder = next(n for n in three if n.relay == client.relay)
    through = next(n for n in three if n is not holder)
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await reachable_everywhere(http, three)
    size = 1 << 30  # far more than is read before the kill
    reader, writer = await asyncio.open_connection(through.host, through.public)
    writer.write(f"GET /blob/{size}?token=tester HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    async with asyncio.timeout(units(10)):
        while got < 1 << 20:  # the download is under way
            chunk = await reader.read(65536)
            assert chunk, "the download ended before the kill"
            got += len(chunk)
    holder.kill()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(units(20)):
            while got < size:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break  # a clean end: the assertion below fails
                got += len(chunk)
    writer.close()
