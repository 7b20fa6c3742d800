"""Command mode's MCP face: IDEs and other agents drive the agents through Model Context Protocol.

``arpc --command-mode --enable-mcp --mcp-port 9021`` serves an MCP server (the official SDK,
Streamable HTTP) on ``http://127.0.0.1:9021/mcp``, and the same server through the relay at
``/mcp`` of the command app (``http://relay:17003/mcp?token=<id>``). Both need the client's
token, as the command API does (``?token=``, an ``X-ARP-Token`` header or the cookie).
Its tools and resources are thin adapters over the command server's `SessionManager` and
`HistoryReaders` (docs/mcp.md lists them). arpc wires it in two lines::

    add_mcp_arguments(parser)                      # --enable-mcp, --mcp-port
    async with CommandServer(config) as server:
        service = mcp_service(args, server)        # None without --enable-mcp
        if service is not None:
            await stack.enter_async_context(service)

The parts: `limits` (bounds and deadlines), `tools` (the adapters, an `MCPServer`), `service`
(`McpService`: the loopback server), `route` (``/mcp`` on the command app, forwarding to it).
This module and `route` import neither the SDK nor uvicorn, so command mode without MCP does
not pay for loading them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from arp import argtypes
from arp.config import McpLimits

if TYPE_CHECKING:
    from arp.command.mcp.service import McpService
    from arp.command.server import CommandServer

log = logging.getLogger(__name__)

DEFAULT_MCP_PORT: Final = 9021


def add_mcp_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the MCP flags to arpc's parser (a group of their own)."""
    group = parser.add_argument_group("MCP (with --command-mode)")
    group.add_argument(
        "--enable-mcp",
        action="store_true",
        help="also serve an MCP server (Streamable HTTP) on 127.0.0.1:--mcp-port and at /mcp "
        "through the relay with this client's token",
    )
    group.add_argument(
        "--mcp-port",
        type=argtypes.port,
        default=DEFAULT_MCP_PORT,
        help="the MCP server's loopback port (default %(default)s; 0: any free port)",
    )


def mcp_service(
    args: argparse.Namespace, server: CommandServer, *, limits: McpLimits | None = None
) -> contextlib.AbstractAsyncContextManager[McpService] | None:
    """The MCP server over `server`'s session manager and history readers; None without
    ``--enable-mcp``. Enter it once `server` is started: it attaches to its ``/mcp`` route."""
    if not getattr(args, "enable_mcp", False):
        return None
    return _serve_over(server, args.mcp_port, limits or McpLimits())


@contextlib.asynccontextmanager
async def _serve_over(
    server: CommandServer, port: int, limits: McpLimits
) -> AsyncIterator[McpService]:
    from arp.command.mcp.route import MCP_GATE_KEY
    from arp.command.mcp.service import LOOPBACK, McpService

    app = server.app
    if app is None:
        raise RuntimeError("start the command server before its MCP service")
    # The very readers the HTTP API uses (the command context's), so both share one cache.
    history = server.context.history
    gate = app.get(MCP_GATE_KEY)
    if gate is None:
        log.warning("the command app has no /mcp route: MCP is served on loopback only")
    service = McpService(
        server.manager,
        history,
        host=LOOPBACK,
        port=port,
        limits=limits,
        gate=gate,
        token=server.config.token,
        other_tokens=server.config.other_tokens,
    )
    async with service:
        yield service


__all__ = ["DEFAULT_MCP_PORT", "McpLimits", "add_mcp_arguments", "mcp_service"]
