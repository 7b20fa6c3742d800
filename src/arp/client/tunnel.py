"""One tunnel's life in arpc once it is open: wait for ``StartProxy``, join the local service,
carry the connection, and go back to waiting while each connection ends clean.

A plain (non-TLS) tunnel runs as readiness callbacks alone (`TunnelMachine`): while it idles in
the relay's pool its socket is one reader of the nested epoll (`arp.net.readiness`); the
``StartProxy`` that arrives is recognised by its bytes (the shared HTTP port's is always the
same frame), the local service is connected within the callback when the handshake completes at
once (loopback, LAN), and the connection is handed to a `Joint`, whose end brings the tunnel
back to waiting. Why: a busy client carries one connection after another on each tunnel, and
the coroutine version paid per connection a future and a reader registration to wait for
``StartProxy``, a JSON decode, two task wake-ups and a future for the join; those were most of
arpc's Python time per relayed connection.

What does not complete at once (a local service that is a host name, a handshake in progress,
a refused connection and its 502) goes the way of a coroutine (`join`), as TLS tunnels always do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final

from arp.client.config import ClientConfig, Target
from arp.errors import RemoteProtocolError
from arp.net.links import Link, SocketLink, open_link
from arp.net.pump import FrameReader, Joint, pump
from arp.net.readiness import readiness
from arp.net.sockets import connect_literal, finish_connect
from arp.protocol import frames
from arp.protocol.http import error_response
from arp.protocol.tunnel import END_FRAME, data_frame

log = logging.getLogger(__name__)


def target_for(config: ClientConfig, start: frames.StartProxy) -> Target | None:
    """The service `start` names; None (logged) for a TCP port this client did not ask for."""
    if start.tcp_port is None:
        return config.http_target
    found = config.tcp_targets.get(start.tcp_port)
    if found is None:
        log.warning("relay sent a connection for unknown TCP port %s", start.tcp_port)
    return found


_BAD_GATEWAY: Final = error_response(
    502,
    # Where the service lives is this machine's business: the log names it for its owner; the
    # public answer does not.
    "cannot reach the local service behind this client (arpc's log says why)",
    origin="arpc",
)


async def join(
    config: ClientConfig, tunnel: Link, start: frames.StartProxy, initial: bytes
) -> bytes | None:
    """Carry one connection as a coroutine; the tunnel's bytes beyond it when it ended clean,
    else None (the tunnel is closed then)."""
    target = target_for(config, start)
    if target is None:
        tunnel.close()
        return None
    try:
        local = await open_link(
            target.host, target.port, timeout=config.timeouts.connect, limits=config.limits
        )
    except (OSError, TimeoutError) as exc:
        return await refuse(config, tunnel, target, start, initial, exc)
    return await pump(local, tunnel, config.limits, initial=initial)


async def refuse(
    config: ClientConfig,
    tunnel: Link,
    target: Target,
    start: frames.StartProxy,
    initial: bytes,
    exc: BaseException,
) -> bytes | None:
    """End a connection the local service cannot take: answer 502 (HTTP) or nothing (a raw
    TCP port), drop what the relay sends until its end, within a deadline; the tunnel stays
    usable if that all went well."""
    log.warning("cannot reach local service %s: %s", target, exc)
    answer = _BAD_GATEWAY if start.tcp_port is None else b""
    reader = FrameReader(tunnel, initial, config.limits.copy_chunk)
    try:
        async with asyncio.timeout(config.timeouts.connect):
            await tunnel.send(data_frame(answer) + END_FRAME)
            if await reader.payloads(lambda _: None):
                return reader.rest()
    except (OSError, TimeoutError) as exc2:
        log.debug("tunnel closed after a refused connection: %s", exc2)
    tunnel.close()
    return None


_START_HTTP: Final = frames.START_HTTP
_START_HTTP_MESSAGE: Final = frames.StartProxy(tcp_port=None)
_RETRY: Final = (BlockingIOError, InterruptedError)


class TunnelMachine:
    """A plain tunnel carrying connection after connection by readiness callbacks; see the
    module docstring. `run` returns when the tunnel has closed (it is closed then)."""

    __slots__ = (
        "_closed",
        "_config",
        "_decoder",
        "_done",
        "_fd",
        "_joint",
        "_loop",
        "_partial",
        "_ready",
        "_sock",
        "_task",
        "_tunnel",
    )

    def __init__(self, tunnel: SocketLink, config: ClientConfig) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = readiness(self._loop)
        self._tunnel = tunnel
        self._sock = tunnel.sock
        self._fd = self._sock.fileno()
        self._config = config
        self._decoder = frames.FrameDecoder(config.limits.max_frame)
        self._partial = False
        """The decoder holds part of a frame (the common case reads StartProxy whole)."""
        self._joint: Joint | None = None
        self._task: asyncio.Task[None] | None = None
        """A join that had to wait (`join`), running as a coroutine."""
        self._closed = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        """Set once closed (a cancelled `run` cancels it: `_closed` is what tells)."""

    async def run(self, initial: bytes = b"") -> None:
        """Carry connections until the tunnel closes; cancelled, close it now."""
        try:
            self._idle(initial)
            await self._done
        finally:
            self._close()

    # -- idle: waiting for StartProxy ----------------------------------------------------------

    def _idle(self, leftover: bytes) -> None:
        self._joint = None
        self._ready.add_reader(self._fd, self._on_readable)
        if leftover:
            self._take(leftover)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(65536)
        except _RETRY:
            return
        except OSError as exc:
            log.debug("idle tunnel ended: %s", exc)
            self._close()
            return
        if not data:
            self._close()  # the relay let the tunnel go (its pool was pruned, or it stopped)
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Act on bytes of an idle tunnel: StartProxy and the connection's first data, or an
        end."""
        if not self._partial and data.startswith(_START_HTTP):
            # The shared port's StartProxy, always the same bytes: no JSON to decode.
            self._start(_START_HTTP_MESSAGE, data[len(_START_HTTP) :])
            return
        decoder = self._decoder
        decoder.receive_data(data)
        try:
            message = decoder.next_message()
        except RemoteProtocolError as exc:
            log.warning("relay sent a bad frame on a tunnel: %s", exc)
            self._close()
            return
        self._partial = message is None
        if message is None:
            return
        if not isinstance(message, frames.StartProxy):
            if isinstance(message, frames.Error):
                log.warning("relay refused a tunnel: %s", message.message)
            self._close()
            return
        self._start(message, decoder.take_rest())

    # -- joined: carrying one connection -------------------------------------------------------

    def _start(self, start: frames.StartProxy, rest: bytes) -> None:
        config = self._config
        target = target_for(config, start)
        if target is None:
            self._close()
            return
        started: tuple[socket.socket, tuple[object, ...], bool] | OSError | None
        try:
            started = connect_literal(target.host, target.port, config.limits)
        except OSError as exc:
            started = exc
        if isinstance(started, tuple) and started[2]:
            self._join(SocketLink(started[0]), rest)
            return
        # The rest of this connection runs as a coroutine; the tunnel idles again after it.
        self._ready.remove_reader(self._fd)
        self._task = self._loop.create_task(self._join_later(start, rest, target, started))

    def _join(self, local: SocketLink, rest: bytes) -> None:
        # The tunnel's reader stays registered: the joint's takes it over without a syscall.
        joint = Joint(
            local,
            self._tunnel,
            self._config.limits,
            on_end=self._ended,
            initial=rest,
            loop=self._loop,
        )
        self._joint = joint
        joint.start()

    def _ended(self, leftover: bytes | None) -> None:
        """The joint is over: wait for the next StartProxy, or end with the tunnel."""
        if self._closed:
            return  # closed meanwhile (the joint's abort ends here)
        if leftover is None:
            self._joint = None
            self._close()  # the joint closed the tunnel already
            return
        self._idle(leftover)

    async def _join_later(
        self,
        start: frames.StartProxy,
        rest: bytes,
        target: Target,
        started: tuple[socket.socket, tuple[object, ...], bool] | OSError | None,
    ) -> None:
        """A join that waits: `started` is a connect in progress, the error that refused it at
        once, or None (a host name: `join` resolves it); then the tunnel idles again."""
        try:
            leftover = await self._carry_later(start, rest, target, started)
        except BaseException:
            self._task = None
            self._close()
            raise
        self._task = None
        if leftover is None or self._closed:
            self._close()
            return
        self._idle(leftover)

    async def _carry_later(
        self,
        start: frames.StartProxy,
        rest: bytes,
        target: Target,
        started: tuple[socket.socket, tuple[object, ...], bool] | OSError | None,
    ) -> bytes | None:
        config, tunnel = self._config, self._tunnel
        if started is None:
            return await join(config, tunnel, start, rest)
        if isinstance(started, OSError):
            return await refuse(config, tunnel, target, start, rest, started)
        sock, address, _ = started
        try:
            await finish_connect(sock, address, config.timeouts.connect, target.host, target.port)
        except (OSError, TimeoutError) as exc:
            return await refuse(config, tunnel, target, start, rest, exc)
        return await pump(SocketLink(sock), tunnel, config.limits, initial=rest)

    # -- the end -------------------------------------------------------------------------------

    def _close(self) -> None:
        """Close the tunnel (and a connection it carries); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready.remove_reader(self._fd)
        joint, self._joint = self._joint, None
        if joint is not None:
            joint.abort()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            # The task's joint has the tunnel's descriptor registered: it must let go of it
            # before the socket closes, or a new socket given the same number could be missed.
            task.cancel()
            task.add_done_callback(lambda _: self._tunnel.close())
        else:
            self._tunnel.close()
        if not self._done.done():
            self._done.set_result(None)
