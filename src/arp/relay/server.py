"""arps: the relay process. Its listeners, its lifecycle, and the control and proxy ports.

This module assembles the relay's parts and owns what lives as long as the process:
- the control port: a client's ``Register`` (rules: `arp.relay.registration`), then heartbeats;
- the proxy port: tunnels announced by ``NewProxyConn`` go to their client's pool
  (`arp.relay.registry`);
- the public port (`arp.relay.public`) and the dedicated TCP ports (`arp.relay.tcp_ports`);
- one clock (`_tick`) for heartbeats, pool top-ups and forgetting clients offline too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from arp import __version__
from arp.errors import RemoteProtocolError
from arp.lifecycle import Service
from arp.net.links import Link, SocketLink, read_message, wrap_tls_server
from arp.net.sockets import accept_loop, listen, raise_fd_limit, tune
from arp.protocol import frames
from arp.protocol.forwarded import caller_ip
from arp.relay.access import AccessIndex
from arp.relay.limits import RegistrationGate
from arp.relay.public import Public
from arp.relay.registration import Known, Refuse, Rules, decide
from arp.relay.registry import ClientState, ControlLink, Pools, token_urlsafe
from arp.relay.settings import RelayConfig
from arp.relay.tcp_ports import TcpPorts

if TYPE_CHECKING:
    import ssl

    from arp.relay.cluster import Cluster
    from arp.relay.peer import PeerServer
    from arp.relay.remote import Remote, RemotePorts

__all__ = ["Relay", "RelayConfig"]

log = logging.getLogger(__name__)


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
            max_tunnels=config.limits.max_client_tunnels,
            request_deadline=config.timeouts.tunnel_request,
        )
        self._tls: ssl.SSLContext | None = None
        if config.tls_cert and config.tls_key:
            import ssl  # here: a relay without TLS does without OpenSSL (`arp.runtime`)

            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(config.tls_cert, config.tls_key)
        self._listeners: list[socket.socket] = []
        self._control_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.public = Public(
            config, self.clients, self.pools, self._tasks, plain_tunnels=self._tls is None
        )
        self.tcp_ports = TcpPorts(config, self.public, self._tasks)
        self.registrations = RegistrationGate(config.registration)
        self._rules = Rules(
            version=__version__,
            auth_token=config.auth_token,
            tcp_ports=config.tcp_ports,
            max_clients=config.limits.max_clients,
            max_tcp_ports_per_client=config.limits.max_tcp_ports_per_client,
        )
        self.control_port = config.control_port
        self.proxy_port = config.proxy_port
        self.public_port = config.public_port
        self.cluster: Cluster | None = None
        """`arps --cluster`: this node's part of the shared registry (imported only then)."""
        self.peers: PeerServer | None = None
        self.remote: Remote | None = None
        """Hands connections for clients held by other nodes to them (cluster only)."""
        self.remote_ports: RemotePorts | None = None
        self._releases: set[asyncio.Task[None]] = set()
        """Cluster releases under way (awaited at a graceful stop, not cancelled)."""
        self._went: asyncio.Event | None = None
        """Set when a client goes offline (a graceful stop waits for its clients to move)."""
        self._registering: set[str] = set()
        """client_ids whose registration is between its cluster claim and its answer."""
        if config.cluster is not None:
            from arp.relay.cluster import Cluster
            from arp.relay.peer import PeerServer
            from arp.relay.remote import Remote, RemotePorts

            self.cluster = Cluster(config.cluster, on_lost=self._lost)
            self.peers = PeerServer(self, config.cluster, self._tls)
            self.remote = Remote(self, self.cluster)
            self.remote_ports = RemotePorts(self, self.remote)
            self.cluster.on_renewed.append(self.remote.sync)
            self.cluster.on_renewed.append(self.remote_ports.sync)
            # The public port reads local clients first, then those other nodes hold.
            self.public.clients = self.remote.table
            self.public.resolve = self.remote.resolve

    def public_spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as one of the relay's tasks (cancelled at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def node_id(self) -> str | None:
        return self.cluster.node_id if self.cluster is not None else None

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
            (public_sock, self.public.arrived, "public"),
        ):
            self._loops.append(
                loop.create_task(accept_loop(sock, handler, limits, self._tasks, name))
            )
        self._loops.append(loop.create_task(self._tick()))
        if self.peers is not None and self.cluster is not None:
            try:
                await self.peers.start()
                await self.cluster.start(self.peers.advertise)
                if self.remote is not None and self.remote_ports is not None:
                    await self.remote.sync()
                    await self.remote_ports.sync()
            except BaseException:
                await self._shutdown()
                raise
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
        """Stop accepting, drop every link, and wait a bounded time for handlers to end.

        In a cluster the node first tells its clients to move (a ``Heartbeat`` carrying
        ``move``, a field older clients ignore) and gives back its claims, so the clients
        register elsewhere at once instead of waiting for its leases to run out."""
        if self.cluster is not None:
            await self._hand_over()
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
        self.public.abort()
        for task in list(self._tasks):
            task.cancel()
        pending = [*self._loops, *self._tasks]
        if pending:
            await asyncio.wait(pending, timeout=self.config.timeouts.shutdown)
        if self._control_server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.timeouts.shutdown):
                    await self._control_server.wait_closed()
        if self.remote_ports is not None:
            await self.remote_ports.close()
        if self.peers is not None:
            await self.peers.close()
        if self.cluster is not None:
            await self.cluster.close()

    async def _hand_over(self) -> None:
        """Tell every client to move to another node, and wait (bounded) for them to go."""
        assert self.cluster is not None
        bounds = self.cluster.bounds
        online = [s for s in self.clients.values() if s.control is not None]
        for state in online:
            assert state.control is not None
            state.control.send(frames.Heartbeat(seq=0, move=True))
        if online:
            log.info("told %d client(s) to move to another node", len(online))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bounds.move_grace):
                while any(s.control is not None for s in online):
                    self._went = asyncio.Event()
                    await self._went.wait()
        for state in online:
            if state.control is not None:
                self._went_offline(state)
        if self._releases:
            await asyncio.wait(list(self._releases), timeout=bounds.redis)

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
        link = ControlLink(writer, limits.max_frame, limits.control_send_buffer)
        decoder = frames.FrameDecoder(limits.max_frame)
        state: ClientState | None = None
        try:
            first = await read_message(reader.read, decoder, timeouts.handshake)
            if not isinstance(first, frames.Register):
                raise RemoteProtocolError(f"the first message must be Register, not {first.TYPE}")
            state = await self._register(first, link, peer)
            if state is None:
                return
            log.info("client %s registered from %s", state.client_id, _addr(peer))
            self.pools.top_up(state)
            while True:
                message = await read_message(reader.read, decoder, timeouts.heartbeat_timeout)
                if isinstance(message, frames.ProxyConnRefused):
                    self.pools.refused(state, message.proxy_conn_id)
                elif not isinstance(message, frames.Heartbeat):
                    raise RemoteProtocolError(f"unexpected {message.TYPE} on the control link")
                state.stats.seen()
        except TimeoutError:
            who = state.client_id if state else _addr(peer)
            log.info("control link of %s silent too long; closing it", who)
        except RemoteProtocolError as exc:
            log.warning("control link from %s: %s", _addr(peer), exc.message)
            link.send(frames.Error(message=exc.message))
        except (OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError is an OSError
            log.debug("control link from %s ended: %s", _addr(peer), exc)
        finally:
            if state is not None and state.control is link:
                self._went_offline(state)
                if self.cluster is not None:
                    # In a cluster Redis keeps what a client comes back to (its claim, its
                    # ports); this node lets go of it so it serves the client wherever it goes.
                    self._forget(state)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeouts.farewell):
                    await writer.wait_closed()

    async def _register(
        self, msg: frames.Register, link: ControlLink, peer: Any = None
    ) -> ClientState | None:
        """Apply a Register; answers it either way; returns the state when it succeeded."""

        def refuse(error: str, *, retryable: bool, reason: str) -> None:
            log.warning("registration of %r refused: %s", msg.client_id[:64], error)
            self.public.stats.refuse(reason)
            link.send(frames.RegisterResult(success=False, error=error, retryable=retryable))

        state = self.clients.get(msg.client_id)
        known = None if state is None else Known(state.control is not None, state.resume_key)
        holders = (
            {port: s.client_id for s in self.clients.values() for port in s.tcp_ports}
            if msg.tcp_ports
            else {}
        )
        decision = decide(msg, known, len(self.clients), holders, self._rules)
        if isinstance(decision, Refuse):
            refuse(decision.error, retryable=decision.retryable, reason=decision.reason)
            return None
        resume_key = state.resume_key if state is not None else token_urlsafe(24)
        if self.cluster is not None:
            if msg.client_id in self._registering:
                refuse(
                    f"client_id {msg.client_id} is in use by another live connection",
                    retryable=True,
                    reason="in_use",
                )
                return None
            self._registering.add(msg.client_id)
            try:
                refused = await self._claim(msg, resume_key)
            finally:
                self._registering.discard(msg.client_id)
            if refused is not None:
                refuse(refused[0], retryable=True, reason=refused[1])
                return None
            if link.writer.is_closing():
                return None  # it left while Redis answered; the claim is released below
            state = self.clients.get(msg.client_id)
        if decision.takeover and state is not None and state.control is not None:
            log.info("client %s took over its own registration", msg.client_id)
            old = state.control
            self._went_offline(state, release=False, takeover=True)
            old.close()
        problem = AccessIndex.check(msg.access_token_hashes, self.config.limits.max_access_tokens)
        if problem is not None:
            refuse(problem, retryable=False, reason="access_tokens")
            return None
        if state is None:
            key, why = self._anonymous_gate(peer)
            if key is None:
                refuse(
                    f"too many registrations from this address ({why})",
                    retryable=True,
                    reason="per_address",
                )
                return None
            state = ClientState(client_id=msg.client_id, resume_key=resume_key, address_key=key)
            self.clients[msg.client_id] = state
        if self.remote is not None:
            self.remote.drop(msg.client_id)  # held here from now on
        if self.remote_ports is not None:
            for port in msg.tcp_ports:
                await self.remote_ports.release(port)  # granted here now: this node binds it
        try:
            self.tcp_ports.hold(state, msg.tcp_ports)
        except OSError as exc:
            refuse(str(exc.strerror or exc), retryable=True, reason="tcp_port_bind")
            if not state.tcp_ports and state.control is None and state.disconnected_at is None:
                del self.clients[msg.client_id]
                self.registrations.forget(state.address_key)
            self._release(msg.client_id)
            return None
        problem = self.public.access.claim(state, msg.access_token_hashes)
        if problem is not None:
            refuse(problem, retryable=False, reason="access_tokens")
            if not state.tcp_ports and state.control is None and state.disconnected_at is None:
                del self.clients[msg.client_id]
                self.registrations.forget(state.address_key)
            self._release(msg.client_id)
            return None
        state.control = link
        state.disconnected_at = None
        state.stats.seen()
        state.forwarded_headers = msg.forwarded_headers
        state.proxy_protocol = msg.proxy_protocol
        link.send(
            frames.RegisterResult(
                success=True,
                resume_key=state.resume_key,
                tcp_ports=sorted(state.tcp_ports),
                public_port=self.public_port,
                tunnel_protocol=frames.TUNNEL_PROTOCOL,
                max_tunnels=self.config.limits.max_client_tunnels,
                access_tokens=len(state.access_hashes),
            )
        )
        return state

    async def _claim(self, msg: frames.Register, resume_key: str) -> tuple[str, str] | None:
        """Claim the client cluster-wide; (error, reason) when another node keeps it."""
        from arp.relay.cluster import ClusterUnavailable
        from arp.relay.lease import Claimed, HeldElsewhere

        assert self.cluster is not None
        try:
            outcome = await self.cluster.claim(
                msg.client_id,
                presented_resume=msg.resume_key,
                resume_key=resume_key,
                tcp_ports=msg.tcp_ports,
            )
        except ClusterUnavailable as exc:
            return exc.message, "cluster"
        if isinstance(outcome, Claimed):
            if outcome.moved_from is not None:
                log.info("client %s moved here from node %s", msg.client_id, outcome.moved_from)
            return None
        if isinstance(outcome, HeldElsewhere):
            return f"client_id {msg.client_id} {outcome.error.removeprefix('client_id ')}", "in_use"
        return outcome.error, "tcp_ports"

    def _release(self, client_id: str) -> None:
        """Give back this node's cluster claim on `client_id` (in the background)."""
        if self.cluster is None:
            return
        held = self.cluster.claim_of(client_id)
        if held is None:
            return
        cluster = self.cluster

        async def release() -> None:
            with contextlib.suppress(Exception):
                await cluster.release(client_id, held)

        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _lost(self, client_id: str) -> None:
        """The cluster says `client_id` registered on another node: let it go here."""
        state = self.clients.get(client_id)
        if state is None:
            return
        if state.control is not None:
            state.control.send(frames.Error(message="this client registered on another node"))
        self._forget(state)

    def _anonymous_gate(self, peer: Any) -> tuple[str | None, str]:
        """Without --auth-token anyone may register: a new client counts against its
        address's rate and count (`arp.relay.limits.RegistrationGate`); ("", "") otherwise."""
        if self.config.auth_token or not isinstance(peer, tuple) or not peer:
            return "", ""
        return self.registrations.admit(caller_ip(str(peer[0])))

    def _went_offline(
        self, state: ClientState, *, release: bool = True, takeover: bool = False
    ) -> None:
        state.control = None
        if self._went is not None:
            self._went.set()
        if release:
            self._release(state.client_id)
        state.disconnected_at = time.monotonic()
        # The link died: what its tunnels carry ends as resets. A takeover (the same arpc back
        # on a new link) keeps them: those tunnels are alive.
        self.pools.drop(state, abort_carried=not takeover)
        log.info(
            "client %s offline (state kept %.0f s)", state.client_id, self.config.timeouts.retention
        )

    def _forget(self, state: ClientState) -> None:
        if state.control is not None:
            state.control.close()
            state.control = None
            self._release(state.client_id)
        self.pools.drop(state)
        self.tcp_ports.release(state)
        self.public.access.release(state)
        if self.clients.pop(state.client_id, None) is state:
            self.registrations.forget(state.address_key)

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
            self.public.sweep_idle(now)
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
            del state.requested[message.proxy_conn_id]
            self.pools.deliver(state, link)
        except RemoteProtocolError as exc:
            log.warning("proxy port: %s", exc.message)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeouts.farewell):
                    await link.send(frames.encode(frames.Error(message=exc.message)))
            link.close()
        except OSError as exc:  # TimeoutError, ConnectionError and ssl.SSLError are OSErrors
            log.debug("proxy port: tunnel handshake failed: %s", exc)
            link.close()
        except BaseException:
            link.close()
            raise


def _addr(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
