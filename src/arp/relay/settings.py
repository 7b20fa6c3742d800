"""`RelayConfig`: everything one relay is started with, read by each of its parts.

Its own module so the parts (`public`, `tcp_ports`, `server`) read one value without importing
the module that assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arp.config import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_POOL_SIZE,
    DEFAULT_PROXY_PORT,
    DEFAULT_PUBLIC_PORT,
    Limits,
    Timeouts,
)
from arp.protocol.forwarded import Network


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
