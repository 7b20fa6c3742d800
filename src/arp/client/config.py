"""arpc's settings: the relays it registers with, the local services it exposes, and the rest
of one start's configuration. No I/O and no asyncio here: the command line builds these before
it decides what the process loads (`arp.runtime.forgo_tls`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from arp.config import DEFAULT_CONTROL_PORT, DEFAULT_PROXY_PORT, Limits, Timeouts

if TYPE_CHECKING:
    import ssl


@dataclass(frozen=True)
class Target:
    """A local service that tunnels are joined to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """One relay (node) arpc may register with: its host, control port and proxy port."""

    host: str
    control_port: int = DEFAULT_CONTROL_PORT
    proxy_port: int = DEFAULT_PROXY_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.control_port}"


def parse_relays(text: str, control_port: int, proxy_port: int) -> tuple[RelayAddress, ...]:
    """``HOST[:CONTROL_PORT[:PROXY_PORT]]``, comma-separated (an IPv6 host with ports in
    brackets); the
    ports default to `control_port` and `proxy_port`. ValueError names a bad entry."""
    relays: list[RelayAddress] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"--server-addr {text!r}: an empty relay between commas")
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            parts = rest.split(":")[1:] if rest else []
            if rest and not rest.startswith(":"):
                raise ValueError(f"--server-addr: {entry!r} is not HOST[:CONTROL[:PROXY]]")
        elif _is_ipv6(entry):
            host, parts = entry, []  # a bare IPv6 address: ports only with brackets
        else:
            host, *parts = entry.split(":")
        if not host or len(parts) > 2:
            raise ValueError(f"--server-addr: {entry!r} is not HOST[:CONTROL[:PROXY]]")
        ports = [control_port, proxy_port]
        for i, part in enumerate(parts):
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise ValueError(f"--server-addr: {entry!r}: {part!r} is not a port")
            ports[i] = int(part)
        relays.append(RelayAddress(host, ports[0], ports[1]))
    return tuple(relays)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


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
    access_tokens: tuple[str, ...] = ()
    """Secrets that alone open this client on the relay (`arpc --access-token`); only their
    hashes are sent. Empty: the client_id is the token, as before."""
    tls: ssl.SSLContext | None = None
    tls_server_name: str | None = None
    forwarded_headers: bool = True
    """Ask the relay to tell the local service who is calling (X-Forwarded-*)."""
    proxy_protocol: bool = False
    """Ask the relay for a PROXY protocol v2 header in front of each raw TCP port connection."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    relays: tuple[RelayAddress, ...] = ()
    """Several relays (cluster nodes) to register with, in turn: after a failure the client
    moves to the next one. Empty: the one relay of `server_addr` and the two ports."""

    @property
    def addresses(self) -> tuple[RelayAddress, ...]:
        return self.relays or (RelayAddress(self.server_addr, self.control_port, self.proxy_port),)
