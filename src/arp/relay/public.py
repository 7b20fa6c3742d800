"""The public port: route each public connection to its client's tunnel, or answer it.

Life of a public connection: its first bytes must be an HTTP head (read within deadlines, at
most `Limits.max_head`); the token in it names a client; a pooled tunnel of that client is
taken (or a fresh one asked for, within `Timeouts.tunnel_wait`); the relay writes ``StartProxy``
and the bytes read so far to the tunnel, then splices the two sockets until both sides end, and
a tunnel that ended clean goes back to the pool.

- Fast path (`Public.arrived`): the head is at hand and the client has a live pooled tunnel:
  joined in the accept callback, without a task.
- Slow path (`Public.serve`): everything else, as a task: read the rest of the head, wait for a
  fresh tunnel, or answer.
- Answers: a request naming no client gets the token page (a browser) or 404; every failure
  before the splice is an `ArpError` carrying its status, turned into the public response in
  one place (`error_response`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from typing import Any

from arp.errors import ArpError, NotFound, Unavailable
from arp.net.links import Link, SocketLink
from arp.net.pump import Joint, Transform, pump
from arp.protocol import frames
from arp.protocol import http as phttp
from arp.protocol.tunnel import data_frame
from arp.relay.registry import ClientState, Pools
from arp.relay.settings import RelayConfig
from arp.relay.stats import RelayStats
from arp.relay.token_page import token_page, token_page_headers

log = logging.getLogger(__name__)

HTTP_START = frames.encode(frames.StartProxy(tcp_port=None))
"""What a tunnel taken for the shared HTTP port is told first."""


class HeadTimeout(ArpError):
    """The request head did not arrive within `Timeouts.head`."""

    status = 408


def error_response(exc: ArpError) -> bytes:
    """The one place an error becomes the relay's public answer: its status and message."""
    return phttp.error_response(exc.status, exc.message, origin="arps")


