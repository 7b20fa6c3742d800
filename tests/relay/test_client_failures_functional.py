"""arpc's failures that a person must mend (issue 14 item 7): TLS that cannot work as configured
stops the client with exit 2 and a message saying what to fix, instead of retrying forever;
and a 502 for an unreachable local service keeps the local address in arpc's log only."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from arp.client.control import Client, TlsSetupError
from arp.relay.server import Relay
from tests.conftest import free_port, units
from tests.relay.conftest import SERVER_NAME, Pki, Stack, StackFactory, Target


async def _stopped_by(stack: Stack, ca: Path, server_name: str | None) -> TlsSetupError:
    """Run a TLS client against `stack`; it must stop by itself with a TLS setup error."""
    client = Client(
        stack.client_config(
            "secure", tls=ssl.create_default_context(cafile=str(ca)), tls_server_name=server_name
        )
    )
    await client.start()
    try:
        async with asyncio.timeout(units(5)):
            await client.wait_closed()
    finally:
        await client.close()
    assert isinstance(client.fatal_error, TlsSetupError), client.fatal_error
    assert not client.fatal_error.retryable
    return client.fatal_error


async def test_an_untrusted_certificate_stops_the_client_and_names_tls_ca(
    make_stack: StackFactory, pki: Pki
) -> None:
    stack = await make_stack(client_id=None, tls_cert=str(pki.cert), tls_key=str(pki.key))
    error = await _stopped_by(stack, pki.other_ca, SERVER_NAME)
    assert "not trusted" in error.message and "--tls-ca" in error.message


async def test_a_certificate_for_another_name_stops_the_client_and_names_the_flag(
    make_stack: StackFactory, pki: Pki
) -> None:
    stack = await make_stack(client_id=None, tls_cert=str(pki.cert), tls_key=str(pki.key))
    # No --tls-server-name: the name checked is --server-addr, 127.0.0.1, not in the certificate.
    error = await _stopped_by(stack, pki.ca, None)
    assert "does not name '127.0.0.1'" in error.message
    assert "--tls-server-name" in error.message
    error = await _stopped_by(stack, pki.ca, "elsewhere.test")
    assert "does not name 'elsewhere.test'" in error.message


async def test_a_plaintext_relay_stops_a_tls_client(make_stack: StackFactory, pki: Pki) -> None:
    stack = await make_stack(client_id=None)
    error = await _stopped_by(stack, pki.ca, SERVER_NAME)
    assert "does not speak TLS" in error.message and "--tls-cert" in error.message


async def test_the_right_ca_and_name_still_register(make_stack: StackFactory, pki: Pki) -> None:
    stack = await make_stack(client_id=None, tls_cert=str(pki.cert), tls_key=str(pki.key))
    await stack.start_client(
        "secure",
        tls=ssl.create_default_context(cafile=str(pki.ca)),
        tls_server_name=SERVER_NAME,
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/echo?token=secure") as response,
    ):
        assert response.status == 200


async def test_arpc_exits_2_with_what_to_fix(
    make_stack: StackFactory, pki: Pki, tmp_path: Path
) -> None:
    stack = await make_stack(client_id=None, tls_cert=str(pki.cert), tls_key=str(pki.key))
    relay: Relay = stack.relay
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arp.client",
        "--server-addr", "127.0.0.1",
        "--control-port", str(relay.control_port),
        "--proxy-port", str(relay.proxy_port),
        "--local-port", str(free_port()),
        "--client-id", "cli",
        "--tls-ca", str(pki.other_ca),
        "--tls-server-name", SERVER_NAME,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c"),
             "XDG_DATA_HOME": str(tmp_path / "d"), "XDG_STATE_HOME": str(tmp_path / "s")},
        cwd=tmp_path,
    )  # fmt: skip
    try:
        async with asyncio.timeout(units(15)):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2, stderr.decode()
    text = stderr.decode()
    assert "❌ cannot connect to the relay: " in text
    assert "--tls-ca" in text
    assert "cli" not in relay.clients


async def test_a_502_keeps_the_local_address_in_the_client_log(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="arp.client.control")
    stack = await make_stack(client_id=None)
    port = free_port()
    await stack.start_client("nolocal", http_target=Target("127.0.0.1", port))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/?token=nolocal") as response,
    ):
        assert response.status == 502
        body = await response.text()
    assert "cannot reach the local service" in body
    assert str(port) not in body and "127.0.0.1" not in body
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{port}" in logged
