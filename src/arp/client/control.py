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
from collections.abc import Callable

from arp import __version__
from arp.client.config import ClientConfig, RelayAddress
from arp.client.tunnel import TunnelMachine, join
from arp.errors import RegistrationError, RemoteProtocolError
from arp.lifecycle import Service
from arp.net.backoff import Backoff
from arp.net.links import Link, SocketLink, open_link, read_message
from arp.net.sockets import raise_fd_limit, tune
from arp.protocol import frames
from arp.protocol.access_tokens import token_hash

log = logging.getLogger(__name__)

OUTAGE_REPORT_EVERY = 60.0
"""While the relay stays away, a reminder of the outage at most this often, in seconds."""


class OutageReport:
    """What to log about failed reconnects: the first failure, then at most one reminder per
    `every` seconds with the count, then one line when the relay is back (not a WARNING every
    few seconds for as long as the relay is down). Pure: the caller passes the time."""

    def __init__(self, target: str, every: float = OUTAGE_REPORT_EVERY) -> None:
        self.target = target
        self.every = every
        self.failures = 0
        """Failed attempts since the relay was last reached."""
        self._since = 0.0
        self._reported_at = 0.0
        self._reported_count = 0

    def failed(self, now: float, reason: str, delay: float) -> str | None:
        """The line to log for this failure, or None when it is not due yet."""
        self.failures += 1
        if self.failures == 1:
            self._since = self._reported_at = now
            self._reported_count = 1
            return f"relay {self.target}: {reason}; reconnecting in {delay:.1f} s"
        if now - self._reported_at < self.every:
            return None
        newer = self.failures - self._reported_count
        self._reported_at, self._reported_count = now, self.failures
        return (
            f"relay {self.target} still unreachable after {_duration(now - self._since)}: "
            f"{newer} more failed attempts ({self.failures} in all); last: {reason}"
        )

    def recovered(self, now: float) -> str | None:
        """The line to log when the relay is reached again after failures, else None."""
        if self.failures == 0:
            return None
        failures, self.failures = self.failures, 0
        return (
            f"relay {self.target} reached again after {_duration(now - self._since)} "
            f"and {failures} failed attempt{'s' if failures != 1 else ''}"
        )


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# OpenSSL's verify codes (X509_V_ERR_*) that a person mends in one known way.
_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address
_UNTRUSTED = frozenset({18, 19, 20, 21})  # self-signed, unknown issuer
_NOT_NOW = frozenset({9, 10})  # not yet valid, expired
# What a TLS client reads when the server answers in plain bytes (an arps without --tls-cert
# answers a ClientHello with an Error frame).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
     "HTTP_REQUEST", "HTTPS_PROXY_REQUEST"}
)  # fmt: skip


