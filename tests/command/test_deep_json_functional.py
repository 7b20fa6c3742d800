"""Deeply nested JSON in a command mode request body (issue 14 item 6): a JSON 400 that says
why, not a plain-text 500."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config


async def test_a_2000_deep_body_is_a_json_400(tmp_path: Path) -> None:
    body = '{"executor": "claude", "prompt": ' + "[" * 2000 + "]" * 2000 + "}"
    async with (
        CommandServer(fake_config(tmp_path)) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
    ):
        for path in ("/api/sessions", "/api/sessions/nope/messages"):
            async with http.post(
                path, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 400, await response.text()
                assert response.content_type == "application/json"
                error = (await response.json())["error"]
                assert error["status"] == 400 and "nested deeper than" in error["message"]
