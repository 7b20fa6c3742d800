"""Command mode's HTTP application, assembled from its parts.

`create_app(ctx)` builds the aiohttp application from a `CommandContext` (the config, the
running `SessionManager` and the `HistoryReaders` every face shares)::

    async with CommandServer(config) as server:   # arp.command.server; binds 127.0.0.1
        ...                                       # splice tunnel connections to server.port

It answers JSON everywhere, errors included (``arp.errors.error_body``: the status and code of
the `arp.errors.ArpError` raised, and its message; `arp.web_errors`). The parts live in modules of
their own, none of which imports this one: the configuration (`arp.command.config`), what
handlers share (`arp.command.web`), the middlewares (`arp.command.middleware`: the client's
token, same-origin only), and the routes (sessions, history, OpenAPI, console, MCP).
"""

from __future__ import annotations

from aiohttp import web

from arp.command.api_changes import setup_changes_routes
from arp.command.api_history import setup_history_routes
from arp.command.api_sessions import setup_session_routes
from arp.command.console import setup_console_routes
from arp.command.mcp.route import setup_mcp_route
from arp.command.middleware import same_origin, token_required
from arp.command.openapi import setup_openapi_route
from arp.command.push import setup_push_routes
from arp.command.web import CONTEXT_KEY, STREAMS_KEY, CommandContext
from arp.web_errors import json_errors


def create_app(ctx: CommandContext) -> web.Application:
    """The command-mode application: sessions API, the agents' history, OpenAPI document."""
    # A prompt may be escaped up to six times its size in JSON (\uXXXX); the body limit leaves
    # room for that, so an oversize prompt gets the clear 413 of the prompt check.
    # Attachments sent as base64 in JSON take 4/3 of their bytes (AttachmentBounds.max_bytes).
    attachments = ctx.sessions.config.attachments.max_bytes * 4 // 3 + 64 * 1024
    app = web.Application(
        client_max_size=6 * ctx.config.max_prompt_bytes + 64 * 1024 + attachments,
        middlewares=[json_errors, token_required, same_origin],
    )
    app[CONTEXT_KEY] = ctx
    app[STREAMS_KEY] = set()
    setup_session_routes(app)
    setup_changes_routes(app)  # issue 16: what a session changed, its attachments
    setup_history_routes(app, ctx.history)
    setup_openapi_route(app)
    setup_console_routes(app)  # the web console at / and /console/ (issue 5; arp.command.console)
    setup_mcp_route(app)  # MCP through the relay at /mcp (issue 8; arp.command.mcp)
    setup_push_routes(app)  # Web Push for the console (issue 15; arp.command.push)
    return app


__all__ = ["create_app"]
