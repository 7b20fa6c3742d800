"""The relay's admin port (`arps --admin-port`): a dashboard, its JSON, and Prometheus metrics.

- ``/``            the dashboard page (package data under `arp/relay/static/`, no CDN, strict CSP)
- ``/api/clients`` each client: status, last seen, pool, open connections, traffic, TCP ports
- ``/metrics``     Prometheus text format (`arp.relay.metrics`)
- ``/static/...``  the page's own script and style (no data in them: served without the token)

Plain asyncio streams and the relay's own head parser (`arp.protocol.http`): one request per
connection, answered then closed, each within `AdminBounds.request`; at most
`AdminBounds.max_connections` at once. The relay never imports aiohttp, and loads this module
(and prometheus_client) only when `--admin-port` is given.

Access: off loopback a token is required (`--admin-token`; the command line refuses to start
without one); when set, every page but the static files wants it as ``Authorization: Bearer``
or ``?token=``, compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from arp.config import AdminBounds
from arp.errors import error_body
from arp.lifecycle import Service
from arp.protocol import http as phttp
from arp.relay import metrics
from arp.relay.settings import AdminSettings

if TYPE_CHECKING:
    from arp.relay.server import Relay

log = logging.getLogger(__name__)

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
_STATIC = {
    "/static/dashboard.js": "text/javascript; charset=utf-8",
    "/static/dashboard.css": "text/css; charset=utf-8",
}
_COMMON = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return resources.files("arp.relay").joinpath("static", name).read_bytes()


class AdminServer(Service):
    """Serves one relay's admin port."""

    def __init__(
        self, relay: Relay, settings: AdminSettings, bounds: AdminBounds | None = None
    ) -> None:
        self.relay = relay
        self.bind = settings.bind
        self.port = settings.port
        self.token = settings.token or None
        self.bounds = bounds or AdminBounds()
        self.registry = metrics.registry_for(relay)
        self._page = _asset("dashboard.html").replace(
            b"{{refresh}}", str(int(self.bounds.refresh * 1000)).encode()
        )
        self._static = {path: _asset(path.rsplit("/", 1)[1]) for path in _STATIC}
        self._server: asyncio.Server | None = None
        self._active = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.bind, self.port, limit=self.bounds.max_head
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("admin port on %s:%d", self.bind, self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.relay.config.timeouts.shutdown):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= self.bounds.max_connections:
            writer.close()
            return
        self._active += 1
        try:
            async with asyncio.timeout(self.bounds.request):
                response = await self._answer(reader)
                if response:
                    writer.write(response)
                    await writer.drain()
        except (TimeoutError, OSError, ConnectionError):
            pass
        finally:
            self._active -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes | None:
        buffer = b""
        while True:
            chunk = await reader.read(self.bounds.max_head + 1)
            if not chunk:
                return None
            buffer += chunk
            try:
                head = phttp.parse_request_head(buffer, self.bounds.max_head)
            except phttp.HeadError as exc:
                return _json(exc.status, error_body(exc.status, exc.message))
            if head is not None:
                return self.respond(head)

    def respond(self, head: phttp.RequestHead) -> bytes:
        """The whole response to one request (no I/O)."""
        parts = urlsplit(head.target)
        path = parts.path
        if head.method not in ("GET", "HEAD"):
            return _json(405, error_body(405, "the admin port only reads: use GET"))
        only_head = head.method == "HEAD"
        if path in self._static:
            return _response(200, self._static[path], _STATIC[path], only_head=only_head)
        if not self._authorized(head, parts.query):
            return _json(
                401,
                error_body(
                    401,
                    "this admin port wants its token: Authorization: Bearer <token> "
                    "or ?token=<token>",
                ),
                extra={"WWW-Authenticate": 'Bearer realm="arps admin"'},
            )
        if path == "/metrics":
            return _response(
                200, metrics.render(self.registry), metrics.CONTENT_TYPE, only_head=only_head
            )
        if path == "/api/clients":
            return _json(200, metrics.clients_json(self.relay), only_head=only_head)
        if path in ("/", "/index.html"):
            return _response(
                200,
                self._page,
                "text/html; charset=utf-8",
                only_head=only_head,
                extra={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"},
            )
        return _json(404, error_body(404, f"no admin page at {path[:128]}"))

    def _authorized(self, head: phttp.RequestHead, query: str) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        given = head.header(b"authorization") or b""
        if given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), expected):
            return True
        for value in parse_qs(query).get("token", []):
            if hmac.compare_digest(value.encode(), expected):
                return True
        return False


def _response(
    status: int,
    body: bytes,
    content_type: str,
    *,
    only_head: bool = False,
    extra: dict[str, str] | None = None,
) -> bytes:
    headers = {"Content-Type": content_type, **_COMMON, **(extra or {})}
    return phttp.page_response(status, body, headers, head_only=only_head)


def _json(
    status: int,
    payload: object,
    *,
    only_head: bool = False,
    extra: dict[str, str] | None = None,
) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _response(status, body, "application/json", only_head=only_head, extra=extra)
