"""The peer link over TLS when the nodes have a certificate: a request through node B reaches
the client on node A, and a plain-text dialler gets nothing from A's peer port."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from arp.config import Limits
from arp.relay.peer import PeerUnreachable, carry
from tests.cluster.conftest import NodeFactory
from tests.conftest import units
from tests.relay.conftest import wait_until


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_a_request_through_b_reaches_a_over_tls(
    make_node: NodeFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = (str(p) for p in tls_files)
    a = await make_node("a", tls_cert=cert, tls_key=key)
    b = await make_node("b", tls_cert=cert, tls_key=key)
    await a.start_client("tester", tls=ssl.create_default_context(cafile=cert))
    remote = b.relay.remote
    assert remote is not None
    await wait_until(lambda: "tester" in remote.shadows, units(5), "b has no shadow")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http,
        http.get(f"http://127.0.0.1:{b.relay.public_port}/echo?token=tester&tls=1") as reply,
    ):
        assert reply.status == 200
        assert (await reply.json())["query"]["tls"] == "1"
    assert a.relay.peers is not None and a.relay.peers.carried >= 1
    # Without TLS the peer port does not even say its challenge.
    settings = b.relay.config.cluster
    assert settings is not None
    with pytest.raises(PeerUnreachable):
        await carry(
            settings, a.relay.peers.advertise, "tester", tcp_port=None, tls=None, limits=Limits()
        )
    await asyncio.sleep(0)
