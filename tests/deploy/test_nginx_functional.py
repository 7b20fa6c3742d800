"""deploy/nginx/arp.conf in front of a relay, driven by real clients over TLS on loopback:
plain HTTP to a forward-mode client's service, a WebSocket echo, Server-Sent Events that arrive
as they are sent, and command mode's API (a session of the fake claude).

One arpc client per relay: nginx keeps upstream connections open and reuses them, and until the
relay routes each request by its own token (issue 13) it routes by connection, so requests for
two clients over one nginx would meet on one upstream connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from arp.client.config import Target
from arp.command.server import CommandServer
from arp.protocol.forwarded import parse_networks
from tests.command.sessions_support import fake_config, sse_events
from tests.conftest import units
from tests.deploy.conftest import FrontFactory, nginx_front  # noqa: F401 (fixture)
from tests.relay.conftest import (  # noqa: F401 (fixtures)
    StackFactory,
    make_stack,
    target,
    target_app,
)


@pytest.fixture
async def streaming_target() -> AsyncIterator[tuple[Target, asyncio.Event]]:
    """The usual test service plus /sse: one event, then a second only once the test says it
    has received the first, then the end. Through a buffering proxy the first never arrives
    before the end, and the test's wait for it times out."""
    first_seen = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'id: 1\ndata: {"n": 1}\n\n')
        async with asyncio.timeout(units(10)):
            await first_seen.wait()
        await response.write(b'id: 2\ndata: {"n": 2}\n\n')
        await response.write_eof()
        return response

    async def headers(request: web.Request) -> web.Response:
        return web.json_response({k: v for k, v in request.headers.items()})

    app = target_app()
    app.router.add_get("/sse", sse)
    app.router.add_get("/headers", headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Target("127.0.0.1", port), first_seen
    await runner.cleanup()


async def test_http_websocket_and_sse_through_nginx(
    make_stack: StackFactory,  # noqa: F811
    nginx_front: FrontFactory,  # noqa: F811
    streaming_target: tuple[Target, asyncio.Event],
) -> None:
    service, first_seen = streaming_target
    # The relay trusts nginx's X-Forwarded-* (it runs on loopback), as docs/deploy.md says.
    stack = await make_stack(client_id=None, trusted_proxies=parse_networks(["127.0.0.1"]))
    await stack.start_client("web", http_target=service)
    front = await nginx_front(stack.relay.public_port)
    connector = aiohttp.TCPConnector(ssl=front.ssl_context())
    timeout = aiohttp.ClientTimeout(total=units(20))
    # unsafe: keep cookies of an IP-address host, as a browser does (the front is 127.0.0.1).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        front.base, connector=connector, timeout=timeout, cookie_jar=jar
    ) as http:
        # Plain HTTP, several requests (nginx reuses its upstream connections).
        for n in range(3):
            async with http.post(f"/echo/{n}?token=web", data=f"body {n}") as response:
                assert response.status == 200, await response.text()
                echoed = await response.json()
            assert echoed["path"] == f"/echo/{n}" and echoed["body"] == f"body {n}"
        # The service learns who called and how.
        async with http.get("/headers?token=web") as response:
            seen = await response.json()
        assert seen["X-Forwarded-Proto"] == "https"
        assert seen["X-Forwarded-For"].split(",")[0].strip() == "127.0.0.1"
        # nginx's own address (the relay's caller) is appended after the browser's.
        assert [part.strip() for part in seen["X-Forwarded-For"].split(",")] == [
            "127.0.0.1",
            "127.0.0.1",
        ]

        # The token from the query was kept in a cookie: later requests need no token.
        async with http.get("/echo/again") as response:
            assert response.status == 200 and (await response.json())["path"] == "/echo/again"

        # A WebSocket through nginx's upgrade.
        async with http.ws_connect("/ws?token=web") as ws:
            for text in ("hello", "through nginx"):
                await ws.send_str(text)
                message = await ws.receive(timeout=units(5))
                assert message.type is WSMsgType.TEXT and message.data == f"echo: {text}"
            await ws.send_bytes(b"\x00\x01" * 50_000)
            message = await ws.receive(timeout=units(5))
            assert message.type is WSMsgType.BINARY and message.data == b"\x00\x01" * 50_000

        # SSE: the first event arrives while the stream is still open.
        async with http.get("/sse?token=web") as response:
            assert response.status == 200
            events = sse_events(response)
            first = await asyncio.wait_for(anext(events), units(5))
            assert first.data == {"n": 1}
            first_seen.set()
            rest = [item.data async for item in events]
        assert rest == [{"n": 2}]

    # Plain http:// on nginx's port 80 is sent to https.
    async with aiohttp.ClientSession(timeout=timeout) as plain:
        url = f"http://127.0.0.1:{front.http_port}/anything?token=web"
        async with plain.get(url, allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"].startswith("https://")


async def test_command_mode_api_through_nginx(
    make_stack: StackFactory,  # noqa: F811
    nginx_front: FrontFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    async with CommandServer(fake_config(tmp_path)) as command:
        stack = await make_stack(client_id=None)
        await stack.start_client("agentbox", http_target=Target(command.host, command.port))
        front = await nginx_front(stack.relay.public_port)
        connector = aiohttp.TCPConnector(ssl=front.ssl_context())
        timeout = aiohttp.ClientTimeout(total=units(30))
        async with aiohttp.ClientSession(front.base, connector=connector, timeout=timeout) as http:
            body = {"executor": "claude", "prompt": "events=3", "projectPath": str(project)}
            async with http.post("/api/sessions?token=agentbox", json=body) as response:
                created = await response.json()
                assert response.status == 201, created
            session_id = created["session_id"]
            texts = []
            async with http.get(f"/api/sessions/{session_id}/events?token=agentbox") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                async for item in sse_events(response):
                    if item.event == "end":
                        final = item.data
                        break
                    if item.data.get("kind") == "text":
                        texts.append(item.data["text"])
            assert final["status"] == "completed", final
            assert texts[:3] == ["piece 0", "piece 1", "piece 2"], texts
            async with http.get(f"/api/sessions/{session_id}?token=agentbox") as response:
                state = await response.json()
            assert state["status"] == "completed" and state["last_seq"] == final["last_seq"]
