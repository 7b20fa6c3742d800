"""Command mode's HTTP application: its configuration, and the aiohttp app over the agents.

arpc adds the flags in one line and builds the config from them::

    add_command_arguments(parser)            # --data-dir, --command-path, --codex-path, ...
    config = CommandConfig.from_args(args)
    async with CommandServer(config) as server:   # arp.command.server; binds 127.0.0.1
        ...                                       # splice tunnel connections to server.port

`create_app(ctx)` builds the application from a `CommandContext` (the config and the running
`SessionManager`); it answers JSON everywhere, errors included (``{"error": ..., "status": ...}``
with the status of the `arp.errors.ArpError` raised). Cross-site use from a browser is refused:
a state-changing request or a WebSocket whose ``Origin`` names another host than ``Host`` gets a
403, and a request body must be sent as ``application/json`` (so a page on another site cannot
send one without a CORS preflight, which this API never grants).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import platformdirs
from aiohttp import web

from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionConfig, SessionManager
from arp.argtypes import port, positive_int
from arp.errors import ArpError

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS: Final = 8
DEFAULT_MAX_PROMPT_BYTES: Final = 256 * 1024


def default_data_dir() -> Path:
    """arpc's data folder (sessions live in its ``sessions/``)."""
    return Path(platformdirs.user_data_dir("arpc", appauthor=False))


@dataclass(frozen=True, slots=True)
class CommandConfig:
    """What arpc's command-mode flags say."""

    data_dir: Path | None = None
    """Where sessions are stored; None keeps them in memory only (tests)."""
    command_path: str | None = None
    """The claude binary (``--command-path``, as in the original)."""
    codex_path: str | None = None
    gemini_path: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    allowed_root: Path | None = None
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    command_port: int = 0
    token: str | None = None
    """When set (arpc sets its client id), every request must carry it: as the relay routes,
    in ``?token=``, ``X-ARP-Token``, the ``arp_token`` cookie or the Host's first label. The
    API then answers no other local user and no DNS-rebinding page (401 otherwise)."""
    """The loopback port of the API (0: any free port)."""
    shutdown_timeout: float = 5.0
    """How long closing the server waits for open requests before cancelling them."""
    session_overrides: dict[str, Any] = field(default_factory=dict)
    """Further `SessionConfig` fields (tests shorten the cancel grace periods with it)."""

    def binaries(self) -> dict[str, str | None]:
        return {"claude": self.command_path, "codex": self.codex_path, "gemini": self.gemini_path}

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            data_dir=self.data_dir,
            binaries=self.binaries(),
            max_sessions=self.max_sessions,
            allowed_root=self.allowed_root,
            max_prompt_bytes=self.max_prompt_bytes,
            **self.session_overrides,
        )

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> CommandConfig:
        """From the namespace `add_command_arguments` filled."""
        data_dir = ns.data_dir if ns.data_dir is not None else default_data_dir()
        return cls(
            data_dir=Path(data_dir).expanduser(),
            command_path=ns.command_path,
            codex_path=ns.codex_path,
            gemini_path=ns.gemini_path,
            max_sessions=ns.max_sessions,
            allowed_root=Path(ns.allowed_root).expanduser() if ns.allowed_root else None,
            max_prompt_bytes=ns.max_prompt_bytes,
            command_port=ns.command_port,
        )


def _folder(text: str) -> str:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return str(path)


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds command mode's flags to arpc's parser (a group of its own)."""
    group = parser.add_argument_group("command mode")
    group.add_argument(
        "--data-dir",
        help="where sessions and their output are kept (default: the platform's data "
        f"folder, {default_data_dir()})",
    )
    group.add_argument(
        "--command-path",
        help="the claude binary (default: claude on PATH, ~/.claude/local/claude, npm's bin)",
    )
    group.add_argument("--codex-path", help="the codex binary (default: codex on PATH, npm's bin)")
    group.add_argument(
        "--gemini-path", help="the gemini binary (default: gemini on PATH, npm's bin)"
    )
    group.add_argument(
        "--max-sessions",
        type=positive_int,
        default=DEFAULT_MAX_SESSIONS,
        help="agent runs at once; more get 429 (default %(default)s)",
    )
    group.add_argument(
        "--allowed-root",
        type=_folder,
        help="project paths must lie under this folder (403 otherwise; default: any)",
    )
    group.add_argument(
        "--max-prompt-bytes",
        type=positive_int,
        default=DEFAULT_MAX_PROMPT_BYTES,
        help="the largest prompt, in bytes; larger gets 413 (default %(default)s)",
    )
    group.add_argument(
        "--command-port",
        type=port,
        default=0,
        help="also serve the API on this loopback port for local use (default: any free port)",
    )


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What the application's handlers share."""

    config: CommandConfig
    sessions: SessionManager
    history: HistoryReaders | None = None
    """The agents' own history (None: the default folders under the user's home)."""