class TlsSetupError(RegistrationError):
    """TLS to the relay cannot work as configured (certificate, name, or no TLS there):
    retrying cannot mend it, so the client stops and says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def tls_setup_problem(exc: BaseException, config: ClientConfig) -> str | None:
    """What to fix, when `exc` is a TLS failure that only a change of configuration mends;
    None for one that may pass (a link cut mid-handshake) and for any other error."""
    if config.tls is None:
        return None  # no TLS here, and perhaps no ssl module loaded (`arp.runtime.forgo_tls`)
    import ssl

    if not isinstance(exc, ssl.SSLError):
        return None
    where = f"{config.server_addr}:{config.control_port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, why = exc.verify_code, exc.verify_message
        if code in _NAME_MISMATCH:
            name = config.tls_server_name or config.server_addr
            return (
                f"the relay's certificate at {where} does not name {name!r} ({why}): "
                "connect with --server-addr set to a name in the certificate, or give that "
                "name with --tls-server-name"
            )
        if code in _UNTRUSTED:
            return (
                f"the relay's certificate at {where} is not trusted ({why}): give arpc the CA "
                "that signed it with --tls-ca FILE.pem"
            )
        if code in _NOT_NOW:
            return (
                f"the relay's certificate at {where} is not valid now ({why}): renew the "
                "certificate arps serves (--tls-cert), or check this machine's clock"
            )
        return (
            f"the relay's certificate at {where} was refused ({why}): fix the certificate "
            "arps serves (--tls-cert) or the CA given to arpc (--tls-ca)"
        )
    if getattr(exc, "reason", None) in _NOT_TLS:
        return (
            f"the relay at {where} does not speak TLS ({exc.reason}): drop --tls and --tls-ca "
            "if arps runs without --tls-cert, or start arps with --tls-cert and --tls-key"
        )
    return None


class Client(Service):
    """One arpc instance's relay connection; an async context manager.

    `wait_closed()` returns once `close()` ran, or once the relay refused us for good (see
    `fatal_error`)."""

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
        self._outage = OutageReport(", ".join(str(r) for r in config.addresses))
        self._current = 0
        """Index of the relay in `config.addresses` being used (or tried)."""
        self._moving = False
        """The relay told us to move (it is stopping): go to the next one without a pause."""

    @property
    def relay(self) -> RelayAddress:
        """The relay this client registers with now."""
        return self.config.addresses[self._current]

    async def start(self) -> None:
        raise_fd_limit()
        self._run_task = asyncio.get_running_loop().create_task(self._run())

    async def _shutdown(self) -> None:
        """Stop reconnecting, close the control link and every tunnel."""
        tasks = [t for t in (self._run_task, *self._tunnels) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.timeouts.shutdown)

    async def wait_registered(self, timeout: float) -> frames.RegisterResult:
        async with asyncio.timeout(timeout):
            await self.registered.wait()
        assert self.last_result is not None
        return self.last_result

    async def _run(self) -> None:
        timeouts = self.config.timeouts
        backoff = Backoff(timeouts.backoff_initial, timeouts.backoff_max)
        while True:
            target = str(self.relay)
            try:
                await self._session(backoff)
                reason = "the control link closed"
            except RegistrationError as exc:
                if not exc.retryable:
                    log.error("the relay refused this client: %s", exc.message)
                    self.fatal_error = exc
                    self._set_closed()
                    return
                reason = f"the relay refused for now: {exc.message}"
            except (OSError, RemoteProtocolError, EOFError) as exc:
                problem = tls_setup_problem(exc, self.config)
                if problem is not None:
                    log.error("cannot connect to the relay: %s", problem)
                    self.fatal_error = TlsSetupError(problem)
                    self._set_closed()
                    return
                reason = str(exc) or type(exc).__name__
            addresses = self.config.addresses
            if len(addresses) > 1:
                # Another node may take us at once (a dead node's claim runs out meanwhile).
                self._current = (self._current + 1) % len(addresses)
                log.info("relay %s: %s; moving to relay %s", target, reason, self.relay)
            if self._moving:
                self._moving = False
                continue
            delay = backoff.next_delay()
            line = self._outage.failed(asyncio.get_running_loop().time(), reason, delay)
            if line is not None:
                log.warning("%s", line)
            else:
                log.debug("relay %s: %s; reconnecting in %.1f s", target, reason, delay)
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        """One control connection: register, then serve it until it ends."""
        cfg, timeouts, relay = self.config, self.config.timeouts, self.relay
        async with asyncio.timeout(timeouts.connect):
            reader, writer = await asyncio.open_connection(
                relay.host,
                relay.control_port,
                ssl=cfg.tls,
                server_hostname=(cfg.tls_server_name or relay.host) if cfg.tls else None,
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
                        access_token_hashes=sorted({token_hash(t) for t in cfg.access_tokens}),
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
            if cfg.access_tokens and result.access_tokens != len(set(cfg.access_tokens)):
                raise RegistrationError(
                    "the relay does not keep this client's access tokens (an older arps?): it "
                    "would route the bare client_id; upgrade arps or run without --access-token",
                    retryable=False,
                )
            self._resume_key = result.resume_key
            self.last_result = result
            self.registrations += 1
            backoff.reset()
            back = self._outage.recovered(asyncio.get_running_loop().time())
            if back is not None:
                log.info("%s", back)
            self.registered.set()
            if self.on_registered is not None:
                self.on_registered(result)
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(writer))
            while True:
                message = await read_message(reader.read, decoder, timeouts.heartbeat_timeout)
                if isinstance(message, frames.RequestNewProxyConn):
                    self._open_tunnel(message.proxy_conn_id, relay, writer, result)
                elif isinstance(message, frames.Heartbeat) and message.move:
                    log.info("relay %s is stopping; moving to another relay", relay)
                    self._moving = len(cfg.addresses) > 1
                    return
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
                async with asyncio.timeout(timeouts.farewell):
                    await writer.wait_closed()

    async def _heartbeat(self, writer: asyncio.StreamWriter) -> None:
        seq = 0
        while not writer.is_closing():
            await asyncio.sleep(self.config.timeouts.heartbeat_interval)
            seq += 1
            writer.write(frames.encode(frames.Heartbeat(seq=seq)))

    def _open_tunnel(
        self,
        proxy_conn_id: str,
        relay: RelayAddress,
        writer: asyncio.StreamWriter,
        result: frames.RegisterResult,
    ) -> None:
        """Open the tunnel asked for, unless at the bound both ends share
        (`Limits.max_client_tunnels`, or the relay's smaller one): then say so, so the relay
        answers its caller at once instead of waiting for a tunnel that never comes."""
        bound = self.config.limits.max_client_tunnels
        if result.max_tunnels is not None:
            bound = min(bound, result.max_tunnels)
        if len(self._tunnels) >= bound:
            log.info("not opening a tunnel: %d are open already (the bound)", len(self._tunnels))
            if result.max_tunnels is not None:  # a relay that knows ProxyConnRefused
                refusal = frames.ProxyConnRefused(proxy_conn_id=proxy_conn_id, reason="at bound")
                writer.write(frames.encode(refusal))
            return
        task = asyncio.get_running_loop().create_task(self._tunnel(proxy_conn_id, relay))
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)

    async def _tunnel(self, proxy_conn_id: str, relay: RelayAddress) -> None:
        """One tunnel to `relay` (the one that asked for it): announce it, then carry one
        connection after another while each ends clean; the relay keeps it in its pool between
        them."""
        cfg, timeouts = self.config, self.config.timeouts
        tunnel: Link | None = None
        try:
            tunnel = await open_link(
                relay.host,
                relay.proxy_port,
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
            if isinstance(tunnel, SocketLink):
                await TunnelMachine(tunnel, cfg).run()
                return
            decoder = frames.FrameDecoder(cfg.limits.max_frame)
            while True:
                # Idle in the relay's pool for as long as it takes.
                start = await read_message(tunnel.recv, decoder, None)
                if not isinstance(start, frames.StartProxy):
                    if isinstance(start, frames.Error):
                        log.warning("relay refused a tunnel: %s", start.message)
                    tunnel.close()
                    return
                leftover = await join(cfg, tunnel, start, decoder.take_rest())
                if leftover is None:
                    return  # the tunnel is closed
                decoder = frames.FrameDecoder(cfg.limits.max_frame)
                decoder.receive_data(leftover)
        except (OSError, RemoteProtocolError) as exc:  # TimeoutError, ssl.SSLError: OSErrors
            log.debug("tunnel %s ended: %s", proxy_conn_id, exc)
            if tunnel is not None:
                tunnel.close()
        except BaseException:
            if tunnel is not None:
                tunnel.close()
            raise
