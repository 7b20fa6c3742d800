"""`McpService`: the MCP server on a loopback port (Streamable HTTP), lent to ``/mcp`` too.

    async with McpService(manager, history, port=9021, gate=gate) as service:
        service.url      # http://127.0.0.1:9021/mcp (port 0: a free one, read back)

It builds the SDK's `MCPServer` over the given session manager and history readers
(`arp.command.mcp.tools`), serves its Starlette app with uvicorn on a socket bound here (so a
port in use fails `start()` at once), and attaches the port to the command app's `McpGate`, so
``/mcp`` through the relay reaches the same server (`arp.command.mcp.route`).

One task owns what the SDK runs in anyio task groups (the Streamable HTTP session manager and
uvicorn), because a task group must be left by the task that entered it. Closing: detach from
the gate (``/mcp`` answers 404), stop uvicorn accepting, end every MCP session (their SSE
streams end, and the streams forwarded through the relay with them), wait for uvicorn within
``shutdown_timeout`` and cancel what is left, then cut any forwarding still going and close
the forwarding client. arpc owns the process's signals, so uvicorn
installs no handlers; uvicorn configures no logging either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from asyncio import FIRST_COMPLETED
from collections.abc import Iterator

import aiohttp
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionManager
from arp.command.mcp.route import MCP_PATH, McpGate, Upstream
from arp.command.mcp.tools import build_mcp_server
from arp.command.middleware import token_matches
from arp.config import McpLimits
from arp.errors import ConfigError, error_body
from arp.lifecycle import Service

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside arpc's loop: the process's signals stay arpc's; says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class _TokenGate:
    """ASGI middleware: the loopback port answers only requests that carry the command API's
    token, as the API itself does (any local process could otherwise run agents through it).
    ``/mcp`` through the command app forwards with the token added, having checked it."""

    def __init__(self, app: ASGIApp, expected: str, others: tuple[str, ...] = ()) -> None:
        self.app = app
        self.expected = expected
        self.others = others

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            carried = (
                request.query_params.get("token", ""),
                request.headers.get("x-arp-token", ""),
                request.cookies.get("arp_token", ""),
            )
            host = request.headers.get("host", "")
            if not token_matches(carried, host, self.expected, self.others):
                message = (
                    "this MCP server needs the client's token: add ?token=<client_id> to its "
                    "URL or send an X-ARP-Token header"
                )
                response = JSONResponse(error_body(401, message), status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class McpService(Service):
    """Serves MCP over `manager` and `history` on ``host:port``; see the module docstring."""

    def __init__(
        self,
        manager: SessionManager,
        history: HistoryReaders,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        limits: McpLimits | None = None,
        gate: McpGate | None = None,
        token: str | None = None,
        other_tokens: tuple[str, ...] = (),
    ) -> None:
        self.manager = manager
        self.token = token
        self.other_tokens = other_tokens
        """Further accepted tokens (arpc's access tokens after the first)."""
        """The command API's token, required on the loopback port too (None: none needed)."""
        self.history = history
        self.host = host
        self.limits = limits or McpLimits()
        self.gate = gate
        self.mcp: MCPServer | None = None
        self._requested_port = port
        self._port: int | None = None
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._http: aiohttp.ClientSession | None = None
        self._owner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the MCP server is not started")
        return self._port

    @property
    def url(self) -> str:
        """The Streamable HTTP endpoint on loopback."""
        return f"http://{self.host}:{self.port}{MCP_PATH}"

    async def start(self) -> None:
        if self._owner is not None:
            return
        self.mcp = build_mcp_server(self.manager, self.history, self.limits)
        app = self.mcp.streamable_http_app(
            streamable_http_path=MCP_PATH,
            host=self.host,  # loopback: the SDK refuses other Host/Origin headers
            max_request_body_size=self.limits.max_request_body,
            session_idle_timeout=self.limits.session_idle_timeout,
            max_sessions=self.limits.max_mcp_sessions,
        )
        if self.token is not None:
            app.add_middleware(_TokenGate, expected=self.token, others=self.other_tokens)
        sock = self._bind()
        self._port = int(sock.getsockname()[1])
        self._owner = asyncio.ensure_future(self._serve(self.mcp, app, sock))
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait(
                {ready, self._owner},
                timeout=self.limits.start_timeout,
                return_when=FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if not self._ready.is_set():
            await self.close()
            raise ConfigError(f"the MCP server on {self.host}:{self._port} did not start")
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.limits.max_forwarded),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.limits.forward_connect,
                sock_read=self.limits.forward_idle,
            ),
            auto_decompress=False,
        )
        if self.gate is not None:
            self.gate.attach(Upstream(self.url, self._http, self.limits, self.token))
        log.info("MCP server on %s", self.url)

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot serve MCP on {self.host}:{self._requested_port}: {exc.strerror}; "
                "choose another --mcp-port"
            ) from exc
        return sock

    async def _serve(self, mcp: MCPServer, app: Starlette, sock: socket.socket) -> None:
        """The owner task: the SDK's session manager and uvicorn live and end here."""
        config = uvicorn.Config(
            app,
            lifespan="off",  # the session manager runs here, not in a lifespan
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            loop="none",
            timeout_graceful_shutdown=int(max(1, self.limits.shutdown_timeout)),
        )
        server = self._uvicorn = _EmbeddedUvicorn(config)
        serving: asyncio.Task[None] | None = None
        try:
            async with mcp.session_manager.run():
                serving = asyncio.ensure_future(server.serve(sockets=[sock]))
                stop = asyncio.ensure_future(self._stop.wait())
                listening = asyncio.ensure_future(server.listening.wait())
                try:
                    await asyncio.wait({stop, serving, listening}, return_when=FIRST_COMPLETED)
                    if server.started:
                        self._ready.set()
                        await asyncio.wait({stop, serving}, return_when=FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    listening.cancel()
                    server.should_exit = True
                # Leaving run() ends every MCP session, so their open streams end.
            if serving is not None:
                done, _ = await asyncio.wait({serving}, timeout=self.limits.shutdown_timeout)
                if not done:
                    server.force_exit = True
                    serving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await serving
                elif serving.exception() is not None:
                    log.error("the MCP server failed", exc_info=serving.exception())
        finally:
            sock.close()

    async def _shutdown(self) -> None:
        """Runs once, on the first `close()`; see the module docstring for the order."""
        if self.gate is not None:
            self.gate.detach()  # new requests through the relay: 404
        self._stop.set()
        owner = self._owner
        if owner is not None:
            done, _ = await asyncio.wait({owner}, timeout=2 * self.limits.shutdown_timeout + 1)
            if not done:
                owner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await owner
            elif not owner.cancelled() and owner.exception() is not None:
                log.error("the MCP server did not stop cleanly", exc_info=owner.exception())
        # The MCP server has ended its streams; the forwarded ones end with them. Whatever
        # still forwards is cut before its client goes.
        if self.gate is not None and self.gate.forwarding:
            pending = set(self.gate.forwarding)
            _, late = await asyncio.wait(pending, timeout=self.limits.shutdown_timeout / 2)
            for task in late:
                task.cancel()
        if self._http is not None:
            await self._http.close()
