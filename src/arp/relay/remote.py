"""Serving, on this node, the clients that other cluster nodes hold.

- `Remote.forward`: a connection (or one request) for a client this node does not hold is
  handed to the node that does, over the peer link (`arp.relay.peer.carry`), and joined to it
  byte for byte (`arp.net.bridge`). The caller sees one relay.
- `RemotePorts`: every node listens on every dedicated TCP port granted in the cluster, so a
  raw TCP client may dial any node. After each lease renewal the node reads the grants
  (`Cluster.tcp_grants`) and binds the ports held elsewhere (within its own ``--tcp-ports``
  range), closing those no longer granted; a client that registers here with such a port takes
  it over from the remote listener first (`release`).

Imported only with ``--cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from arp.errors import ArpError, NotFound
from arp.net.bridge import bridge, reset
from arp.net.links import Link, SocketLink
from arp.net.sockets import accept_loop, listen
from arp.relay.cluster import Cluster, ClusterUnavailable
from arp.relay.peer import carry, client_tls

if TYPE_CHECKING:
    from arp.relay.server import Relay

log = logging.getLogger(__name__)


class Remote:
    """Hands connections for clients held elsewhere to their node."""

    def __init__(self, relay: Relay, cluster: Cluster) -> None:
        self.relay = relay
        self.cluster = cluster
        settings = relay.config.cluster
        assert settings is not None
        self.settings = settings
        self._tls: ssl.SSLContext | None = client_tls(settings, relay.config.tls_cert)

    async def holder(self, client_id: str) -> str | None:
        """The other node holding `client_id`, None when no node does (or this one)."""
        try:
            node = await self.cluster.locate(client_id)
        except ClusterUnavailable:
            return None
        return node if node != self.cluster.node_id else None

    async def open(self, client_id: str, tcp_port: int | None = None) -> tuple[Link, bytes]:
        """A raw link carried by the node holding `client_id`, and the first bytes it sent;
        `ArpError` (its status for the public answer) when there is none or it refused."""
        node = await self.holder(client_id)
        if node is None:
            raise NotFound(f"no client is registered with token {client_id[:128]}")
        try:
            peer = await self.cluster.peer_of(node)
        except ClusterUnavailable as exc:
            raise ArpError(exc.message, status=503) from None
        if peer is None:
            self.cluster.invalidate(client_id)
            raise ArpError(f"the relay node holding {client_id} is gone", status=503)
        link, first = await carry(
            self.settings,
            peer,
            client_id,
            tcp_port=tcp_port,
            tls=self._tls,
            limits=self.relay.config.limits,
        )
        self.cluster.forwarded += 1
        return link, first

    async def join(self, public: Link, link: Link, first: bytes, initial: bytes) -> bool:
        """Splice `public` to a carried `link`: `first` (the holder's bytes already read) goes
        to the public side, `initial` (the caller's) to the holder. False when it broke."""
        self.relay.public.count += 1
        try:
            if first:
                try:
                    await public.send(first)
                except OSError:
                    reset(public)
                    link.close()
                    return False
            return await bridge(public, link, self.relay.config.limits.copy_chunk, initial=initial)
        finally:
            self.relay.public.count -= 1


class RemotePorts:
    """Listeners for the dedicated TCP ports other nodes' clients hold."""

    def __init__(self, relay: Relay, remote: Remote) -> None:
        self.relay = relay
        self.remote = remote
        self._ports: dict[int, tuple[socket.socket, asyncio.Task[None], str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ports(self) -> dict[int, str]:
        return {port: held[2] for port, held in self._ports.items()}

    async def sync(self) -> None:
        """Listen on the ports granted to clients held elsewhere; stop on the others."""
        try:
            grants = await self.remote.cluster.tcp_grants()
        except ClusterUnavailable:
            return  # keep what is bound until Redis answers again
        allowed = self.relay.config.tcp_ports
        local = {p for s in self.relay.clients.values() for p in s.tcp_ports}
        wanted = {
            port: client_id
            for port, client_id in grants.items()
            if allowed is not None and port in allowed and port not in local
        }
        for port in list(self._ports):
            if wanted.get(port) != self._ports[port][2]:
                await self.release(port)
        for port, client_id in wanted.items():
            if port not in self._ports:
                self._bind(port, client_id)

    def _bind(self, port: int, client_id: str) -> None:
        cfg = self.relay.config
        try:
            listener = listen(cfg.bind, port, cfg.limits)
        except OSError as exc:
            log.warning("TCP port %d of %s (held on another node): %s", port, client_id, exc)
            return

        async def serve(sock: socket.socket) -> None:
            await self._serve(sock, client_id, port)

        task = asyncio.get_running_loop().create_task(
            accept_loop(listener, serve, cfg.limits, self._tasks, f"tcp:{port}@remote")
        )
        self._ports[port] = (listener, task, client_id)
        log.info("serving TCP port %d for client %s held on another node", port, client_id)

    async def release(self, port: int) -> None:
        """Stop listening on `port` (it is granted here now, or to no one); waits until the
        port is free to bind."""
        held = self._ports.pop(port, None)
        if held is None:
            return
        listener, task, _ = held
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listener.close()

    async def close(self) -> None:
        for port in list(self._ports):
            await self.release(port)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.relay.config.timeouts.shutdown)

    async def _serve(self, sock: socket.socket, client_id: str, port: int) -> None:
        public = SocketLink(sock)
        if self.relay.public.at_limit():
            public.close()
            return
        try:
            link, first = await self.remote.open(client_id, tcp_port=port)
        except ArpError as exc:
            log.debug("TCP port %d: %s", port, exc.message)
            reset(public)  # raw TCP has no way to say why
            return
        await self.remote.join(public, link, first, b"")
