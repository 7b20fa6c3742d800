"""Helpers for the per-request routing tests: one service per client, and a raw HTTP reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from arp.client.config import Target
from tests.conftest import units
from tests.relay.conftest import Stack

NAMES = ("alpha", "bravo", "charlie")


@dataclass
class Service:
    """A client's local service: answers who it is and logs every request it saw."""

    name: str
    log: list[dict[str, Any]] = field(default_factory=list)
    target: Target | None = None

    def app(self) -> web.Application:
        async def any_request(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            seen = {
                "client": self.name,
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode("latin-1"),
            }
            self.log.append(seen)
            return web.json_response(seen)

        async def ws(request: web.Request) -> web.WebSocketResponse:
            self.log.append(
                {
                    "client": self.name,
                    "path": "/ws",
                    "query": request.query_string,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                }
            )
            socket = web.WebSocketResponse()
            await socket.prepare(request)
            async for message in socket:
                if message.type is WSMsgType.TEXT:
                    await socket.send_str(f"{self.name}: {message.data}")
            return socket

        app = web.Application()
        app.router.add_get("/ws", ws)
        app.router.add_route("*", "/{tail:.*}", any_request)
        return app

    def foreign_tokens(self) -> list[str]:
        """Every token-bearing request this service saw that names another client."""
        found = []
        for seen in self.log:
            text = json.dumps([seen.get("query"), seen.get("headers")]).lower()
            found += [name for name in NAMES if name != self.name and name in text]
        return found


@asynccontextmanager
async def services(stack: Stack, **client_changes: Any) -> AsyncIterator[dict[str, Service]]:
    """One service and one registered client per name in NAMES, on `stack`'s relay."""
    runners = []
    found: dict[str, Service] = {}
    try:
        for name in NAMES:
            service = Service(name)
            runner = web.AppRunner(service.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            service.target = Target("127.0.0.1", port)
            await stack.start_client(name, http_target=service.target, **client_changes)
            found[name] = service
        yield found
    finally:
        for client in stack.clients:
            await client.close()
        stack.clients.clear()
        for runner in runners:
            await runner.cleanup()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response (Content-Length, chunked or up to the close)."""
    async with asyncio.timeout(units(10)):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if status == 101:
            return Response(status, headers, b"")
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if not size:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        else:
            body = await reader.read(-1)
        return Response(status, headers, body)


@asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
