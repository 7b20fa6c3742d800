"""The public port: route each public request to its client's tunnel, or answer it.

Life of a public connection: its first bytes must be an HTTP head (read within deadlines, at
most `Limits.max_head`); the token in it names a client; a pooled tunnel of that client is
taken (or a fresh one asked for, within `Timeouts.tunnel_wait`); the relay writes ``StartProxy``
and the request to the tunnel, and from then on a `Conversation` (`arp.relay.conversation`)
routes every further request on the connection by its own token, while responses are spliced
back; a tunnel that ended clean goes back to the pool.

- Fast path (`Public.arrived`): the head is at hand and the client has a live pooled tunnel:
  started in the accept callback, without a task.
- Slow path (`Public.serve`): everything else, as a task: read the rest of the head, wait for a
  fresh tunnel, or answer.
- Answers: a request naming no client gets the token page (a browser) or 404; every failure
  before a request reaches its client is an `ArpError` carrying its status, turned into the
  public response in one place (`error_response`). The same answers serve a request that
  arrives on a connection routed before (`Public.decide`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final

from arp.errors import ArpError, NotFound, Unavailable
from arp.net import sockio
from arp.net.bridge import BridgedTunnel
from arp.net.links import Link, SocketLink
from arp.net.pump import Transform, pump
from arp.protocol import http as phttp
from arp.protocol.forwarded import Caller, caller_ip, is_trusted
from arp.protocol.requests import Request, RequestStream
from arp.relay.access import AccessIndex
from arp.relay.answers import HeadTimeout, error_response, token_page_response
from arp.relay.conversation import Conversation
from arp.relay.door import Door
from arp.relay.limits import AddressCounts, TooManyFromAddress
from arp.relay.registry import ClientState, Pools
from arp.relay.settings import RelayConfig
from arp.relay.stats import RelayStats

log = logging.getLogger(__name__)

UNKNOWN: Final = "unknown"
"""The caller's address when the socket cannot tell it (gone already): not counted."""


