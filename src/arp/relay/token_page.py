"""The token page: what the relay answers a browser that opened it without naming a client.

It lives with the relay, which serves it alone (reaching no client), so a plain relay needs no
web framework. The page is self-contained: its script and style are inlined and allowed by hash
in its Content-Security-Policy. Its parts (token.html, token.js, token.css) are package data
shared with the console under ``arp/command/static`` and read by path, so reading them imports
nothing of command mode.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "command" / "static"
"""The console's assets, shared package data (the token page's parts are among them)."""

SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Headers every page ARP serves carries (the console's too)."""


def read_asset(name: str) -> bytes:
    """One file of the shared static assets."""
    return (STATIC_DIR / name).read_bytes()


@dataclass(frozen=True, slots=True)
class _TokenParts:
    template: str
    script: str
    style: str
    csp: str


def _csp_hash(text: str) -> str:
    import hashlib  # the page's first serving only: a relay that never serves it does without

    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@functools.cache
def _token_parts() -> _TokenParts:
    script = read_asset("token.js").decode("utf-8")
    style = read_asset("token.css").decode("utf-8")
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_csp_hash(script)}",
            f"style-src {_csp_hash(style)}",
            "img-src data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        )
    )
    return _TokenParts(read_asset("token.html").decode("utf-8"), script, style, csp)


def token_page(message: str | None = None) -> bytes:
    """The token-entry page as UTF-8 HTML; ``message`` (plain text) is shown as an error.

    The relay serves it, with `token_page_headers()`, for a ``GET /`` that names no client, and
    may serve it with a message (status 404) for ``GET /?token=X`` when X is not registered.
    """
    import html  # as hashlib above

    parts = _token_parts()
    text = (
        parts.template.replace("{{style}}", parts.style)
        .replace("{{script}}", parts.script)
        .replace("{{message}}", html.escape(message or ""))
        .replace("{{message_hidden}}", "" if message else " hidden")
    )
    return text.encode("utf-8")


def token_page_headers() -> dict[str, str]:
    """The headers to send with `token_page()` (type, no caching, its hash-based CSP)."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Content-Security-Policy": _token_parts().csp,
        **SECURITY_HEADERS,
    }
