"""What command mode's HTTP handlers share: the `CommandContext`, the app keys, JSON replies.

Every route module (sessions, history, OpenAPI, MCP forwarding) imports from here and from
nothing else in command mode's HTTP layer, so `arp.command.app` can import them all to assemble
the application without an import circle.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionManager
from arp.command.config import CommandConfig
from arp.web_errors import arp_error_response, error_response


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What every face of command mode shares: HTTP handlers, MCP and the remote protocol."""

    config: CommandConfig
    sessions: SessionManager
    history: HistoryReaders = field(default_factory=HistoryReaders)
    """The agents' own history (default: the usual folders under the user's home); one instance
    for every face, so they share one cache of parsed sessions."""


CONTEXT_KEY: Final = web.AppKey("arp_command_context", CommandContext)
STREAMS_KEY: Final[web.AppKey[set[asyncio.Task[Any]]]] = web.AppKey("arp_command_streams")
"""The tasks of open SSE/WebSocket handlers, cancelled when the server closes."""


def context(request: web.Request) -> CommandContext:
    return request.app[CONTEXT_KEY]


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    """JSON with text in any script left unescaped (titles, prompts)."""
    return web.json_response(
        data, status=status, dumps=lambda obj: json.dumps(obj, ensure_ascii=False), **kwargs
    )


__all__ = [
    "CONTEXT_KEY",
    "STREAMS_KEY",
    "CommandContext",
    "arp_error_response",
    "context",
    "error_response",
    "json_response",
]