class Public(Door):
    """Routing of the shared public port, and the splice every public connection ends in."""

    def __init__(
        self,
        config: RelayConfig,
        clients: Mapping[str, ClientState],
        pools: Pools,
        tasks: set[asyncio.Task[None]],
        *,
        plain_tunnels: bool,
    ) -> None:
        self.config = config
        self.clients = clients
        self.pools = pools
        self._tasks = tasks
        """The relay's tasks (cancelled at shutdown); `spawn` adds to them."""
        self._plain_tunnels = plain_tunnels
        """Tunnels are plain sockets (no TLS), so the fast path can join them in a callback."""
        self.count = 0
        """Public connections being served (the shared port and the dedicated TCP ports)."""
        self.resolve: Callable[[str], Awaitable[object]] | None = None
        """`arps --cluster`: learns whether another node holds a client unknown here (then
        `clients`, a `arp.relay.remote.RoutingTable`, has it afterwards)."""
        self.recent: tuple[Request, Caller, bytes] | None = None
        """The last first request of a connection, its caller and its head as rewritten: a
        client that opens a connection per request sends the same bytes each time."""
        self._recent_route: tuple[Request, phttp.Route | None] | None = None
        self.live: set[Conversation] = set()
        """Connections served by callbacks, without a task of their own (ended at shutdown)."""
        self.stats = RelayStats()
        """What the admin port reports of the public port."""
        self.access = AccessIndex()
        """Access-token hashes → clients (`arp.relay.access`)."""
        self.per_address = AddressCounts(config.limits.max_connections_per_ip)
        """Connections per caller address (`arp.relay.limits`)."""
        self._over_share = error_response(
            TooManyFromAddress("too many connections from your address; try again shortly")
        )

    def at_limit(self) -> bool:
        return self.count >= self.config.limits.max_public_connections

    def abort(self) -> None:
        """Shutdown: end every connection served without a task."""
        for conversation in list(self.live):
            conversation.abort()

    def sweep_idle(self, now: float) -> None:
        """End keep-alive connections idle past `Timeouts.keepalive_idle` (the relay's clock)."""
        for conversation in list(self.live):
            conversation.check_idle(now)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as one of the relay's tasks."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def caller(self, sock: socket.socket) -> Caller:
        """Who is at the other end of a public connection, for the forwarded headers."""
        peer = sockio.peer_ip(sock)
        if peer is None:
            return Caller(UNKNOWN, trusted=False)
        ip = caller_ip(peer)
        return Caller(ip, trusted=is_trusted(ip, self.config.trusted_proxies))

    # -- fast path ----------------------------------------------------------------------------

    def _admit(self, sock: socket.socket, caller: Caller) -> str | None:
        """Count a new connection under its caller's address (`arp.relay.limits`): the key
        ("" when not counted), or None when the address is over its share: then it is
        answered 503 (if the kernel takes it at once) and closed."""
        if caller.trusted or caller.ip == UNKNOWN:
            return ""
        key = self.per_address.enter(caller.ip)
        if key is None:
            self.stats.answered(self._over_share)
            with contextlib.suppress(OSError):
                sock.send(self._over_share)
            sock.close()
        return key

    def arrived(self, sock: socket.socket) -> Coroutine[Any, Any, None] | None:
        """A public connection, started at once when it can be: its head is here (the port
        defers accepting until bytes arrive) and its client has a live pooled tunnel.
        Everything else, every error answer included, goes the way of a task."""
        caller = self.caller(sock)  # once: counting and the forwarded headers both need it
        key = self._admit(sock, caller)
        if key is None:
            return None
        public = SocketLink(sock)
        limits = self.config.limits
        if not self._plain_tunnels or self.at_limit():
            return self.serve(public, b"", key, caller)
        try:
            data = sock.recv(limits.max_head + 1)
        except (BlockingIOError, InterruptedError):
            return self.serve(public, b"", key, caller)
        except OSError:
            data = b""
        if not data:
            self.per_address.leave(key)
            public.close()
            return None
        stream = RequestStream(limits.max_head)
        stream.feed(data)
        try:
            request = stream.next_event()
        except ArpError:
            request = None  # answered by the task
        if not isinstance(request, Request):
            return self.serve(public, data, key, caller)
        recent = self._recent_route
        if recent is not None and recent[0] is request:
            route = recent[1]
        else:
            route = phttp.route(request.head, self.config.domain)
            self._recent_route = (request, route)
        state = self.client_for(route) if route is not None else None
        if route is None or state is None or state.control is None:
            return self.serve(public, data, key, caller)
        tunnel = self.pools.take_pooled(state)
        if tunnel is None:
            return self.serve(public, data, key, caller)
        self._converse(public, stream, state, tunnel, request, route, key=key, caller=caller)
        return None

    def _converse(
        self,
        public: SocketLink,
        stream: RequestStream,
        state: ClientState,
        tunnel: Link,
        request: Request,
        route: phttp.Route,
        on_end: asyncio.Future[None] | None = None,
        *,
        key: str = "",
        caller: Caller | None = None,
    ) -> None:
        """Start routing `public` request by request, `request` first (on `tunnel`); counted
        here (and under its address `key`) unless a task that counts it waits for `on_end`."""
        counted = on_end is None
        self.count += counted

        def ended() -> None:
            self.live.discard(conversation)
            self.count -= counted
            if counted:
                self.per_address.leave(key)
            if on_end is not None and not on_end.done():
                on_end.set_result(None)

        if caller is None:
            caller = self.caller(public.sock)
        conversation = Conversation(self, public, stream, caller, ended)
        self.live.add(conversation)
        conversation.start(state, self.plain(tunnel), request, route)

    def client_for(self, route: phttp.Route) -> ClientState | None:
        """The client `route`'s token opens: its client_id (a client without access tokens) or
        one of its access tokens (`arp.relay.access`); None when it opens nothing."""
        clients = self.clients
        state: ClientState | None
        if isinstance(clients, dict):  # noqa: SIM108 (the same call, compiled two ways)
            # The plain relay's dict: compiled code reads it with the dict's own lookup, where
            # a `Mapping`'s get is a method call (a RoutingTable's, in a cluster).
            state = clients.get(route.token)
        else:
            state = clients.get(route.token)
        if state is not None and not state.access_hashes:
            return state
        if self.access and (found := self.access.find(route.token)) is not None:
            return found
        if state is None and route.source is phttp.TokenSource.SUBDOMAIN:
            return next(
                (
                    s
                    for s in self.clients.values()
                    if s.client_id.lower() == route.token and not s.access_hashes
                ),
                None,
            )
        return None

    # -- slow path ----------------------------------------------------------------------------

    async def serve(
        self, public: SocketLink, initial: bytes, key: str = "", caller: Caller | None = None
    ) -> None:
        """The slow path of one connection (`key`: its address count, released at the end;
        `caller`: who calls, when known already)."""
        try:
            if self.at_limit():
                await self.answer(
                    public, Unavailable("the relay is at its connection limit; try again shortly")
                )
                return
            self.count += 1
            try:
                await self._route(public, initial, caller)
            except ArpError as exc:
                await self.answer(public, exc)
            finally:
                self.count -= 1
        finally:
            self.per_address.leave(key)

    async def _route(self, public: SocketLink, initial: bytes, caller: Caller | None) -> None:
        """Route one connection's first request; an `ArpError` raised before it reaches its
        client is its answer."""
        read = await self._read_head(public, initial)
        if read is None:
            return
        head, buffer = read
        route = phttp.route(head, self.config.domain)
        if route is not None and self.resolve is not None and route.token not in self.clients:
            await self.resolve(route.token)  # a client another cluster node holds
        answer, state = self.decide(head, route)
        if answer is not None:
            await self.send_and_close(public, answer)
            return
        assert state is not None and route is not None
        tunnel = await self.take_tunnel(state)
        stream = RequestStream(self.config.limits.max_head)
        stream.feed(buffer)
        request = stream.next_event()
        assert isinstance(request, Request)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._converse(public, stream, state, tunnel, request, route, done, caller=caller)
        await done

    def decide(
        self, head: phttp.RequestHead, route: phttp.Route | None
    ) -> tuple[bytes | None, ClientState | None]:
        """The client a request goes to, or the relay's own answer to it (then None)."""
        if route is None and head.target.split("?")[0] == "/" and head.method in ("GET", "HEAD"):
            # A browser that names no client gets the page to enter a token.
            return token_page_response(head, 200, None, clear_cookie=False), None
        if route is None:
            return error_response(
                NotFound(
                    "no client named: add ?token=<client_id> to the URL "
                    "(or send an X-ARP-Token header)"
                )
            ), None
        state = self.client_for(route)
        if state is None:
            message = f"no client is registered with token {route.token[:128]}"
            if not phttp.wants_page(head):
                return error_response(NotFound(message)), None
            # A stale remembered token is forgotten, so the next visit starts clean.
            clear = route.source is phttp.TokenSource.COOKIE
            return token_page_response(head, 404, message, clear_cookie=clear), None
        return None, state

    async def take_tunnel(self, state: ClientState) -> Link:
        """A tunnel of `state` within `Timeouts.tunnel_wait` (ArpError: why not)."""
        return await self.pools.take(state, self.config.timeouts.tunnel_wait)

    def plain(self, tunnel: Link) -> Link:
        """`tunnel` as a plain socket (a TLS tunnel is bridged)."""
        if tunnel.sock is not None:
            return tunnel
        return BridgedTunnel(tunnel, self.config.limits.copy_chunk)

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
    ) -> None:
        """Send `opening` (StartProxy and the bytes read so far, framed) on `tunnel`, then join
        `public` to it; a tunnel that ends clean goes back to the pool."""
        try:
            await tunnel.send(opening)
        except OSError:
            public.close()
            tunnel.close()
            return
        leftover = await pump(public, tunnel, self.config.limits, first=transform)
        self.tunnel_done(state, tunnel, leftover)

    def tunnel_done(self, state: ClientState, tunnel: Link, leftover: bytes | None) -> None:
        """A connection ended: its tunnel goes back to the pool if it ended clean."""
        if leftover is None:
            tunnel.close()
            return
        if leftover:
            log.warning("client %s sent bytes on an idle tunnel; closing it", state.client_id)
            tunnel.close()
            return
        if isinstance(tunnel, BridgedTunnel):
            self.spawn(self._unbridge(state, tunnel))
            return
        self.pools.deliver(state, tunnel)

    async def _unbridge(self, state: ClientState, tunnel: BridgedTunnel) -> None:
        inner = await tunnel.release(self.config.timeouts.farewell)
        if inner is not None:
            self.pools.deliver(state, inner)

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
