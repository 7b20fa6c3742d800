"""`RelayConfig`: everything one relay is started with, read by each of its parts.

Its own module so the parts (`public`, `tcp_ports`, `server`) read one value without importing
the module that assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arp.config import (
    CLUSTER_BOUNDS,
    DEFAULT_CONTROL_PORT,
    DEFAULT_POOL_SIZE,
    DEFAULT_PROXY_PORT,
    DEFAULT_PUBLIC_PORT,
    ClusterBounds,
    Limits,
    RegistrationBounds,
    Timeouts,
)
from arp.protocol.forwarded import Network
from arp.relay.lease import DEFAULT_PREFIX

DEFAULT_PEER_PORT = 17004


@dataclass(frozen=True)
class ClusterSettings:
    """`arps --cluster` and its flags."""

    redis_url: str
    node_id: str
    secret: str
    peer_port: int = 0
    advertise: str | None = None
    """HOST:PORT other nodes dial for this node's peer port (default: bind host and peer port)."""
    prefix: str = DEFAULT_PREFIX
    bounds: ClusterBounds = field(default_factory=lambda: CLUSTER_BOUNDS)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError(
                "--cluster needs --cluster-secret (env ARPS_CLUSTER_SECRET): the nodes prove "
                "themselves to each other with it"
            )
        if len(self.secret) < 16:
            raise ValueError("--cluster-secret must be at least 16 characters")


@dataclass(frozen=True)
class RelayConfig:
    bind: str = "0.0.0.0"
    control_port: int = DEFAULT_CONTROL_PORT
    proxy_port: int = DEFAULT_PROXY_PORT
    public_port: int = DEFAULT_PUBLIC_PORT
    pool_size: int = DEFAULT_POOL_SIZE
    domain: str | None = None
    """Base domain for `<client_id>.<domain>` routing."""
    auth_token: str | None = None
    """When set, a Register must carry this secret."""
    tcp_ports: range | None = None
    """Dedicated public TCP ports clients may ask for; None allows none."""
    tls_cert: str | None = None
    tls_key: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    """Peers whose X-Forwarded-* headers are kept and appended to (`--trusted-proxy`)."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    cluster: ClusterSettings | None = None
    """`arps --cluster`: this node's part in a cluster sharing one Redis; None stands alone."""
    registration: RegistrationBounds = field(default_factory=RegistrationBounds)
    """Anonymous registrations per address (used without --auth-token)."""


@dataclass(frozen=True)
class AdminSettings:
    """`arps --admin-port`: where the dashboard and metrics listen, and their token."""

    port: int
    bind: str = "127.0.0.1"
    token: str | None = None

    def __post_init__(self) -> None:
        check_admin_access(self.bind, self.token)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a port on this machine."""
    return host in ("::1", "localhost") or host.startswith("127.")


def check_admin_access(bind: str, token: str | None) -> None:
    """Off loopback the admin port shows every client's id and traffic: it needs a token."""
    if not is_loopback(bind) and not token:
        raise ValueError(
            f"--admin-bind {bind} is not loopback: set --admin-token (env ARPS_ADMIN_TOKEN) so "
            "only you can read the dashboard and metrics, or keep the default 127.0.0.1"
        )
