"""Serving, on this node, the clients that other cluster nodes hold.

- Remote clients on the public port: for each client another node holds, this node keeps a
  *shadow* `ClientState` whose control is a `RemoteControl`: when the pool asks it for a tunnel
  (``RequestNewProxyConn``) it opens a peer link in tunnel mode (`arp.protocol.peer`), which
  stands for one of the client's tunnels on the holding node, and delivers it to the shadow's
  pool. The public port then routes to the shadow exactly as to a local client (per-request
  routing, tunnel reuse, answers), through `RoutingTable`, the client table it reads: local
  clients first, then shadows. Shadows are kept from the registry after every lease renewal
  (`Remote.sync`) and as soon as a look-up finds one (`Remote.resolve`).
- `Remote.open`: a connection for a client this node does not hold is handed to the node that
  does as a stream, and joined to it byte for byte (`arp.net.passthrough`): dedicated TCP
  ports.
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
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Protocol

from arp.errors import ArpError, NotFound
from arp.net.links import Link, SocketLink
from arp.net.passthrough import join_raw, reset
from arp.net.sockets import accept_loop, listen
from arp.protocol import frames
from arp.relay.cluster import Cluster, ClusterUnavailable
from arp.relay.peer import carry, client_tls
from arp.relay.public import Public
from arp.relay.registry import ClientState, Pools
from arp.relay.settings import RelayConfig


class Host(Protocol):
    """What serving other nodes' clients uses of this node's relay (`arp.relay.server.Relay`)."""

    config: RelayConfig
    clients: dict[str, ClientState]
    pools: Pools
    public: Public

    def public_spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


log = logging.getLogger(__name__)


class RoutingTable(Mapping[str, ClientState]):
    """The client table the public port reads in a cluster: this node's clients (the relay's
    own table, which registration keeps) first, then the shadows of clients held elsewhere.

    A `Mapping`, not a dict subclass: the public port is compiled (`arp.native`), and compiled
    code reads a dict, even a subclass, with the dict's own functions, past these methods."""

    def __init__(self, local: dict[str, ClientState], shadows: dict[str, ClientState]) -> None:
        self.local = local
        self.shadows = shadows

    def get(self, key: str, default: Any = None) -> Any:
        state = self.local.get(key)
        if state is not None:
            return state
        return self.shadows.get(key, default)

    def __getitem__(self, key: str) -> ClientState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return key in self.local or key in self.shadows

    def __len__(self) -> int:
        return len(self.local) + len(self.shadows)

    def __iter__(self) -> Iterator[str]:
        yield from self.local
        yield from (k for k in self.shadows if k not in self.local)


class RemoteControl:
    """The control of a shadow client: a tunnel asked for is a peer link in tunnel mode to the
    node holding the client, delivered to the shadow's pool when it is open."""

    def __init__(self, remote: Remote, state: ClientState, node: str) -> None:
        self.remote = remote
        self.state = state
        self.node = node

    def send(self, message: frames.Message) -> None:
        if isinstance(message, frames.RequestNewProxyConn):
            self.remote.relay.public_spawn(self._open(message.proxy_conn_id))

    def close(self) -> None:
        pass

    async def _open(self, proxy_conn_id: str) -> None:
        state, remote = self.state, self.remote
        try:
            link, _ = await remote.open(state.client_id, tunnel=True, node=self.node)
        except ArpError as exc:
            state.requested.pop(proxy_conn_id, None)
            remote.gone(state, exc)
            return
        if state.control is not self or proxy_conn_id not in state.requested:
            link.close()  # the shadow was dropped meanwhile
            return
        state.requested.pop(proxy_conn_id, None)
        remote.relay.pools.deliver(state, link)


