"""A property of per-request routing over real sockets: whatever the sequence of requests on
one connection (tokens of three clients or of none, bodies of every framing) and however its
bytes are split, every response comes from the right client, in order, and nothing is left
waiting.

The relay, its clients and their services run on a loop in a thread of their own, so the
examples drive plain blocking sockets (each bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arp.client.config import ClientConfig, Target
from arp.client.control import Client
from arp.relay.server import Relay, RelayConfig
from tests.conftest import units
from tests.relay.conftest import fast_timeouts
from tests.relay.routing import NAMES, Service

UNKNOWN = "nobody"


@dataclass
class Running:
    port: int
    services: dict[str, Service]


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    ready = threading.Event()
    found: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        found["stop"] = (asyncio.get_running_loop(), stop)
        relay = Relay(
            RelayConfig(
                bind="127.0.0.1",
                control_port=0,
                proxy_port=0,
                public_port=0,
                pool_size=2,
                timeouts=fast_timeouts(),
            )
        )
        await relay.start()
        services: dict[str, Service] = {}
        runners, clients = [], []
        for name in NAMES:
            service = Service(name)
            runner = web.AppRunner(service.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            client = Client(
                ClientConfig(
                    client_id=name,
                    http_target=Target("127.0.0.1", port),
                    control_port=relay.control_port,
                    proxy_port=relay.proxy_port,
                    timeouts=fast_timeouts(),
                )
            )
            await client.start()
            await client.wait_registered(units(5))
            services[name] = service
            runners.append(runner)
            clients.append(client)
        found["running"] = Running(relay.public_port, services)
        ready.set()
        await stop.wait()
        for client in clients:
            await client.close()
        for runner in runners:
            await runner.cleanup()
        await relay.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(units(30)), "the relay stack did not start"
    result = found["running"]
    assert isinstance(result, Running)
    yield result
    loop, stop = found["stop"]  # type: ignore[misc]
    loop.call_soon_threadsafe(stop.set)  # type: ignore[has-type]
    thread.join(units(30))


@dataclass(frozen=True)
class Req:
    token: str
    source: str
    framing: str
    body: bytes
    chunks: tuple[int, ...]

    def encode(self, index: int) -> bytes:
        target, headers = f"/p{index}", ""
        if self.source == "query":
            target += f"?token={self.token}"
        elif self.source == "header":
            headers += f"X-ARP-Token: {self.token}\r\n"
        else:
            headers += f"Cookie: arp_token={self.token}\r\n"
        body = b""
        if self.framing == "length":
            headers += f"Content-Length: {len(self.body)}\r\n"
            body = self.body
        elif self.framing == "chunked":
            headers += "Transfer-Encoding: chunked\r\n"
            pos = 0
            for size in (*self.chunks, len(self.body)):
                piece = self.body[pos : pos + size]
                pos += len(piece)
                if piece:
                    body += b"%x\r\n%s\r\n" % (len(piece), piece)
            body += b"0\r\n\r\n"
        method = "GET" if self.framing == "none" else "POST"
        return f"{method} {target} HTTP/1.1\r\nHost: h\r\n{headers}\r\n".encode() + body


requests = st.builds(
    Req,
    token=st.sampled_from([*NAMES, *NAMES, UNKNOWN]),
    source=st.sampled_from(["query", "header", "cookie"]),
    framing=st.sampled_from(["none", "length", "chunked"]),
    body=st.binary(min_size=1, max_size=3000),
    chunks=st.lists(st.integers(1, 500), max_size=3).map(tuple),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequence=st.lists(requests, min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
)
def test_every_response_comes_from_the_right_client_in_order(
    running: Running, sequence: list[Req], cuts: list[int]
) -> None:
    stream = b"".join(req.encode(i) for i, req in enumerate(sequence))
    points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
    with socket.create_connection(("127.0.0.1", running.port), timeout=units(10)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in itertools.pairwise(points):
            sock.sendall(stream[start:end])
            time.sleep(0.002)  # so the relay reads the pieces apart, as they were cut
        sock.shutdown(socket.SHUT_WR)  # nothing more: the relay must still answer everything
        file = sock.makefile("rb")
        for i, req in enumerate(sequence):
            status_line = file.readline()
            assert status_line, f"no response to request {i} ({req.token})"
            status = int(status_line.split()[1])
            length = 0
            while (line := file.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            body = file.read(length)
            if req.token == UNKNOWN:
                assert status == 404
                break  # the relay's own answer closes the connection
            seen = json.loads(body)
            assert (seen["client"], seen["path"]) == (req.token, f"/p{i}")
            if req.framing != "none":
                assert seen["body"].encode("latin-1") == req.body
        assert file.read() == b""  # and then the end, nothing left waiting
    for service in running.services.values():
        assert service.foreign_tokens() == []
