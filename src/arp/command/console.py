"""The web console: a phone-friendly page over the sessions and history APIs, in the package.

Served by command mode next to the API (so through the relay with the client's token)::

    GET /                      the console (index.html; revalidated on every load)
    GET /console/{name}        its assets (immutable for a year when asked for by ?v=<hash>)

Every asset lives in ``arp/command/static`` and nothing is fetched from another origin: the
Content-Security-Policy allows this origin only (no CDN, no external font, no inline script), so
the token the relay remembers in its cookie can never leave for another site. The page is plain
HTML, CSS and one JavaScript module: no build step.

`token_page()` is the small page where a person types a token (and a server address) when they
opened the relay without one; it is self-contained (its script and style are inlined and allowed
by hash, see `token_page_headers()`) because the relay serves it alone, reaching no client.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.resources
from dataclasses import dataclass
from typing import Final

from aiohttp import web

STATIC_PACKAGE: Final = "arp.command"
STATIC_FOLDER: Final = "static"
ASSET_PREFIX: Final = "/console/"

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"

CONSOLE_CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
"""Only this origin; the console never builds HTML from strings (Trusted Types enforce it)."""

SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
_SERVED: Final = ("console.css", "console.js", "icon.svg", "manifest.webmanifest")
"""The assets under /console/ (the index and the token page's parts are not served there)."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, type and content hash (the ETag and the ?v= version)."""

    name: str
    body: bytes
    content_type: str
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        suffix = name[name.rfind(".") :]
        version = hashlib.sha256(body).hexdigest()[:16]
        return cls(name, body, _TYPES.get(suffix, "application/octet-stream"), version)


def _read(name: str) -> bytes:
    return (importlib.resources.files(STATIC_PACKAGE) / STATIC_FOLDER / name).read_bytes()


@functools.cache
def assets() -> dict[str, Asset]:
    """The served assets by name, read from the package once."""
    return {name: Asset.of(name, _read(name)) for name in _SERVED}


@functools.cache
def index() -> Asset:
    """index.html with each ``{{name}}`` replaced by the asset's versioned URL."""
    text = _read("index.html").decode("utf-8")
    for name, asset in assets().items():
        text = text.replace("{{" + name + "}}", f"{ASSET_PREFIX}{name}?v={asset.version}")
    return Asset.of("index.html", text.encode("utf-8"))


def _respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "Content-Security-Policy": CONSOLE_CSP,
        **SECURITY_HEADERS,
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


async def serve_index(request: web.Request) -> web.Response:
    return _respond(request, index(), REVALIDATE)


async def serve_asset(request: web.Request) -> web.Response:
    asset = assets().get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    versioned = request.query.get("v") == asset.version
    return _respond(request, asset, IMMUTABLE if versioned else REVALIDATE)


def setup_console_routes(app: web.Application) -> None:
    """Serve the console at ``/`` and its assets under ``/console/``."""
    app.router.add_get("/", serve_index)
    app.router.add_get("/console", serve_index)
    app.router.add_get("/console/", serve_index)
    app.router.add_get(ASSET_PREFIX + "{name}", serve_asset)


# --- the token page (served by the relay for a request that names no client) -------------------


@dataclass(frozen=True, slots=True)
class _TokenParts:
    template: str
    script: str
    style: str
    csp: str


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@functools.cache
def _token_parts() -> _TokenParts:
    script = _read("token.js").decode("utf-8")
    style = _read("token.css").decode("utf-8")
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
    return _TokenParts(_read("token.html").decode("utf-8"), script, style, csp)


def token_page(message: str | None = None) -> bytes:
    """The token-entry page as UTF-8 HTML; ``message`` (plain text) is shown as an error.

    The relay serves it, with `token_page_headers()`, for a ``GET /`` that names no client, and
    may serve it with a message (status 404) for ``GET /?token=X`` when X is not registered.
    """
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


__all__ = [
    "CONSOLE_CSP",
    "setup_console_routes",
    "token_page",
    "token_page_headers",
]