class Remote:
    """Hands connections and requests for clients held elsewhere to their node."""

    def __init__(self, relay: Host, cluster: Cluster) -> None:
        self.relay = relay
        self.cluster = cluster
        settings = relay.config.cluster
        assert settings is not None
        self.settings = settings
        self._tls: ssl.SSLContext | None = client_tls(settings, relay.config.tls_cert)
        self.shadows: dict[str, ClientState] = {}
        """Clients other nodes hold, by id (their `ClientState` has a `RemoteControl`)."""
        self.table = RoutingTable(relay.clients, self.shadows)

    def shadow(self, client_id: str, node: str) -> ClientState:
        """The shadow of `client_id` held on `node` (a new one if it moved)."""
        state = self.shadows.get(client_id)
        control = state.control if state is not None else None
        if state is not None and isinstance(control, RemoteControl) and control.node == node:
            return state
        if state is not None:
            self.drop(client_id)
        state = ClientState(client_id=client_id)
        state.control = RemoteControl(self, state, node)
        self.shadows[client_id] = state
        return state

    def drop(self, client_id: str) -> None:
        """Forget the shadow of `client_id`: its idle peer links close, its waiters fail."""
        state = self.shadows.pop(client_id, None)
        if state is not None:
            state.control = None
            state.disconnected_at = time.monotonic()
            self.relay.pools.drop(state)

    def gone(self, state: ClientState, exc: ArpError) -> None:
        """Opening a tunnel for a shadow failed: its node is gone or no longer holds it."""
        log.info("client %s on another node: %s", state.client_id, exc.message)
        self.cluster.invalidate(state.client_id)
        if self.shadows.get(state.client_id) is state:
            self.drop(state.client_id)
            # Where is it now? (Its node died and it registered elsewhere, most likely.)
            self.relay.public_spawn(self._relocate(state.client_id))

    async def _relocate(self, client_id: str) -> None:
        with contextlib.suppress(ArpError):
            await self.resolve(client_id)

    async def sync(self) -> None:
        """Keep a shadow for every client another node holds, and none for the others."""
        try:
            holders = await self.cluster.all_clients()
        except ClusterUnavailable:
            return
        me = self.cluster.node_id
        for client_id in list(self.shadows):
            if holders.get(client_id) in (None, me) or client_id in self.relay.clients:
                self.drop(client_id)
        bound = self.cluster.bounds.max_remote_clients
        for client_id, node in holders.items():
            if node != me and client_id not in self.relay.clients:
                if client_id not in self.shadows and len(self.shadows) >= bound:
                    log.warning(
                        "more than %d clients on other nodes: not all reachable here", bound
                    )
                    return
                self.shadow(client_id, node)

    async def resolve(self, client_id: str) -> ClientState | None:
        """The shadow of `client_id` if another node holds it (asks Redis if need be)."""
        state = self.shadows.get(client_id)
        if state is not None:
            return state
        node = await self.holder(client_id)
        if node is None or client_id in self.relay.clients:
            return None
        if len(self.shadows) >= self.cluster.bounds.max_remote_clients:
            return None
        return self.shadow(client_id, node)

    async def holder(self, client_id: str) -> str | None:
        """The other node holding `client_id`, None when no node does (or this one)."""
        try:
            node = await self.cluster.locate(client_id)
        except ClusterUnavailable:
            return None
        return node if node != self.cluster.node_id else None

    async def open(
        self,
        client_id: str,
        tcp_port: int | None = None,
        *,
        tunnel: bool = False,
        node: str | None = None,
    ) -> tuple[Link, bytes]:
        """A raw link carried by the node holding `client_id` (`node`, or the registry's
        answer), and the first bytes it sent; `ArpError` (its status for the public answer)
        when there is none or it refused."""
        node = node or await self.holder(client_id)
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
            tunnel=tunnel,
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
            return await join_raw(
                public, link, self.relay.config.limits.copy_chunk, initial=initial
            )
        finally:
            self.relay.public.count -= 1


class RemotePorts:
    """Listeners for the dedicated TCP ports other nodes' clients hold."""

    def __init__(self, relay: Host, remote: Remote) -> None:
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
