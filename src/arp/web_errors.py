"""Errors as aiohttp answers them: the one JSON shape of `arp.errors.error_body`, for every face.

Command mode's HTTP API (with its ``/mcp`` route) and the gateway's control API both answer an
`ArpError` with its status, code and message, and aiohttp's own HTTP errors (an unknown path, a
method not allowed, a body too large) in the same shape, from this one module.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from arp.errors import ArpError, error_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, code: str | None = None) -> web.Response:
    """An error in the package's one JSON shape (text in any script left unescaped)."""
    return web.json_response(
        error_body(status, message, code),
        status=status,
        dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
    )


def arp_error_response(error: ArpError) -> web.Response:
    """`error` answered with its own status, code and message."""
    return error_response(error.status, error.message, error.code)


def http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx, said in words a caller can act on."""
    message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    if exc.status == 405:
        message = f"{request.method} is not allowed on {request.path}"
    elif exc.status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 413:
        message = "request body too large"
    return error_response(exc.status, message or exc.reason)


async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`handler`'s response; every error it raises as JSON with the status it carries."""
    try:
        return await handler(request)
    except ArpError as exc:
        return arp_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(request, exc)


json_errors: Final = web.middleware(answer_errors)
"""`answer_errors` as a middleware (a middleware with more to do calls `answer_errors`)."""

__all__ = [
    "answer_errors",
    "arp_error_response",
    "error_response",
    "http_error_response",
    "json_errors",
]