CONTEXT_KEY: Final = web.AppKey("arp_command_context", CommandContext)
STREAMS_KEY: Final[web.AppKey[set[asyncio.Task[Any]]]] = web.AppKey("arp_command_streams")
"""The tasks of open SSE/WebSocket handlers, cancelled when the server closes."""


def create_app(ctx: CommandContext) -> web.Application:
    """The command-mode application: sessions API, the agents' history, OpenAPI document."""
    from arp.command.api_history import setup_history_routes
    from arp.command.api_sessions import setup_session_routes
    from arp.command.console import setup_console_routes
    from arp.command.mcp.route import setup_mcp_route
    from arp.command.openapi import setup_openapi_route

    # A prompt may be escaped up to six times its size in JSON (\uXXXX); the body limit leaves
    # room for that, so an oversize prompt gets the clear 413 of the prompt check.
    app = web.Application(
        client_max_size=6 * ctx.config.max_prompt_bytes + 64 * 1024,
        middlewares=[json_errors, token_required, same_origin],
    )
    app[CONTEXT_KEY] = ctx
    app[STREAMS_KEY] = set()
    setup_session_routes(app)
    setup_history_routes(app, ctx.history if ctx.history is not None else HistoryReaders())
    setup_openapi_route(app)
    setup_console_routes(app)  # the web console at / and /console/ (issue 5; arp.command.console)
    setup_mcp_route(app)  # MCP through the relay at /mcp (issue 8; arp.command.mcp)
    return app


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda obj: json.dumps(obj, ensure_ascii=False), **kwargs
    )


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes JSON with the status its exception carries."""
    try:
        return await handler(request)
    except ArpError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 413:
            message = "request body too large"
        return error_response(exc.status, message or exc.reason)


def _carries_token(request: web.Request, expected: str) -> bool:
    """Whether the request carries the client's token in a form the relay routes by."""
    return token_matches(
        (
            request.query.get("token", ""),
            request.headers.get("X-ARP-Token", ""),
            request.cookies.get("arp_token", ""),
        ),
        request.host,
        expected,
    )


def token_matches(carried: Iterable[str], host: str, expected: str) -> bool:
    """Whether one of the tokens `carried` (``?token=``, ``X-ARP-Token``, the ``arp_token``
    cookie) or the first label of `host` is `expected`: the one check of command mode's token,
    whatever HTTP stack the request came through (the MCP port's is Starlette)."""
    if any(token and hmac.compare_digest(token.encode(), expected.encode()) for token in carried):
        return True
    # Subdomain routing (<client_id>.<domain>): host names are case-insensitive.
    label, dot, _ = host.partition(".")
    return bool(dot) and hmac.compare_digest(label.lower().encode(), expected.lower().encode())


@web.middleware
async def token_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only requests that carry the client's token are served (when the config names one)."""
    expected = context(request).config.token
    if expected is not None and not _carries_token(request, expected):
        return error_response(
            401,
            "this API needs the client's token: add ?token=<client_id> (or an X-ARP-Token header)",
        )
    return await handler(request)


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a browser's cross-site state change or WebSocket (see the module docstring)."""
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.method not in ("GET", "HEAD", "OPTIONS") or upgrade:
        origin = request.headers.get("Origin")
        if origin:
            origin_host = urlsplit(origin).netloc.lower() if origin != "null" else "null"
            if origin_host != request.host.lower():
                return error_response(
                    403, f"cross-site request refused: Origin {origin} is not this host"
                )
    return await handler(request)


def context(request: web.Request) -> CommandContext:
    return request.app[CONTEXT_KEY]


__all__ = [
    "CONTEXT_KEY",
    "CommandConfig",
    "CommandContext",
    "add_command_arguments",
    "context",
    "create_app",
    "default_data_dir",
    "error_response",
    "json_response",
]
