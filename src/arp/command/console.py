"""The web console: a phone-friendly page over the sessions and history APIs, in the package.

Served by command mode next to the API (so through the relay with the client's token)::

    GET /                      the console (index.html; revalidated on every load)
    GET /console/{name}        its assets (immutable for a year when asked for by ?v=<hash>)
    GET /sw.js                 the service worker that shows Web Push notes (`arp.command.push`);
                               at the root, so its scope covers the whole console

Every asset lives in ``arp/command/static`` and nothing is fetched from another origin: the
Content-Security-Policy allows this origin only (no CDN, no external font, no inline script), so
the token the relay remembers in its cookie can never leave for another site. The page is plain
HTML, CSS and two JavaScript modules (``console.js`` imports ``cockpit.js``): no build step.

The token page (where a person types a token when they opened the relay without one) is the
relay's: `arp.relay.token_page`, re-exported here; it reads its parts from the same folder.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from arp.relay.token_page import (
    SECURITY_HEADERS,
    read_asset,
    token_page,
    token_page_headers,
)

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
        "worker-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types arp-sw",
    )
)
"""Only this origin; the console never builds HTML from strings (Trusted Types enforce it: the
one policy, ``arp-sw``, passes the service worker's URL and nothing else; static/push.js)."""

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
_SERVED: Final = (
    "console.css",
    "console.js",
    "cockpit.js",
    "push.js",
    "icon.svg",
    "manifest.webmanifest",
)
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


@functools.cache
def assets() -> dict[str, Asset]:
    """The served assets by name, read from the package once."""
    return {name: Asset.of(name, read_asset(name)) for name in _SERVED}


@functools.cache
def index() -> Asset:
    """index.html with each ``{{name}}`` replaced by the asset's versioned URL."""
    text = read_asset("index.html").decode("utf-8")
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


@functools.cache
def service_worker() -> Asset:
    return Asset.of("sw.js", read_asset("sw.js"))


async def serve_service_worker(request: web.Request) -> web.Response:
    """Revalidated on every load, so a new console's worker replaces the old one at once."""
    return _respond(request, service_worker(), REVALIDATE)


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
    app.router.add_get("/sw.js", serve_service_worker)


__all__ = [
    "CONSOLE_CSP",
    "setup_console_routes",
    "token_page",
    "token_page_headers",
]
