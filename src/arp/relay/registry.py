"""What the relay knows of each client: its control link, its pool of tunnels, its TCP ports.

A client is *online* while its control link lives. After that its state (id, resume key, TCP
ports) is kept for the retention window so the same client can come back to it, and public
requests meanwhile get a clear "offline" answer rather than "unknown".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from arp.config import Limits, Timeouts
from arp.errors import AtTunnelBound as AtTunnelBound
from arp.errors import ClientOffline as ClientOffline
from arp.errors import TooManyPending as TooManyPending
from arp.errors import TunnelTimeout as TunnelTimeout
from arp.net.links import Link
from arp.protocol import frames
from arp.relay.stats import ClientStats, Histogram

log = logging.getLogger(__name__)

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_client_id(client_id: str) -> str | None:
    """Why `client_id` cannot be a token (it travels in URLs, cookies, host names), or None."""
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        return (
            f"client_id {client_id[:64]!r} is not allowed: use 1 to 128 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    return None


class Control(Protocol):
    """What the relay asks of a client's control link: a `ControlLink`, or, for a client that
    another cluster node holds, `arp.relay.remote.RemoteControl` (which opens tunnels over the
    peer link when asked for them)."""

    def send(self, message: frames.Message) -> None: ...

    def close(self) -> None: ...


class ControlLink:
    """The relay's end of a client's control link: sends frames without blocking the caller."""

    def __init__(self, writer: asyncio.StreamWriter, max_frame: int, max_buffer: int) -> None:
        self.writer = writer
        self.max_frame = max_frame
        self.max_buffer = max_buffer

    def send(self, message: frames.Message) -> None:
        """Queue one frame; a peer that stopped reading past `max_buffer` is cut off."""
        if self.writer.is_closing():
            return
        self.writer.write(frames.encode(message, self.max_frame))
        if self.writer.transport.get_write_buffer_size() > self.max_buffer:
            log.warning("control link not reading (send buffer full); closing it")
            self.close()

    def close(self) -> None:
        self.writer.close()


@dataclass(eq=False)
class TcpPort:
    """A dedicated public TCP port held for one client."""

    port: int
    listener: socket.socket
    task: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Stop accepting; the socket closes once the accept loop has let go of it."""
        if self.task is None or self.task.done():
            self.listener.close()
        else:
            self.task.add_done_callback(lambda _: self.listener.close())
            self.task.cancel()


class Carrier(Protocol):
    """A public connection carried on one of a client's tunnels right now."""

    def abort(self) -> None: ...


def token_urlsafe(nbytes: int) -> str:
    """`secrets.token_urlsafe`, without the secrets module's hmac and hashlib (idle RSS)."""
    return base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")


@dataclass(eq=False)
class ClientState:
    client_id: str
    resume_key: str = field(default_factory=lambda: token_urlsafe(24))
    control: Control | None = None
    disconnected_at: float | None = None
    pool: deque[Link] = field(default_factory=deque)
    pooled_at: dict[Link, float] = field(default_factory=dict)
    """When each pooled tunnel last went idle."""
    requested: dict[str, float] = field(default_factory=dict)
    """proxy_conn_ids asked of the client and not yet answered, with when they were asked
    (forgotten after `Timeouts.tunnel_request`, or at once when the client refuses one)."""
    waiters: deque[asyncio.Future[Link]] = field(default_factory=deque)
    tcp_ports: dict[int, TcpPort] = field(default_factory=dict)
    access_hashes: frozenset[str] = frozenset()
    """SHA-256 hashes of the client's access tokens (`arp.relay.access`): when any, only those
    route to it."""
    address_key: str = ""
    """The address it first registered from, when counted by `arp.relay.limits`."""
    carrying: set[Carrier] = field(default_factory=set)
    """Public connections on this client's tunnels now: when the control link dies (the
    heartbeat's verdict on a black-holed client), they end as resets instead of hanging."""
    stats: ClientStats = field(default_factory=ClientStats)
    forwarded_headers: bool = True
    """The relay tells the client's service who is calling (X-Forwarded-*)."""
    proxy_protocol: bool = False
    """Connections to the client's raw TCP ports start with a PROXY protocol v2 header."""

    @property
    def online(self) -> bool:
        return self.control is not None

    def offline_for(self, now: float | None = None) -> float:
        if self.disconnected_at is None:
            return 0.0
        return (now if now is not None else time.monotonic()) - self.disconnected_at


