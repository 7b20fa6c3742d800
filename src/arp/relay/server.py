"""arps: the relay. Control, proxy and public listeners, plus a dedicated port per TCP grant.

Life of a public connection: its first bytes must be an HTTP head (read within deadlines, at
most `Limits.max_head`); the token in it names a client; a pooled tunnel of that client is
taken (or a fresh one asked for, within `Timeouts.tunnel_wait`); the relay writes ``StartProxy``
and the bytes read so far to the tunnel, then splices the two sockets until both sides end, and
a tunnel that ended clean goes back to the pool. The common case (head at hand, pooled tunnel
alive) runs in the accept callback without a task. Every failure before the splice is
answered with an HTTP status and a body that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from arp import __version__
from arp.config import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_POOL_SIZE,
    DEFAULT_PROXY_PORT,
    DEFAULT_PUBLIC_PORT,
    Limits,
    Timeouts,
)
from arp.errors import RemoteProtocolError
from arp.lifecycle import Service
from arp.net.links import Link, SocketLink, read_message, wrap_tls_server
from arp.net.pump import Joint, Transform, data_frame, pump
from arp.net.sockets import accept_loop, listen, raise_fd_limit, tune
from arp.protocol import frames
from arp.protocol import http as phttp
from arp.relay.registry import (
    ClientOffline,
    ClientState,
    ControlLink,
    Pools,
    TcpPort,
    TooManyPending,
    TunnelTimeout,
    check_client_id,
)

log = logging.getLogger(__name__)

_CONTROL_SEND_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class RelayConfig:
    bind: str = "0.0.0.0"
    control_port: int = DEFAULT_CONTROL_PORT
    proxy_port: int = DEFAULT_PROXY_PORT
    public_port: int = DEFAULT_PUBLIC_PORT
    pool_size: int = DEFAULT_POOL_SIZE
    domain: str | None = None
    """Base domain for `<client_id>.<domain>` routing."""
    auth_token: str | None = None
    """When set, a Register must carry this secret."""
    tcp_ports: range | None = None
    """Dedicated public TCP ports clients may ask for; None allows none."""
    tls_cert: str | None = None
    tls_key: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)


class Relay(Service):
    """The relay server; use as ``async with Relay(config) as relay: await relay.wait_closed()``."""

    def __init__(self, config: RelayConfig) -> None:
        if not 0 <= config.pool_size <= config.limits.max_pool_size:
            raise ValueError(
                f"--pool-size {config.pool_size} is outside 0..{config.limits.max_pool_size}"
            )
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        self.config = config
        self.clients: dict[str, ClientState] = {}
        self.pools = Pools(
            config.pool_size,
            config.limits.max_pending_tunnels,
            config.limits.max_idle_tunnels,
            config.timeouts.idle_tunnel,
        )
        self._tls: ssl.SSLContext | None = None
        if config.tls_cert and config.tls_key:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(config.tls_cert, config.tls_key)
        self._listeners: list[socket.socket] = []
        self._control_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._joints: set[Joint] = set()
        """Connections joined without a task (the public fast path)."""
        self._loops: list[asyncio.Task[None]] = []
        self._public_count = 0
        self.control_port = config.control_port
        self.proxy_port = config.proxy_port
        self.public_port = config.public_port

    async def start(self) -> None:
        """Bind every listener (raising OSError naming the port) and start serving."""
        raise_fd_limit()
        cfg, limits = self.config, self.config.limits
        loop = asyncio.get_running_loop()
        try:
            control_sock = listen(cfg.bind, cfg.control_port, limits, keepalive=True)
            self._listeners.append(control_sock)
            proxy_sock = listen(cfg.bind, cfg.proxy_port, limits, keepalive=True)
            self._listeners.append(proxy_sock)
            public_sock = listen(cfg.bind, cfg.public_port, limits, client_first=True)
            self._listeners.append(public_sock)
        except OSError:
            self._close_listeners()
            raise
        self.control_port = control_sock.getsockname()[1]
        self.proxy_port = proxy_sock.getsockname()[1]
        self.public_port = public_sock.getsockname()[1]
        self._control_server = await asyncio.start_server(
            self._serve_control,
            sock=control_sock,
            ssl=self._tls,
            ssl_handshake_timeout=cfg.timeouts.handshake if self._tls else None,
            limit=limits.max_frame + 8,
        )
        for sock, handler, name in (
            (proxy_sock, self._serve_proxy, "proxy"),
            (public_sock, self._public_arrived, "public"),
        ):
            self._loops.append(
                loop.create_task(accept_loop(sock, handler, limits, self._tasks, name))
            )
        self._loops.append(loop.create_task(self._tick()))
        log.info(
            "arps %s listening on %s: control %d, proxy %d, public %d%s",
            __version__,
            cfg.bind,
            self.control_port,
            self.proxy_port,
            self.public_port,
            " (TLS on control and proxy)" if self._tls else "",
        )

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()

    async def _shutdown(self) -> None:
        """Stop accepting, drop every link, and wait a bounded time for handlers to end."""
        for task in self._loops:
            task.cancel()
        if self._loops:
            # Accept loops let go of their listeners before the sockets close.
            await asyncio.wait(self._loops, timeout=self.config.timeouts.shutdown)
        if self._control_server is not None:
            self._control_server.close()
        self._close_listeners()
        for state in list(self.clients.values()):
            self._forget(state)
        for joint in list(self._joints):
            joint.abort()
        for task in list(self._tasks):
            task.cancel()
        pending = [*self._loops, *self._tasks]
        if pending:
            await asyncio.wait(pending, timeout=self.config.timeouts.shutdown)
        if self._control_server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.timeouts.shutdown):
                    await self._control_server.wait_closed()

    # -- control port -------------------------------------------------------------------------

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._control_session(reader, writer)
        except asyncio.CancelledError:
            # Shutdown cancels this task; asyncio's start_server (3.11) mishandles a handler
            # that ends cancelled, so it ends normally here, at its outermost frame.
            writer.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _control_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")
        if sock is not None:
            tune(sock, self.config.limits, keepalive=True)
        limits, timeouts = self.config.limits, self.config.timeouts
        link = ControlLink(writer, limits.max_frame, _CONTROL_SEND_BUFFER)
        decoder = frames.FrameDecoder(limits.max_frame)
        state: ClientState | None = None
        try:
            first = await read_message(reader.read, decoder, timeouts.handshake)
            if not isinstance(first, frames.Register):
                raise RemoteProtocolError(f"the first message must be Register, not {first.TYPE}")
            state = self._register(first, link)
            if state is None:
                return
            log.info("client %s registered from %s", state.client_id, _addr(peer))
            self.pools.top_up(state)
            while True:
                message = await read_message(reader.read, decoder, timeouts.heartbeat_timeout)
                if not isinstance(message, frames.Heartbeat):
                    raise RemoteProtocolError(f"unexpected {message.TYPE} on the control link")
        except TimeoutError:
            who = state.client_id if state else _addr(peer)
            log.info("control link of %s silent too long; closing it", who)
        except RemoteProtocolError as exc:
            log.warning("control link from %s: %s", _addr(peer), exc.message)
            link.send(frames.Error(message=exc.message))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("control link from %s ended: %s", _addr(peer), exc)
        finally:
            if state is not None and state.control is link:
                self._went_offline(state)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    def _register(self, msg: frames.Register, link: ControlLink) -> ClientState | None:
        """Apply a Register; answers it either way; returns the state when it succeeded."""
        cfg = self.config

        def refuse(error: str, *, retryable: bool) -> None:
            log.warning("registration of %r refused: %s", msg.client_id[:64], error)
            link.send(frames.RegisterResult(success=False, error=error, retryable=retryable))

        if cfg.auth_token is not None and not hmac.compare_digest(
            (msg.auth_token or "").encode(), cfg.auth_token.encode()
        ):
            refuse(
                "this relay requires a shared secret: start arpc with --auth-token "
                "(or env ARPS_AUTH_TOKEN) matching arps --auth-token",
                retryable=False,
            )
            return None
        if msg.tunnel_protocol != frames.TUNNEL_PROTOCOL:
            refuse(
                f"this relay (arps {__version__}) speaks tunnel protocol "
                f"{frames.TUNNEL_PROTOCOL} and this client speaks {msg.tunnel_protocol}: "
                "run the same ARP version on both ends",
                retryable=False,
            )
            return None
        problem = check_client_id(msg.client_id)
        if problem:
            refuse(problem, retryable=False)
            return None
        state = self.clients.get(msg.client_id)
        if state is not None and state.control is not None:
            if msg.resume_key is None or not hmac.compare_digest(
                msg.resume_key.encode(), state.resume_key.encode()
            ):
                refuse(
                    f"client_id {msg.client_id} is in use by another live connection",
                    retryable=True,
                )
                return None
            log.info("client %s took over its own registration", msg.client_id)
            old = state.control
            self._went_offline(state)
            old.close()
        if state is None and len(self.clients) >= cfg.limits.max_clients:
            refuse("the relay serves its maximum number of clients", retryable=True)
            return None
        grant_error = self._check_tcp_ports(msg.client_id, msg.tcp_ports)
        if grant_error:
            refuse(grant_error, retryable=False)
            return None
        if state is None:
            state = ClientState(client_id=msg.client_id)
            self.clients[msg.client_id] = state
        try:
            self._hold_tcp_ports(state, msg.tcp_ports)
        except OSError as exc:
            refuse(str(exc.strerror or exc), retryable=True)
            if not state.tcp_ports and state.control is None and state.disconnected_at is None:
                del self.clients[msg.client_id]
            return None
        state.control = link
        state.disconnected_at = None
        link.send(
            frames.RegisterResult(
                success=True,
                resume_key=state.resume_key,
                tcp_ports=sorted(state.tcp_ports),
                public_port=self.public_port,
                tunnel_protocol=frames.TUNNEL_PROTOCOL,
            )
        )
        return state

    def _went_offline(self, state: ClientState) -> None:
        state.control = None
        state.disconnected_at = time.monotonic()
        self.pools.drop(state)
        log.info(
            "client %s offline (state kept %.0f s)", state.client_id, self.config.timeouts.retention
        )

    def _forget(self, state: ClientState) -> None:
        if state.control is not None:
            state.control.close()
            state.control = None
        self.pools.drop(state)
        for port in state.tcp_ports.values():
            port.close()
        state.tcp_ports.clear()
        self.clients.pop(state.client_id, None)

    async def _tick(self) -> None:
        """Heartbeats, pool top-ups (besides refills on take) and retention expiry, on one clock."""
        timeouts = self.config.timeouts
        interval = min(timeouts.heartbeat_interval, timeouts.pool_tick)
        last_pool = time.monotonic()
        seq = 0
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            seq += 1
            pool_due = now - last_pool >= timeouts.pool_tick
            if pool_due:
                last_pool = now
            for state in list(self.clients.values()):
                if state.control is not None:
                    state.control.send(frames.Heartbeat(seq=seq))
                    if pool_due:
                        self.pools.prune(state, now)
                        self.pools.top_up(state)
                elif state.offline_for(now) > timeouts.retention:
                    log.info(
                        "client %s forgotten after %.0f s offline",
                        state.client_id,
                        timeouts.retention,
                    )
                    self._forget(state)

    # -- TCP port grants ----------------------------------------------------------------------

    def _check_tcp_ports(self, client_id: str, ports: list[int]) -> str | None:
        allowed = self.config.tcp_ports
        if not ports:
            return None
        if len(ports) > self.config.limits.max_tcp_ports_per_client:
            return f"at most {self.config.limits.max_tcp_ports_per_client} TCP ports per client"
        if allowed is None:
            return "this relay grants no dedicated TCP ports (start arps with --tcp-ports A-B)"
        for port in ports:
            if port not in allowed:
                return (
                    f"TCP port {port} is outside the relay's allowed range "
                    f"{allowed.start}-{allowed.stop - 1}"
                )
            for other in self.clients.values():
                if other.client_id != client_id and port in other.tcp_ports:
                    return f"TCP port {port} is held by another client"
        return None

    def _hold_tcp_ports(self, state: ClientState, ports: list[int]) -> None:
        """Keep exactly `ports` listening for `state`; OSError if one cannot be bound."""
        wanted = set(ports)
        for port in list(state.tcp_ports):
            if port not in wanted:
                state.tcp_ports.pop(port).close()
        loop = asyncio.get_running_loop()
        for port in sorted(wanted - set(state.tcp_ports)):
            try:
                listener = listen(self.config.bind, port, self.config.limits)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"TCP port {port} cannot be bound on the relay: {exc.strerror}"
                ) from None
            grant = TcpPort(port=port, listener=listener)

            async def serve(
                sock: socket.socket, state: ClientState = state, port: int = port
            ) -> None:
                await self._serve_tcp(sock, state, port)

            grant.task = loop.create_task(
                accept_loop(listener, serve, self.config.limits, self._tasks, f"tcp:{port}")
            )
            state.tcp_ports[port] = grant
            log.info("client %s holds TCP port %d", state.client_id, port)

    async def _serve_tcp(self, sock: socket.socket, state: ClientState, port: int) -> None:
        public = SocketLink(sock)
        if self._public_count >= self.config.limits.max_public_connections:
            public.close()  # raw TCP has no way to say why
            return
        self._public_count += 1
        try:
            tunnel = await self.pools.take(state, self.config.timeouts.tunnel_wait)
        except (ClientOffline, TunnelTimeout, TooManyPending):
            public.close()
            return
        else:
            opening = frames.encode(frames.StartProxy(tcp_port=port))
            await self._splice(state, public, tunnel, opening)
        finally:
            self._public_count -= 1

    # -- proxy port ---------------------------------------------------------------------------

    async def _serve_proxy(self, sock: socket.socket) -> None:
        limits, timeouts = self.config.limits, self.config.timeouts
        link: Link = SocketLink(sock)
        try:
            if self._tls is not None:
                link = await wrap_tls_server(sock, self._tls, timeouts.handshake)
            decoder = frames.FrameDecoder(limits.max_frame)
            message = await read_message(link.recv, decoder, timeouts.handshake)
            if not isinstance(message, frames.NewProxyConn):
                raise RemoteProtocolError(
                    f"a tunnel must start with NewProxyConn, not {message.TYPE}"
                )
            if decoder.take_rest():
                raise RemoteProtocolError("a tunnel must stay silent after NewProxyConn")
            state = self.clients.get(message.client_id)
            if state is None or message.proxy_conn_id not in state.requested:
                raise RemoteProtocolError(
                    f"no tunnel was requested with proxy_conn_id {message.proxy_conn_id!r} "
                    f"for client {message.client_id!r}"
                )
            state.requested.discard(message.proxy_conn_id)
            self.pools.deliver(state, link)
        except RemoteProtocolError as exc:
            log.warning("proxy port: %s", exc.message)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await link.send(frames.encode(frames.Error(message=exc.message)))
            link.close()
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.debug("proxy port: tunnel handshake failed: %s", exc)
            link.close()
        except BaseException:
            link.close()
            raise

    # -- public port --------------------------------------------------------------------------

    def _public_arrived(self, sock: socket.socket) -> Coroutine[Any, Any, None] | None:
        """A public connection, joined to a pooled tunnel at once when it can be: its head is
        here (the port defers accepting until bytes arrive) and its client has a live pooled
        tunnel. Everything else, every error answer included, goes the way of a task."""
        public = SocketLink(sock)
        limits = self.config.limits
        if self._tls is not None or self._public_count >= limits.max_public_connections:
            return self._serve_public(public, b"")
        try:
            data = sock.recv(limits.max_head + 1)
        except (BlockingIOError, InterruptedError):
            return self._serve_public(public, b"")
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
            return self._serve_public(public, data)
        route = phttp.route(head, self.config.domain)
        state = self._client_for(route) if route is not None else None
        if route is None or state is None or state.control is None:
            return self._serve_public(public, data)
        tunnel = self.pools.take_pooled(state)
        if tunnel is None:
            return self._serve_public(public, data)
        assert tunnel.sock is not None  # no TLS on tunnels here
        frame = _HTTP_START + data_frame(data)
        try:
            sent = tunnel.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            public.close()
            tunnel.close()
            return None
        transform = _cookie_transform(route, head)
        if sent < len(frame):
            return self._join_later(state, public, tunnel, frame[sent:], transform)
        self._public_count += 1

        def joined(leftover: bytes | None) -> None:
            self._joints.discard(joint)
            self._public_count -= 1
            self._tunnel_done(state, tunnel, leftover)

        joint = Joint(public, tunnel, limits, on_end=joined, first=transform)
        self._joints.add(joint)
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
        self._public_count += 1
        try:
            await self._splice(state, public, tunnel, rest, transform)
        finally:
            self._public_count -= 1

    def _client_for(self, route: phttp.Route) -> ClientState | None:
        state = self.clients.get(route.token)
        if state is None and route.source is phttp.TokenSource.SUBDOMAIN:
            state = next(
                (s for s in self.clients.values() if s.client_id.lower() == route.token), None
            )
        return state

    async def _serve_public(self, public: SocketLink, initial: bytes) -> None:
        limits = self.config.limits
        if self._public_count >= limits.max_public_connections:
            await _reply(public, 503, "the relay is at its connection limit; try again shortly")
            return
        self._public_count += 1
        try:
            await self._route_public(public, initial)
        finally:
            self._public_count -= 1

    async def _route_public(self, public: SocketLink, initial: bytes) -> None:
        try:
            read = await self._read_head(public, initial)
        except phttp.HeadError as exc:
            await _reply(public, exc.status, exc.message)
            return
        if read is None:
            return
        head, buffer = read
        timeouts = self.config.timeouts
        route = phttp.route(head, self.config.domain)
        if route is None and head.target.split("?")[0] == "/" and head.method in ("GET", "HEAD"):
            # A browser that names no client gets the console's page to enter a token.
            await _send_and_close(public, _token_page(head, 200, None, clear_cookie=False))
            return
        if route is None:
            await _reply(
                public,
                404,
                "no client named: add ?token=<client_id> to the URL "
                "(or send an X-ARP-Token header)",
            )
            return
        state = self._client_for(route)
        if state is None:
            message = f"no client is registered with token {route.token[:128]}"
            if phttp.wants_page(head):
                # A stale remembered token is forgotten, so the next visit starts clean.
                clear = route.source is phttp.TokenSource.COOKIE
                await _send_and_close(public, _token_page(head, 404, message, clear_cookie=clear))
            else:
                await _reply(public, 404, message)
            return
        try:
            tunnel = await self.pools.take(state, timeouts.tunnel_wait)
        except ClientOffline:
            ago = state.offline_for()
            await _reply(
                public, 503, f"client {state.client_id} is offline (disconnected {ago:.0f} s ago)"
            )
            return
        except TunnelTimeout:
            await _reply(
                public,
                504,
                f"client {state.client_id} did not open a tunnel within {timeouts.tunnel_wait:g} s",
            )
            return
        except TooManyPending:
            await _reply(public, 503, f"client {state.client_id} has too many requests waiting")
            return
        opening = _HTTP_START + data_frame(buffer)
        await self._splice(state, public, tunnel, opening, _cookie_transform(route, head))

    async def _read_head(
        self, public: SocketLink, buffer: bytes
    ) -> tuple[phttp.RequestHead, bytes] | None:
        """The request head and every byte read with it (`buffer`: those read already); None
        when the connection was dealt with (closed, or answered 408). Raises
        `phttp.HeadError` for a bad head."""
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
                await _reply(public, 408, "the request head did not arrive in time")
            else:
                public.close()
            return None
        except OSError:
            public.close()
            return None
        return head, buffer

    async def _splice(
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
        self._tunnel_done(state, tunnel, leftover)

    def _tunnel_done(self, state: ClientState, tunnel: Link, leftover: bytes | None) -> None:
        """A connection ended: its tunnel goes back to the pool if it ended clean."""
        if leftover is None:
            return  # closed
        if leftover:
            log.warning("client %s sent bytes on an idle tunnel; closing it", state.client_id)
            tunnel.close()
            return
        self.pools.deliver(state, tunnel)


_HTTP_START = frames.encode(frames.StartProxy(tcp_port=None))


def _cookie_transform(route: phttp.Route, head: phttp.RequestHead) -> Transform | None:
    """What adds the Set-Cookie remembering the token to the first response, if one is due."""
    if not route.set_cookie:
        return None
    cookie = phttp.set_cookie_header(route.token, secure=phttp.came_over_https(head))

    def transform(first: bytes) -> bytes:
        return phttp.inject_header(first, cookie) or first

    return transform


def _addr(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _token_page(
    head: phttp.RequestHead, status: int, message: str | None, *, clear_cookie: bool
) -> bytes:
    # Imported here: the page ships with the console's assets, and most connections never
    # need it.
    from arp.command.console import token_page, token_page_headers

    return phttp.page_response(
        status,
        token_page(message),
        token_page_headers(),
        head_only=head.method == "HEAD",
        extra=phttp.clear_cookie_header() if clear_cookie else b"",
    )


async def _reply(link: Link, status: int, message: str) -> None:
    """Answer with the relay's own error response, then close without resetting unread input."""
    await _send_and_close(link, phttp.error_response(status, message, origin="arps"))


async def _send_and_close(link: Link, response: bytes) -> None:
    """Send a complete response, then close without resetting unread input."""
    try:
        async with asyncio.timeout(2):
            await link.send(response)
            link.shutdown_write()
            # Read what the peer still sends so closing does not turn into a reset that
            # would destroy the response before the peer read it.
            total = 0
            while total < 1 << 20:
                chunk = await link.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
    except (TimeoutError, OSError):
        pass
    finally:
        link.close()
