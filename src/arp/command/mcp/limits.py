"""Bounds and deadlines of the MCP server (config.Timeouts/Limits have no MCP part)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class McpLimits:
    """Every bound and deadline the MCP face uses, in one place."""

    max_mcp_sessions: int = 64
    """MCP client sessions open at once (Streamable HTTP); beyond, a new one gets 503."""
    session_idle_timeout: float = 30 * 60.0
    """An MCP client session with no request in flight for this long is closed."""
    max_request_body: int = 4 * 1024 * 1024
    """The largest JSON-RPC body on the loopback port (413 beyond; the prompt limit still holds)."""
    default_events: int = 200
    """Events `get_session` returns when the caller names no limit."""
    max_events: int = 1000
    """The most events one `get_session` call may ask for."""
    max_reply_chars: int = 256 * 1024
    """`get_session` stops adding events past this much JSON (at least one is always sent);
    ``has_more`` then says to ask again from ``next_after_seq``."""
    default_list: int = 50
    max_list: int = 1000
    """Page sizes of `list_sessions` and `list_projects`."""
    default_wait: float = 30.0
    max_wait: float = 600.0
    """`wait_session`'s timeout: the default, and the most a caller may ask for."""
    start_timeout: float = 10.0
    """How long starting the server may take before it counts as failed."""
    shutdown_timeout: float = 5.0
    """How long closing waits for open requests and streams before cancelling them."""
    forward_connect: float = 10.0
    """Through the relay: connecting to the loopback MCP port (pool wait included)."""
    forward_idle: float = 120.0
    """Through the relay: the longest silence of the loopback side before the forwarded
    response is ended (the SDK's SSE streams ping every 15 s, so only a stuck one is cut)."""
    max_forwarded: int = 100
    """Through the relay: requests and streams forwarded to the loopback port at once."""