class Public:
    """Routing of the shared public port, and the splice every public connection ends in."""

    def __init__(
        self,
        config: RelayConfig,
        clients: dict[str, ClientState],
        pools: Pools,
        *,
        plain_tunnels: bool,
    ) -> None:
        self.config = config
        self.clients = clients
        self.pools = pools
        self._plain_tunnels = plain_tunnels
        """Tunnels are plain sockets (no TLS), so the fast path can join them in a callback."""
        self.count = 0
        """Public connections being served (the shared port and the dedicated TCP ports)."""
        self.joints: set[Joint] = set()
        """Connections joined without a task (the fast path)."""
        self.stats = RelayStats()

    def at_limit(self) -> bool:
        return self.count >= self.config.limits.max_public_connections

    def abort(self) -> None:
        """Shutdown: end every connection joined without a task."""
        for joint in list(self.joints):
            joint.abort()

    # -- fast path ----------------------------------------------------------------------------

    def arrived(self, sock: socket.socket) -> Coroutine[Any, Any, None] | None:
        """A public connection, joined to a pooled tunnel at once when it can be: its head is
        here (the port defers accepting until bytes arrive) and its client has a live pooled
        tunnel. Everything else, every error answer included, goes the way of a task."""
        public = SocketLink(sock)
        limits = self.config.limits
        if not self._plain_tunnels or self.at_limit():
            return self.serve(public, b"")
        try:
            data = sock.recv(limits.max_head + 1)
        except (BlockingIOError, InterruptedError):
            return self.serve(public, b"")
        except OSError:
            public.close()
            return None
        if not data:
            public.close()
            return None
        try:
            head = phttp.parse_request_head(data, limits.max_head)
        except phttp.HeadError:
            head = None  # answered by the task
        if head is None:
            return self.serve(public, data)
        route = phttp.route(head, self.config.domain)
        state = self.client_for(route) if route is not None else None
        if route is None or state is None or state.control is None:
            return self.serve(public, data)
        tunnel = self.pools.take_pooled(state)
        if tunnel is None:
            return self.serve(public, data)
        assert tunnel.sock is not None  # no TLS on tunnels here
        frame = HTTP_START + data_frame(data)
        try:
            sent = tunnel.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            public.close()
            tunnel.close()
            return None
        transform = self.stats.peek_status(_cookie_transform(route, head))
        if sent < len(frame):
            return self._join_later(state, public, tunnel, frame[sent:], transform)
        self.count += 1

        def joined(leftover: bytes | None) -> None:
            self.joints.discard(joint)
            self.count -= 1
            self.tunnel_done(state, tunnel, leftover)

        meter = state.stats.joined(len(data)).ended
        joint = Joint(public, tunnel, limits, on_end=joined, first=transform, meter=meter)
        self.joints.add(joint)
        joint.start()
        return None

    async def _join_later(
        self,
        state: ClientState,
        public: SocketLink,
        tunnel: Link,
        rest: bytes,
        transform: Transform | None,
    ) -> None:
        """The fast path's tunnel was full: send the rest of the head, then pump as a task."""
        self.count += 1
        try:
            await self.splice(state, public, tunnel, rest, transform)
        finally:
            self.count -= 1

    def client_for(self, route: phttp.Route) -> ClientState | None:
        state = self.clients.get(route.token)
        if state is None and route.source is phttp.TokenSource.SUBDOMAIN:
            state = next(
                (s for s in self.clients.values() if s.client_id.lower() == route.token), None
            )
        return state

    # -- slow path ----------------------------------------------------------------------------

    async def serve(self, public: SocketLink, initial: bytes) -> None:
        if self.at_limit():
            await self.answer(
                public, Unavailable("the relay is at its connection limit; try again shortly")
            )
            return
        self.count += 1
        try:
            await self._route(public, initial)
        except ArpError as exc:
            await self.answer(public, exc)
        finally:
            self.count -= 1

    async def _route(self, public: SocketLink, initial: bytes) -> None:
        """Route one connection; an `ArpError` raised before the splice is its answer."""
        read = await self._read_head(public, initial)
        if read is None:
            return
        head, buffer = read
        route = phttp.route(head, self.config.domain)
        if route is None and head.target.split("?")[0] == "/" and head.method in ("GET", "HEAD"):
            # A browser that names no client gets the page to enter a token.
            await self.send_and_close(public, _token_page(head, 200, None, clear_cookie=False))
            return
        if route is None:
            raise NotFound(
                "no client named: add ?token=<client_id> to the URL (or send an X-ARP-Token header)"
            )
        state = self.client_for(route)
        if state is None:
            message = f"no client is registered with token {route.token[:128]}"
            if not phttp.wants_page(head):
                raise NotFound(message)
            # A stale remembered token is forgotten, so the next visit starts clean.
            clear = route.source is phttp.TokenSource.COOKIE
            await self.send_and_close(public, _token_page(head, 404, message, clear_cookie=clear))
            return
        tunnel = await self.pools.take(state, self.config.timeouts.tunnel_wait)
        opening = HTTP_START + data_frame(buffer)
        transform = self.stats.peek_status(_cookie_transform(route, head))
        await self.splice(state, public, tunnel, opening, transform, received=len(buffer))

    async def _read_head(
        self, public: SocketLink, buffer: bytes
    ) -> tuple[phttp.RequestHead, bytes] | None:
        """The request head and every byte read with it (`buffer`: those read already); None
        when the connection closed. Raises `phttp.HeadError` for a bad head and `HeadTimeout`
        for one that is late."""
        timeouts, limits = self.config.timeouts, self.config.limits
        if buffer:
            head = phttp.parse_request_head(buffer, limits.max_head)
            if head is not None:
                return head, buffer
        try:
            if not buffer:
                async with asyncio.timeout(timeouts.first_byte):
                    buffer = await public.recv(limits.max_head + 1)
                if not buffer:
                    public.close()
                    return None
            async with asyncio.timeout(timeouts.head):
                while (head := phttp.parse_request_head(buffer, limits.max_head)) is None:
                    chunk = await public.recv(limits.max_head + 1)
                    if not chunk:
                        public.close()
                        return None
                    buffer += chunk
        except TimeoutError:
            if buffer:
                raise HeadTimeout("the request head did not arrive in time") from None
            public.close()
            return None
        except OSError:
            public.close()
            return None
        return head, buffer

    # -- the splice and the answers -----------------------------------------------------------

    async def splice(
        self,
        state: ClientState,
        public: Link,
        tunnel: Link,
        opening: bytes,
        transform: Transform | None = None,
        *,
        received: int = 0,
    ) -> None:
        """Send `opening` (StartProxy and the `received` bytes read so far, framed) on `tunnel`,
        then join `public` to it; a tunnel that ends clean goes back to the pool."""
        try:
            await tunnel.send(opening)
        except OSError:
            public.close()
            tunnel.close()
            return
        meter = state.stats.joined(received).ended
        leftover = await pump(public, tunnel, self.config.limits, first=transform, meter=meter)
        self.tunnel_done(state, tunnel, leftover)

    def tunnel_done(self, state: ClientState, tunnel: Link, leftover: bytes | None) -> None:
        """A connection ended: its tunnel goes back to the pool if it ended clean."""
        if leftover is None:
            return  # closed
        if leftover:
            log.warning("client %s sent bytes on an idle tunnel; closing it", state.client_id)
            tunnel.close()
            return
        self.pools.deliver(state, tunnel)

    async def answer(self, link: Link, exc: ArpError) -> None:
        """Answer with the relay's own error response, then close."""
        await self.send_and_close(link, error_response(exc))

    async def send_and_close(self, link: Link, response: bytes) -> None:
        """Send a complete response, then close without resetting unread input."""
        self.stats.answered(response)
        try:
            async with asyncio.timeout(self.config.timeouts.answer):
                await link.send(response)
                link.shutdown_write()
                # Read what the peer still sends so closing does not turn into a reset that
                # would destroy the response before the peer read it.
                total = 0
                while total < self.config.limits.max_answer_drain:
                    chunk = await link.recv(65536)
                    if not chunk:
                        break
                    total += len(chunk)
        except (TimeoutError, OSError):
            pass
        finally:
            link.close()


def _cookie_transform(route: phttp.Route, head: phttp.RequestHead) -> Transform | None:
    """What adds the Set-Cookie remembering the token to the first response, if one is due."""
    if not route.set_cookie:
        return None
    cookie = phttp.set_cookie_header(route.token, secure=phttp.came_over_https(head))

    def transform(first: bytes) -> bytes:
        return phttp.inject_header(first, cookie) or first

    return transform


def _token_page(
    head: phttp.RequestHead, status: int, message: str | None, *, clear_cookie: bool
) -> bytes:
    return phttp.page_response(
        status,
        token_page(message),
        token_page_headers(),
        head_only=head.method == "HEAD",
        extra=phttp.clear_cookie_header() if clear_cookie else b"",
    )
