"""A relay, a client and a target service on loopback, in-process, on ephemeral ports."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from arp.client.config import ClientConfig, Target
from arp.client.control import Client
from arp.config import Limits, Timeouts
from arp.relay.server import Relay, RelayConfig
from tests.conftest import units

CHUNK = 1 << 20


def fast_timeouts() -> Timeouts:
    """Short deadlines so failure paths are exercised in test time."""
    return Timeouts(
        connect=units(2),
        handshake=units(2),
        first_byte=units(1),
        head=units(2),
        tunnel_wait=units(2),
        heartbeat_interval=units(0.2),
        heartbeat_timeout=units(1),
        pool_tick=units(0.3),
        idle_tunnel=units(1),
        retention=units(3),
        shutdown=units(2),
        backoff_initial=0.05,
        backoff_max=units(0.3),
    )


def blob(size: int, seed: int = 7) -> bytes:
    """`size` deterministic pseudo-random bytes (1 MiB generated, then repeated)."""
    block = random.Random(seed).randbytes(min(size, CHUNK))
    return (block * (size // len(block) + 1))[:size] if size else b""


def target_app() -> web.Application:
    """The local service behind the client: echo, hashing, bulk download, WebSocket echo."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "body": body.decode(errors="replace"),
                "cookie": request.headers.get("Cookie"),
            }
        )

    async def sha256(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"sha256": digest.hexdigest(), "size": size})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        data = blob(min(size, CHUNK))
        sent = 0
        while sent < size:
            piece = data[: min(len(data), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0.05")))
        return web.Response(text=f"slow {request.query.get('n', '')}")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                await socket.send_str("echo: " + message.data)
            elif message.type is WSMsgType.BINARY:
                await socket.send_bytes(message.data)
        return socket

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_post("/sha256", sha256)
    app.router.add_get("/blob/{size}", download)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    return app


@dataclass
class Stack:
    relay: Relay
    target: Target
    clients: list[Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.relay.public_port}"

    def client_config(self, client_id: str = "tester", **changes: Any) -> ClientConfig:
        config = ClientConfig(
            client_id=client_id,
            http_target=self.target,
            server_addr="127.0.0.1",
            control_port=self.relay.control_port,
            proxy_port=self.relay.proxy_port,
            timeouts=fast_timeouts(),
        )
        return dataclasses.replace(config, **changes)

    async def start_client(self, client_id: str = "tester", **changes: Any) -> Client:
        client = Client(self.client_config(client_id, **changes))
        await client.start()
        self.clients.append(client)
        await client.wait_registered(units(5))
        return client


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true, failing the test with `what` after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    runner = web.AppRunner(target_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Target("127.0.0.1", port)
    await runner.cleanup()


@pytest.fixture
async def make_stack(target: Target) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(*, client_id: str | None = "tester", **relay_changes: Any) -> Stack:
        config = RelayConfig(
            bind="127.0.0.1",
            control_port=0,
            proxy_port=0,
            public_port=0,
            pool_size=2,
            timeouts=fast_timeouts(),
            limits=Limits(),
        )
        relay = Relay(dataclasses.replace(config, **relay_changes))
        await relay.start()
        stack = Stack(relay=relay, target=target)
        stacks.append(stack)
        if client_id is not None:
            await stack.start_client(client_id)
        return stack

    yield make
    for stack in stacks:
        for client in stack.clients:
            await client.close()
        await stack.relay.close()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read(-1)
    finally:
        writer.close()


# A private PKI for the TLS tests: a CA, another CA, and the relay's certificate for one name.

SERVER_NAME = "relay.test"


@dataclass(frozen=True)
class Pki:
    ca: Path
    """The CA that signed the relay's certificate."""
    other_ca: Path
    """A CA that signed nothing the relay serves."""
    cert: Path
    """The relay's certificate: for DNS name `SERVER_NAME` only (not 127.0.0.1)."""
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("ARP test CA")
    _, other_cert = _ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(SERVER_NAME, ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(folder / "ca.pem", folder / "other-ca.pem", folder / "cert.pem", folder / "key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.other_ca.write_bytes(other_cert.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki
