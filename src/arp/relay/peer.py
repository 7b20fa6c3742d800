"""The peer port of a cluster node: other nodes hand it public connections for its clients.

Both ends of the node-to-node link (the messages and proofs are `arp.protocol.peer`):

- `PeerServer` (the node holding the client, A): accepts on ``--peer-port`` (TLS when the node
  has a certificate), challenges the dialling node, verifies its proof, takes a tunnel of the
  client named in the carry request exactly as for a public connection of its own, answers the
  verdict with its own proof, and splices the link to the tunnel: the link is, from then on,
  one more public connection of A's.
- `carry` (the node that received the connection, B): dials A, proves itself, asks, checks A's
  proof, and hands back the raw link, which the caller joins to the public connection
  (`arp.net.passthrough`). A refusal comes back as the `ArpError` A would have answered with.

One link carries one public connection (or, with per-request routing, one request): no
multiplexing, so a slow or broken connection holds up nothing else, and the data path is the
ordinary splice on both nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Protocol

from arp.config import Limits
from arp.errors import ArpError, NotFound, RemoteProtocolError, Unavailable
from arp.net.links import Link, SocketLink, open_link, wrap_tls_server
from arp.net.passthrough import join_raw
from arp.net.sockets import accept_loop, listen
from arp.protocol import frames
from arp.protocol import peer as pp
from arp.protocol.tunnel import data_frame
from arp.relay.public import Public
from arp.relay.registry import ClientState, Pools
from arp.relay.settings import ClusterSettings, RelayConfig


class Host(Protocol):
    """What the peer port uses of the relay it serves (`arp.relay.server.Relay`)."""

    config: RelayConfig
    clients: dict[str, ClientState]
    pools: Pools
    public: Public


log = logging.getLogger(__name__)


class PeerUnreachable(Unavailable):
    """The node holding the client could not be reached or did not prove itself (503)."""


def split_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; ValueError naming the value."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def client_tls(settings: ClusterSettings, cert: str | None) -> ssl.SSLContext | None:
    """How this node dials its peers: TLS when it has a certificate itself (every node of a
    cluster is set up alike), trusting the system's CAs and its own certificate (a private CA
    or one certificate shared by the nodes). Host names are not checked: nodes are dialled by
    the address they advertise, and the HMAC proofs say who answered."""
    if cert is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cert)
    context.check_hostname = False
    return context


async def _read(link: Link, decoder: pp.PeerDecoder) -> pp.PeerMessage:
    while (message := decoder.next()) is None:
        data = await link.recv(65536)
        if not data:
            raise ConnectionResetError("the peer link closed during its handshake")
        decoder.feed(data)
    return message


class PeerServer:
    """The listener of `--peer-port` and what it serves."""

    def __init__(self, relay: Host, settings: ClusterSettings, tls: ssl.SSLContext | None) -> None:
        self.relay = relay
        self.settings = settings
        self.bounds = settings.bounds
        self._tls = tls
        self._listener: socket.socket | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = settings.peer_port
        self.count = 0
        self.carried = 0
        """Connections carried for other nodes since the start."""

    @property
    def advertise(self) -> str:
        if self.settings.advertise:
            return self.settings.advertise
        host = self.relay.config.bind
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        cfg = self.relay.config
        self._listener = listen(cfg.bind, self.settings.peer_port, cfg.limits, keepalive=True)
        self.port = self._listener.getsockname()[1]
        self._loop_task = asyncio.get_running_loop().create_task(
            accept_loop(self._listener, self._serve, cfg.limits, self._tasks, "peer")
        )
        log.info(
            "cluster node %s: peer port %d (%s)",
            self.settings.node_id,
            self.port,
            "TLS" if self._tls else "plain",
        )

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.relay.config.timeouts.shutdown)

    async def _serve(self, sock: socket.socket) -> None:
        link: Link = SocketLink(sock)
        if self.count >= self.bounds.max_peer_links:
            link.close()
            return
        self.count += 1
        try:
            await self._carry(link, sock)
        except (RemoteProtocolError, TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.warning("peer port: %s", getattr(exc, "message", None) or exc)
            link.close()
        except BaseException:
            link.close()
            raise
        finally:
            self.count -= 1

    async def _carry(self, link: Link, sock: socket.socket) -> None:
        relay, secret, me = self.relay, self.settings.secret, self.settings.node_id
        decoder = pp.PeerDecoder(self.bounds.max_peer_frame)
        mine = pp.new_nonce()
        async with asyncio.timeout(self.bounds.peer_handshake):
            if self._tls is not None:
                link = await wrap_tls_server(sock, self._tls, self.bounds.peer_handshake)
            await link.send(
                pp.encode(pp.Challenge(node=me, nonce=mine), self.bounds.max_peer_frame)
            )
            answer: pp.Answer = pp.expect(await _read(link, decoder), pp.Answer)
            pp.verify(pp.mac(secret, "dial", mine, answer.nonce, answer.node, me), answer.mac)
            carry: pp.Carry = pp.expect(await _read(link, decoder), pp.Carry)
        proof = pp.mac(secret, "listen", answer.nonce, mine, me, answer.node)

        async def refuse(exc: ArpError) -> None:
            verdict = pp.Verdict(mac=proof, status=exc.status, error=exc.message)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(relay.config.timeouts.farewell):
                    await link.send(pp.encode(verdict, self.bounds.max_peer_frame))
            link.close()

        state = relay.clients.get(carry.client_id)
        if state is None:
            await refuse(NotFound(f"no client is registered with token {carry.client_id[:128]}"))
            return
        if carry.tcp_port is not None and carry.tcp_port not in state.tcp_ports:
            await refuse(NotFound(f"client {state.client_id} holds no TCP port {carry.tcp_port}"))
            return
        try:
            tunnel = await relay.pools.take(state, relay.config.timeouts.tunnel_wait)
        except ArpError as exc:
            await refuse(exc)
            return
        try:
            await link.send(pp.encode(pp.Verdict(mac=proof), self.bounds.max_peer_frame))
        except BaseException:
            relay.public.tunnel_done(state, tunnel, b"")  # unused: back to the pool
            raise
        rest = decoder.take_rest()
        self.carried += 1
        if carry.tunnel:
            # The link is this tunnel now, for the other node: bytes pass unchanged.
            relay.public.count += 1
            try:
                await join_raw(link, tunnel, relay.config.limits.copy_chunk, initial=rest)
            finally:
                relay.public.count -= 1
            return
        if carry.tcp_port is None:
            opening = frames.START_HTTP + data_frame(rest)
        else:
            opening = frames.encode(frames.StartProxy(tcp_port=carry.tcp_port)) + data_frame(rest)
        relay.public.count += 1
        try:
            await relay.public.splice(state, link, tunnel, opening)
        finally:
            relay.public.count -= 1


async def carry(
    settings: ClusterSettings,
    peer_addr: str,
    client_id: str,
    *,
    tcp_port: int | None,
    tls: ssl.SSLContext | None,
    limits: Limits,
    tunnel: bool = False,
) -> tuple[Link, bytes]:
    """A raw link to the node at `peer_addr` that carries one connection to `client_id`, and
    the connection's first bytes that came with the verdict (a server that speaks first);
    raises the `ArpError` that node answered with, or `PeerUnreachable`."""
    bounds = settings.bounds
    host, port = split_addr(peer_addr)
    try:
        link = await open_link(
            host,
            port,
            timeout=bounds.peer_connect,
            limits=limits,
            tls=tls,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise PeerUnreachable(f"the relay node holding {client_id} is unreachable: {exc}") from None
    try:
        decoder = pp.PeerDecoder(bounds.max_peer_frame)
        mine = pp.new_nonce()
        async with asyncio.timeout(bounds.peer_handshake):
            challenge: pp.Challenge = pp.expect(await _read(link, decoder), pp.Challenge)
            proof = pp.mac(
                settings.secret, "dial", challenge.nonce, mine, settings.node_id, challenge.node
            )
            answer = pp.Answer(node=settings.node_id, nonce=mine, mac=proof)
            request = pp.Carry(client_id=client_id, tcp_port=tcp_port, tunnel=tunnel)
            await link.send(
                pp.encode(answer, bounds.max_peer_frame) + pp.encode(request, bounds.max_peer_frame)
            )
        async with asyncio.timeout(bounds.peer_answer):
            verdict: pp.Verdict = pp.expect(await _read(link, decoder), pp.Verdict)
        expected = pp.mac(
            settings.secret, "listen", mine, challenge.nonce, challenge.node, settings.node_id
        )
        pp.verify(expected, verdict.mac)
    except (RemoteProtocolError, OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
        link.close()
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise PeerUnreachable(
            f"the relay node holding {client_id} did not carry: {reason}"
        ) from None
    if verdict.status:
        link.close()
        raise ArpError(verdict.error or "refused by the holding node", status=verdict.status)
    return link, decoder.take_rest()
