"""Every deadline and every bound in one place.

A wait on the network, a child process or Redis takes its deadline from a `Timeouts`; a queue,
buffer or connection count takes its bound from a `Limits`. Both are frozen values that a program
builds once from its flags and hands down, so a reader finds every number here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_CONTROL_PORT = 17001
DEFAULT_PROXY_PORT = 17002
DEFAULT_PUBLIC_PORT = 17003
DEFAULT_POOL_SIZE = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines, in seconds."""

    connect: float = 10.0
    """Opening a TCP connection (client to relay, client to its local service)."""
    handshake: float = 10.0
    """Register → RegisterResult, a tunnel's NewProxyConn, a TLS handshake."""
    first_byte: float = 10.0
    """A public connection that sends nothing for this long is closed."""
    head: float = 30.0
    """The whole HTTP head of a public request must arrive within this."""
    keepalive_idle: float = 75.0
    """A keep-alive public connection on which nothing moves between requests for this long is
    ended."""
    tunnel_wait: float = 10.0
    """Slow path: how long a public connection waits for a fresh tunnel before 504."""
    heartbeat_interval: float = 5.0
    """How often each end of a control link says it is alive."""
    heartbeat_timeout: float = 20.0
    """A control link silent for this long is dead."""
    pool_tick: float = 5.0
    """How often the relay tops every pool up, besides refilling on each take."""
    idle_tunnel: float = 60.0
    """Pooled tunnels beyond --pool-size (left over from a burst) idle this long are closed."""
    retention: float = 300.0
    """How long a disconnected client's state (id, TCP ports) is kept for it."""
    shutdown: float = 5.0
    """Graceful shutdown waits this long for open work before cancelling it."""
    farewell: float = 1.0
    """A last word before a close (an Error frame to a peer being refused, a closing control
    link's flush) gets this long."""
    answer: float = 2.0
    """The relay's own answer on the public port (an error, the token page) gets this long to be
    sent, and the caller's remaining bytes read, before the connection is closed."""
    backoff_initial: float = 0.2
    """The client's first reconnect delay (randomised around it)."""
    backoff_max: float = 5.0
    """The cap of the client's reconnect delay, so a restarted relay is found within seconds."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on sizes and counts."""

    max_frame: int = 64 * 1024
    """The largest control frame either side accepts (checked before buffering it)."""
    max_head: int = 32 * 1024
    """The largest HTTP request head on the public port (beyond: 431)."""
    max_pool_size: int = 64
    """The most pre-warmed tunnels per client, whatever --pool-size asks."""
    max_idle_tunnels: int = 64
    """Idle tunnels the relay keeps per client: clean tunnels come back to the pool after their
    connection, up to this many (at least --pool-size)."""
    max_pending_tunnels: int = 256
    """Slow-path tunnel requests outstanding per client (beyond: 503)."""
    max_public_connections: int = 10_000
    """Concurrent public connections the relay serves (beyond: 503)."""
    max_clients: int = 10_000
    """Registered clients the relay keeps (beyond: registration refused)."""
    max_client_tunnels: int = 4096
    """Tunnels one arpc keeps open at once (idle in the pool or carrying a connection)."""
    max_tcp_ports_per_client: int = 16
    """Dedicated public TCP ports one client may hold."""
    socket_buffer: int = 1024 * 1024
    """SO_SNDBUF / SO_RCVBUF asked for on every link."""
    pipe_size: int = 1024 * 1024
    """The kernel pipe size behind a zero-copy splice."""
    copy_chunk: int = 256 * 1024
    """The read size where bytes pass through Python (TLS links, non-Linux)."""
    listen_backlog: int = 4096
    control_send_buffer: int = 1024 * 1024
    """Bytes queued to a control link that does not read; beyond, the relay cuts it off."""
    max_answer_drain: int = 1024 * 1024
    """After the relay's own answer, at most this many bytes the caller still sends are read, so
    the close does not turn into a reset that destroys the answer unread."""


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """The TCP options `arp.net.sockets` sets; seconds and counts as the kernel takes them."""

    keepalive_idle: int = 30
    """A long-lived idle link (control link, pooled tunnel) is probed after this many seconds."""
    keepalive_interval: int = 10
    """Seconds between keep-alive probes."""
    keepalive_count: int = 3
    """Unanswered probes after which the kernel declares the peer dead (so about a minute)."""
    defer_accept: int = 1
    """TCP_DEFER_ACCEPT on client-first listeners: seconds the kernel holds a silent connection
    before handing it over anyway."""


SOCKET_OPTIONS = SocketOptions()


def env_int(name: str, default: int) -> int:
    """An integer from the environment, or `default`; a bad value is a clear error."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a whole number") from None
