"""Dedicated public TCP ports: holding the ones a client was granted, and serving them.

A client may ask at registration for public ports of its own (PostgreSQL, SSH: protocols with
no token, some where the server speaks first). Whether it may have them is a registration rule
(`arp.relay.registration.check_tcp_ports`); binding them is I/O and lives here, as does the
serving: each connection on such a port takes a tunnel of its client and is spliced raw, the
``StartProxy`` naming the port so the client picks the local service it maps to.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from arp.errors import ArpError
from arp.net.links import SocketLink
from arp.net.sockets import accept_loop, listen
from arp.protocol import frames, proxy_v2
from arp.protocol.tunnel import data_frame
from arp.relay.public import Public
from arp.relay.registry import ClientState, TcpPort
from arp.relay.settings import RelayConfig

log = logging.getLogger(__name__)


class TcpPorts:
    """Binds, serves and releases the dedicated ports of every client."""

    def __init__(self, config: RelayConfig, public: Public, tasks: set[asyncio.Task[None]]) -> None:
        self.config = config
        self.public = public
        self._tasks = tasks
        """The relay's tasks, which the accept loops' handlers join (cancelled at shutdown)."""

    def hold(self, state: ClientState, ports: list[int]) -> None:
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
                await self._serve(sock, state, port)

            grant.task = loop.create_task(
                accept_loop(listener, serve, self.config.limits, self._tasks, f"tcp:{port}")
            )
            state.tcp_ports[port] = grant
            log.info("client %s holds TCP port %d", state.client_id, port)

    @staticmethod
    def release(state: ClientState) -> None:
        """Stop serving every port of `state` (the client is forgotten)."""
        for port in state.tcp_ports.values():
            port.close()
        state.tcp_ports.clear()

    async def _serve(self, sock: socket.socket, state: ClientState, port: int) -> None:
        public = SocketLink(sock)
        if self.public.at_limit():
            public.close()  # raw TCP has no way to say why
            return
        self.public.count += 1
        try:
            tunnel = await self.public.pools.take(state, self.config.timeouts.tunnel_wait)
        except ArpError:
            public.close()
            return
        else:
            opening = frames.encode(frames.StartProxy(tcp_port=port))
            if state.proxy_protocol:
                opening += data_frame(_proxy_header(sock))
            await self.public.splice(state, public, tunnel, opening)
        finally:
            self.public.count -= 1


def _proxy_header(sock: socket.socket) -> bytes:
    """The PROXY v2 header for an accepted connection (LOCAL when its addresses are unknown)."""
    try:
        peer, local = sock.getpeername(), sock.getsockname()
        return proxy_v2.encode((peer[0], peer[1]), (local[0], local[1]))
    except (OSError, ValueError, IndexError):
        return proxy_v2.encode_local()
