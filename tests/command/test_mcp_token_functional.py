"""The MCP port needs the command API's token (issue 14 item 5): without it any local process
could start agent runs through ``--mcp-port``."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from arp.command.mcp import McpLimits, mcp_service
from arp.command.mcp.service import McpService
from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config
from tests.command.test_mcp_functional import ACCEPT, INITIALIZE
from tests.conftest import units

TOKEN = "mcp-token-tester"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CommandServer]:
    async with CommandServer(fake_config(tmp_path, token=TOKEN)) as srv:
        yield srv


@pytest.fixture
async def mcp(server: CommandServer) -> AsyncIterator[McpService]:
    limits = McpLimits(shutdown_timeout=units(2), start_timeout=units(5), forward_idle=units(30))
    service = mcp_service(argparse.Namespace(enable_mcp=True, mcp_port=0), server, limits=limits)
    assert service is not None
    async with service as running:
        yield running


async def initialize(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(url, json=INITIALIZE, headers={**ACCEPT, **(headers or {})}) as response,
    ):
        return response.status, await response.text()


async def test_the_loopback_port_needs_the_token(mcp: McpService) -> None:
    status, body = await initialize(mcp.url)
    assert status == 401, body
    assert "token" in body and "Mcp-Session-Id" not in body
    status, _ = await initialize(f"{mcp.url}?token=wrong")
    assert status == 401
    status, body = await initialize(f"{mcp.url}?token={TOKEN}")
    assert status == 200, body
    assert '"serverInfo"' in body
    status, body = await initialize(mcp.url, {"X-ARP-Token": TOKEN})
    assert status == 200, body


async def test_the_command_apps_mcp_route_checks_then_forwards_with_the_token(
    server: CommandServer, mcp: McpService
) -> None:
    status, _ = await initialize(f"{server.url}/mcp")
    assert status == 401
    status, body = await initialize(f"{server.url}/mcp?token={TOKEN}")
    assert status == 200, body
    assert '"serverInfo"' in body


async def test_the_loopback_port_takes_every_access_token(tmp_path: Path) -> None:
    """arpc with several access tokens: MCP accepts each, as the API does (issue 14 item 4)."""
    config = fake_config(tmp_path, token="alice-secret", other_tokens=("bob-secret",))
    async with CommandServer(config) as srv:
        limits = McpLimits(shutdown_timeout=units(2), start_timeout=units(5))
        service = mcp_service(argparse.Namespace(enable_mcp=True, mcp_port=0), srv, limits=limits)
        assert service is not None
        async with service as running:
            for token, status in (("alice-secret", 200), ("bob-secret", 200), ("x", 401)):
                got, body = await initialize(running.url, {"X-ARP-Token": token})
                assert got == status, (token, body)
