"""Command mode's HTTP middlewares: the client's token and same-origin only.

Errors become JSON in `arp.web_errors.json_errors`, which the gateway uses too.

Cross-site use from a browser is refused: a state-changing request or a WebSocket whose
``Origin`` names another host than ``Host`` gets a 403. A request body is
``application/json`` (a page on another site cannot send one without a CORS preflight, which this
API never grants) or, for prompts with attachments, ``multipart/form-data``, which a cross-site
form could send: the ``Origin`` check refuses it, and the relay's token cookie is
``SameSite=Lax``, so such a post would not carry it either.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from arp.command.web import context, error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(
    carried: Iterable[str], host: str, expected: str, others: Iterable[str] = ()
) -> bool:
    """Whether one of the tokens `carried` (``?token=``, ``X-ARP-Token``, the ``arp_token``
    cookie) or the first label of `host` is `expected` (or one of `others`: arpc's further
    access tokens): the one check of command mode's token, whatever HTTP stack the request came
    through (the MCP port's is Starlette). Every comparison is constant-time."""
    accepted = [expected.encode(), *(t.encode() for t in others)]
    if any(
        token and hmac.compare_digest(token.encode(), want)
        for token in carried
        for want in accepted
    ):
        return True
    # Subdomain routing (<client_id>.<domain>): host names are case-insensitive.
    label, dot, _ = host.partition(".")
    return bool(dot) and hmac.compare_digest(label.lower().encode(), expected.lower().encode())


def _carries_token(request: web.Request, expected: str, others: tuple[str, ...] = ()) -> bool:
    """Whether the request carries the client's token in a form the relay routes by."""
    carried = (
        request.query.get("token", ""),
        request.headers.get("X-ARP-Token", ""),
        request.cookies.get("arp_token", ""),
    )
    return token_matches(carried, request.host, expected, others)


@web.middleware
async def token_required(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only requests that carry the client's token are served (when the config names one)."""
    config = context(request).config
    expected = config.token
    if expected is not None and not _carries_token(request, expected, config.other_tokens):
        return error_response(
            401,
            "this API needs the client's token: add ?token=<client_id> (or an X-ARP-Token header)",
        )
    return await handler(request)


def cross_site_origin(request: web.Request) -> str | None:
    """The request's ``Origin`` when it names another host than ``Host``; None otherwise."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    origin_host = urlsplit(origin).netloc.lower() if origin != "null" else "null"
    return None if origin_host == request.host.lower() else origin


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a browser's cross-site state change or WebSocket (see the module docstring)."""
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.method not in ("GET", "HEAD", "OPTIONS") or upgrade:
        origin = cross_site_origin(request)
        if origin is not None:
            return error_response(
                403, f"cross-site request refused: Origin {origin} is not this host"
            )
    return await handler(request)


__all__ = ["cross_site_origin", "same_origin", "token_required"]
