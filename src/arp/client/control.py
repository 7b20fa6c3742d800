"""arpc's link to the relay: register, answer tunnel requests, heartbeat, reconnect forever.

The client never exits because the relay is away: it reconnects with jittered exponential
backoff (capped so a restarted relay is found within seconds) and re-registers, presenting
the resume key of its last registration so it can take back its own id at once. Only a
refusal that retrying cannot mend (wrong secret, a bad client id or port request) ends it.

Each ``RequestNewProxyConn`` opens one tunnel to the proxy port; the tunnel waits idle in the
relay's pool until ``StartProxy`` arrives, then it is joined to the local target. A connection
that ends clean leaves the tunnel open for the next ``StartProxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from arp import __version__
from arp.config import DEFAULT_CONTROL_PORT, DEFAULT_PROXY_PORT, Limits, Timeouts
from arp.errors import RegistrationError, RemoteProtocolError
from arp.lifecycle import Service
from arp.net.backoff import Backoff
from arp.net.links import Link, open_link, read_message
from arp.net.pump import FrameReader, pump
from arp.net.sockets import raise_fd_limit, tune
from arp.protocol import frames
from arp.protocol.http import error_response
from arp.protocol.tunnel import END_FRAME, data_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A local service that tunnels are joined to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClientConfig:
    client_id: str
    http_target: Target
    """Where connections from the relay's shared public port go."""
    server_addr: str = "127.0.0.1"
    control_port: int = DEFAULT_CONTROL_PORT
    proxy_port: int = DEFAULT_PROXY_PORT
    tcp_targets: dict[int, Target] = field(default_factory=dict)
    """Dedicated public TCP port on the relay → the local service it exposes."""
    auth_token: str | None = None
    tls: ssl.SSLContext | None = None
    tls_server_name: str | None = None
    forwarded_headers: bool = True
    """Ask the relay to tell the local service who is calling (X-Forwarded-*)."""
    proxy_protocol: bool = False
    """Ask the relay for a PROXY protocol v2 header in front of each raw TCP port connection."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)


class Client(Service):
    """One arpc instance's relay connection; an async context manager."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_registered: Callable[[frames.RegisterResult], None] | None = None,
    ) -> None:
        self.config = config
        self.on_registered = on_registered
        self.registered = asyncio.Event()
        self.fatal_error: RegistrationError | None = None
        self.last_result: frames.RegisterResult | None = None
        self.registrations = 0
        self._resume_key: str | None = None
        self._tunnels: set[asyncio.Task[None]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    async def start(self) -> None:
        raise_fd_limit()
        self._run_task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop reconnecting, close the control link and every tunnel; idempotent."""
        tasks = [t for t in (self._run_task, *self._tunnels) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.timeouts.shutdown)
        self._closed.set()

    async def wait_closed(self) -> None:
        """Until `close()` ran, or the relay refused us for good (see `fatal_error`)."""
        await self._closed.wait()

    async def wait_registered(self, timeout: float) -> frames.RegisterResult:
        async with asyncio.timeout(timeout):
            await self.registered.wait()
        assert self.last_result is not None
        return self.last_result

    async def _run(self) -> None:
        timeouts = self.config.timeouts
        backoff = Backoff(timeouts.backoff_initial, timeouts.backoff_max)
        target = f"{self.config.server_addr}:{self.config.control_port}"
        while True:
            try:
                await self._session(backoff)
                reason = "the control link closed"
            except RegistrationError as exc:
                if not exc.retryable:
                    log.error("the relay refused this client: %s", exc.message)
                    self.fatal_error = exc
                    self._closed.set()
                    return
                reason = f"the relay refused for now: {exc.message}"
            except (OSError, TimeoutError, RemoteProtocolError, ssl.SSLError, EOFError) as exc:
                reason = str(exc) or type(exc).__name__
            delay = backoff.next_delay()
            log.warning("relay %s: %s; reconnecting in %.1f s", target, reason, delay)
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        """One control connection: register, then serve it until it ends."""
        cfg, timeouts = self.config, self.config.timeouts
        async with asyncio.timeout(timeouts.connect):
            reader, writer = await asyncio.open_connection(
                cfg.server_addr,
                cfg.control_port,
                ssl=cfg.tls,
                server_hostname=(cfg.tls_server_name or cfg.server_addr) if cfg.tls else None,
                ssl_handshake_timeout=timeouts.handshake if cfg.tls else None,
                limit=cfg.limits.max_frame + 8,
            )
        heartbeat: asyncio.Task[None] | None = None
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                tune(sock, cfg.limits, keepalive=True)
            writer.write(
                frames.encode(
                    frames.Register(
                        client_id=cfg.client_id,
                        auth_token=cfg.auth_token,
                        resume_key=self._resume_key,
                        tcp_ports=sorted(cfg.tcp_targets),
                        version=__version__,
                        tunnel_protocol=frames.TUNNEL_PROTOCOL,
                        forwarded_headers=cfg.forwarded_headers,
                        proxy_protocol=cfg.proxy_protocol,
                    )
                )
            )
            decoder = frames.FrameDecoder(cfg.limits.max_frame)
            result = await read_message(reader.read, decoder, timeouts.handshake)
            if isinstance(result, frames.Error):
                raise RegistrationError(result.message, retryable=True)
            if not isinstance(result, frames.RegisterResult):
                raise RemoteProtocolError(f"expected RegisterResult, got {result.TYPE}")
            if not result.success:
                raise RegistrationError(
                    result.error or "registration refused", retryable=result.retryable
                )
            if result.tunnel_protocol != frames.TUNNEL_PROTOCOL:
                raise RegistrationError(
                    f"the relay speaks tunnel protocol {result.tunnel_protocol} and this client "
                    f"(arpc {__version__}) speaks {frames.TUNNEL_PROTOCOL}: "
                    "run the same ARP version on both ends",
                    retryable=False,
                )
            self._resume_key = result.resume_key
            self.last_result = result
            self.registrations += 1
            backoff.reset()
            self.registered.set()
            if self.on_registered is not None:
                self.on_registered(result)
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(writer))
            while True:
                message = await read_message(reader.read, decoder, timeouts.heartbeat_timeout)
                if isinstance(message, frames.RequestNewProxyConn):
                    self._open_tunnel(message.proxy_conn_id)
                elif isinstance(message, frames.Error):
                    log.warning("relay says: %s", message.message)
                elif not isinstance(message, frames.Heartbeat):
                    raise RemoteProtocolError(f"unexpected {message.TYPE} on the control link")
        finally:
            self.registered.clear()
            if heartbeat is not None:
                heartbeat.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def _heartbeat(self, writer: asyncio.StreamWriter) -> None:
        seq = 0
        while not writer.is_closing():
            await asyncio.sleep(self.config.timeouts.heartbeat_interval)
            seq += 1
            writer.write(frames.encode(frames.Heartbeat(seq=seq)))

    def _open_tunnel(self, proxy_conn_id: str) -> None:
        if len(self._tunnels) >= self.config.limits.max_client_tunnels:
            log.warning("not opening a tunnel: %d are open already (the limit)", len(self._tunnels))
            return
        task = asyncio.get_running_loop().create_task(self._tunnel(proxy_conn_id))
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)

    async def _tunnel(self, proxy_conn_id: str) -> None:
        """One tunnel: announce it, then carry one connection after another while each ends
        clean; the relay keeps it in its pool between them."""
        cfg, timeouts = self.config, self.config.timeouts
        tunnel: Link | None = None
        try:
            tunnel = await open_link(
                cfg.server_addr,
                cfg.proxy_port,
                timeout=timeouts.connect,
                limits=cfg.limits,
                tls=cfg.tls,
                server_hostname=cfg.tls_server_name,
                keepalive=True,
            )
            await tunnel.send(
                frames.encode(
                    frames.NewProxyConn(proxy_conn_id=proxy_conn_id, client_id=cfg.client_id)
                )
            )
            decoder = frames.FrameDecoder(cfg.limits.max_frame)
            while True:
                # Idle in the relay's pool for as long as it takes.
                start = await read_message(tunnel.recv, decoder, None)
                if not isinstance(start, frames.StartProxy):
                    if isinstance(start, frames.Error):
                        log.warning("relay refused a tunnel: %s", start.message)
                    tunnel.close()
                    return
                leftover = await self._join(tunnel, start, decoder.take_rest())
                if leftover is None:
                    return  # the tunnel is closed
                decoder = frames.FrameDecoder(cfg.limits.max_frame)
                decoder.receive_data(leftover)
        except (OSError, TimeoutError, RemoteProtocolError, ssl.SSLError) as exc:
            log.debug("tunnel %s ended: %s", proxy_conn_id, exc)
            if tunnel is not None:
                tunnel.close()
        except BaseException:
            if tunnel is not None:
                tunnel.close()
            raise

    async def _join(self, tunnel: Link, start: frames.StartProxy, initial: bytes) -> bytes | None:
        """Carry one connection; the tunnel's bytes beyond it when it ended clean, else None
        (the tunnel is closed then)."""
        cfg = self.config
        if start.tcp_port is None:
            target = cfg.http_target
        else:
            found = cfg.tcp_targets.get(start.tcp_port)
            if found is None:
                log.warning("relay sent a connection for unknown TCP port %s", start.tcp_port)
                tunnel.close()
                return None
            target = found
        try:
            local = await open_link(
                target.host, target.port, timeout=cfg.timeouts.connect, limits=cfg.limits
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot reach local service %s: %s", target, exc)
            answer = b""
            if start.tcp_port is None:
                answer = error_response(
                    502,
                    f"cannot reach the local service {target}: {exc}",
                    origin=f"arpc {cfg.client_id}",
                )
            return await self._refuse(tunnel, initial, answer)
        return await pump(local, tunnel, cfg.limits, initial=initial)

    async def _refuse(self, tunnel: Link, initial: bytes, answer: bytes) -> bytes | None:
        """End a connection the local service cannot take: send `answer`, drop what the relay
        sends until its end, within a deadline; the tunnel stays usable if that all went well."""
        reader = FrameReader(tunnel, initial, self.config.limits.copy_chunk)
        try:
            async with asyncio.timeout(self.config.timeouts.connect):
                await tunnel.send(data_frame(answer) + END_FRAME)
                if await reader.payloads(lambda _: None):
                    return reader.rest()
        except (OSError, TimeoutError) as exc:
            log.debug("tunnel closed after a refused connection: %s", exc)
        tunnel.close()
        return None
