"""Command mode's API answers only requests that carry the client's token (when it has one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from arp.command.config import CommandConfig
from arp.command.server import CommandServer


@pytest.fixture
async def server() -> AsyncIterator[CommandServer]:
    async with CommandServer(CommandConfig(token="Box-1")) as command:
        yield command


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("?token=Box-1", {}),
        ("", {"X-ARP-Token": "Box-1"}),
        ("", {"Cookie": "other=1; arp_token=Box-1"}),
        ("", {"Host": "box-1.relay.example:17003"}),  # subdomain routing, any case
    ],
)
async def test_each_form_of_the_token_is_accepted(
    server: CommandServer, suffix: str, headers: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/sessions{suffix}", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("", {}),
        ("?token=box-1", {}),  # the token itself is exact
        ("?token=Box-12", {}),
        ("", {"X-ARP-Token": "nope", "Cookie": "arp_token=nope"}),
        ("", {"Host": "evil.example"}),  # a DNS-rebinding page names its own host
    ],
)
async def test_requests_without_the_token_are_refused(
    server: CommandServer, suffix: str, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/api/sessions", "/", "/api/claude/projects", "/mcp"):
            async with http.get(f"{server.url}{path}{suffix}", headers=headers) as response:
                assert response.status == 401, path
                assert "needs the client's token" in (await response.json())["error"]["message"]
        async with http.post(
            f"{server.url}/api/sessions{suffix}",
            json={"executor": "claude", "prompt": "x"},
            headers=headers,
        ) as response:
            assert response.status == 401


async def test_every_access_token_is_accepted_and_nothing_else() -> None:
    """arpc with access tokens: the API takes each of them (as the relay routes them) and not
    the client_id, which then opens nothing (issue 14 item 4)."""
    config = CommandConfig(token="alice-secret", other_tokens=("bob-secret",))
    async with CommandServer(config) as command, aiohttp.ClientSession() as http:
        for token, status in (
            ("alice-secret", 200),
            ("bob-secret", 200),
            ("Box-1", 401),
            ("carol", 401),
        ):
            async with http.get(f"{command.url}/api/sessions?token={token}") as response:
                assert response.status == status, token
