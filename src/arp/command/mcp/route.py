"""``/mcp`` on the command app: the MCP server through the relay, with the client's token.

The relay reaches command mode only through the command app's port, so the app answers
``/mcp`` by forwarding each request to the MCP server on its loopback port, streaming the
answer back as it comes: Streamable HTTP passes through unchanged (POST answered with JSON or
an SSE stream, the GET SSE stream, DELETE, the ``Mcp-Session-Id`` and ``MCP-Protocol-Version``
headers, status codes). What the relay needed and the MCP server must not see is left out:
the ``token`` query parameter, the ``arp_token`` cookie and the ``X-ARP-Token`` header, and
``Origin`` once checked here (a browser on another site gets 403, on every method).

A caller that goes away mid-stream is noticed at the next write (the SDK's SSE streams ping
every 15 s); the forwarded request then ends, which is how the MCP server learns of it.

The route exists from the start (aiohttp freezes its routes when the app starts serving);
until `McpService` attaches its loopback port to the app's `McpGate` it answers 404 saying
how to enable MCP. This module needs neither the MCP SDK nor a running MCP server.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from arp.command.middleware import cross_site_origin
from arp.command.web import STREAMS_KEY, error_response
from arp.config import McpLimits

log = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED: Final = _HOP_BY_HOP | {
    "host",
    "content-length",
    "origin",
    "cookie",
    "x-arp-token",
}
_NOT_RETURNED: Final = _HOP_BY_HOP | {"set-cookie"}
_RELAY_QUERY: Final = frozenset({"token"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the MCP server listens, and the HTTP client that reaches it."""

    url: str
    http: aiohttp.ClientSession
    limits: McpLimits
    token: str | None = None
    """The token the MCP server requires (the app checked the caller's before forwarding)."""


class McpGate:
    """The app's link to the running MCP server (None while MCP is not enabled), and the
    forwarding tasks under way, which the server's closing waits for, then cancels."""

    def __init__(self) -> None:
        self.upstream: Upstream | None = None
        self.forwarding: set[asyncio.Task[Any]] = set()

    def attach(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def detach(self) -> None:
        self.upstream = None


MCP_GATE_KEY: Final = web.AppKey("arp_mcp_gate", McpGate)


def setup_mcp_route(app: web.Application) -> None:
    """Adds ``/mcp`` (every method) and the gate `McpService` attaches to."""
    app[MCP_GATE_KEY] = McpGate()
    app.router.add_route("*", MCP_PATH, forward_mcp)


async def forward_mcp(request: web.Request) -> web.StreamResponse:
    """Forwards one request to the loopback MCP server and streams its answer back."""
    upstream = request.app[MCP_GATE_KEY].upstream
    if upstream is None:
        return error_response(
            404, "MCP is not enabled on this arpc: start it with --command-mode --enable-mcp"
        )
    origin = cross_site_origin(request)
    if origin is not None:
        return error_response(403, f"cross-site request refused: Origin {origin} is not this host")
    body = await request.read()  # bounded by the app's client_max_size (413 beyond)
    headers = CIMultiDict(
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in _NOT_FORWARDED
    )
    if upstream.token is not None:
        headers["X-ARP-Token"] = upstream.token
    query = [(name, value) for name, value in request.query.items() if name not in _RELAY_QUERY]
    task = asyncio.current_task()
    owners = (request.app[STREAMS_KEY], request.app[MCP_GATE_KEY].forwarding)
    if task is not None:
        for owner in owners:  # so closing either server can end a long stream
            owner.add(task)
    try:
        return await _exchange(request, upstream, headers, query, body)
    finally:
        if task is not None:
            for owner in owners:
                owner.discard(task)


async def _exchange(
    request: web.Request,
    upstream: Upstream,
    headers: CIMultiDict[str],
    query: list[tuple[str, str]],
    body: bytes,
) -> web.StreamResponse:
    response: web.StreamResponse | None = None
    try:
        async with upstream.http.request(
            request.method,
            upstream.url,
            params=query,
            data=body if body else None,
            headers=headers,
            allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in answer.headers.items():
                if name.lower() not in _NOT_RETURNED:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
        if response is not None:
            # Mid-stream: the caller went away or the MCP server did. Ending the request here
            # closes the other side too, which is how Streamable HTTP learns of it.
            log.debug("MCP stream through the relay ended: %r", exc)
            return response
        if isinstance(exc, TimeoutError):
            return error_response(504, "the MCP server did not answer in time")
        return error_response(502, f"the MCP server on this arpc is not reachable: {exc}")