class Pools:
    """Tunnel bookkeeping for every client: request, deliver, take, expire."""

    def __init__(
        self,
        pool_size: int,
        max_pending: int,
        max_idle: int,
        idle_timeout: float,
        *,
        max_tunnels: int = Limits().max_client_tunnels,
        request_deadline: float = Timeouts().tunnel_request,
    ) -> None:
        self.max_tunnels = max_tunnels
        """`Limits.max_client_tunnels`: pooled + asked for + carrying, per client."""
        self.request_deadline = request_deadline
        self.pool_size = pool_size
        self.max_pending = max_pending
        self.max_idle = max(max_idle, pool_size)
        self.idle_timeout = idle_timeout
        self.waits = Histogram()
        """Seconds each slow-path take waited for a fresh tunnel (timeouts included)."""
        self.requested_total = 0
        """Tunnels asked of clients since the start: with reuse, it grows with concurrency,
        not with the number of connections."""

    def top_up(self, state: ClientState) -> None:
        """Ask the client for as many tunnels as the pool and the waiters lack."""
        if state.control is None:
            return
        pool, requested = len(state.pool), len(state.requested)
        deficit = self.pool_size + len(state.waiters) - pool - requested
        deficit = min(
            deficit,
            self.max_pending - requested,
            self.max_tunnels - len(state.carrying) - pool - requested,
        )
        now = time.monotonic()
        for _ in range(max(0, deficit)):
            proxy_conn_id = os.urandom(8).hex()
            state.requested[proxy_conn_id] = now
            self.requested_total += 1
            state.control.send(frames.RequestNewProxyConn(proxy_conn_id=proxy_conn_id))

    def deliver(self, state: ClientState, link: Link) -> None:
        """A tunnel arrived, or came back clean from its connection: the oldest waiter gets it,
        else the pool (or it is closed)."""
        while state.waiters:
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        if state.control is not None and len(state.pool) < self.max_idle:
            state.pool.append(link)
            state.pooled_at[link] = time.monotonic()
        else:
            link.close()

    def prune(self, state: ClientState, now: float | None = None) -> None:
        """Close pooled tunnels whose peer went away while they sat idle, and those beyond
        the pool size (left by a burst) that sat idle past `idle_timeout`."""
        now = time.monotonic() if now is None else now
        self.expire_requests(state, now)
        alive: deque[Link] = deque()
        # Newest first: those are kept up to the pool size whatever their age.
        for link in reversed(state.pool):
            idle = now - state.pooled_at.get(link, now)
            spare = len(alive) >= self.pool_size
            if link.is_idle_alive() and not (spare and idle > self.idle_timeout):
                alive.appendleft(link)
            else:
                state.pooled_at.pop(link, None)
                link.close()
        state.pool = alive

    def expire_requests(self, state: ClientState, now: float) -> None:
        """Forget tunnel requests the client never answered within `request_deadline`, so
        they stop counting against its bound (a client that dropped them wedges nothing)."""
        deadline = now - self.request_deadline
        for proxy_conn_id, asked in list(state.requested.items()):
            if asked < deadline:
                del state.requested[proxy_conn_id]

    def refused(self, state: ClientState, proxy_conn_id: str) -> None:
        """The client will not open the tunnel `proxy_conn_id` (``ProxyConnRefused``): forget
        it, and answer the oldest waiter no other request will serve with 503 now."""
        if state.requested.pop(proxy_conn_id, None) is None:
            return
        while len(state.waiters) > len(state.requested):
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(AtTunnelBound(state.client_id))
                return

    def take_pooled(self, state: ClientState) -> Link | None:
        """A live pooled tunnel (fast path), or None; dead ones found on the way are dropped."""
        while state.pool:
            link = state.pool.popleft()
            state.pooled_at.pop(link, None)
            if link.is_idle_alive():
                self.top_up(state)
                return link
            log.debug("client %s: dropped a dead pooled tunnel", state.client_id)
            link.close()
        return None

    async def take(self, state: ClientState, timeout: float) -> Link:
        """A tunnel for one public connection: pooled if one lives, else a fresh one in time."""
        if state.control is None:
            raise ClientOffline(state.client_id, state.offline_for())
        link = self.take_pooled(state)
        if link is not None:
            return link
        if len(state.carrying) + len(state.waiters) >= self.max_tunnels:
            raise AtTunnelBound(state.client_id)
        if len(state.requested) >= self.max_pending:
            raise TooManyPending(state.client_id)
        waiter: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        self.top_up(state)
        started = time.monotonic()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    # wait() leaves the waiter alone when we are cancelled, so a tunnel
                    # delivered at that very moment is found below instead of lost.
                    await asyncio.wait([waiter])
        except BaseException:
            self._abandon(state, waiter)
            raise
        self.waits.observe(time.monotonic() - started)
        if waiter.done():
            return waiter.result()  # the link, or ClientOffline
        self._abandon(state, waiter)
        raise TunnelTimeout(state.client_id, timeout)

    def _abandon(self, state: ClientState, waiter: asyncio.Future[Link]) -> None:
        """Withdraw a waiter; a tunnel it was handed goes to the next one instead."""
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(ValueError):
                state.waiters.remove(waiter)
        elif not waiter.cancelled() and waiter.exception() is None:
            self.deliver(state, waiter.result())

    def drop(self, state: ClientState, *, abort_carried: bool = True) -> None:
        """The control link died: close pooled tunnels, fail waiters, forget requests, and end
        the connections its tunnels carry as resets (a black-holed client leaves nothing
        hanging), unless `abort_carried` is False (a takeover by the same client)."""
        while state.pool:
            state.pool.popleft().close()
        state.pooled_at.clear()
        while state.waiters:
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ClientOffline(state.client_id, state.offline_for()))
        state.requested.clear()
        if abort_carried:
            for carrier in list(state.carrying):
                carrier.abort()
            state.carrying.clear()
