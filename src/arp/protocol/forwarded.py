"""Who is calling: the X-Forwarded-* headers the relay gives every request (no I/O here).

Rules:
- The service behind arpc sees, on every HTTP request, ``X-Forwarded-For`` (the caller's
  address appended), ``X-Forwarded-Proto`` (``http``: the public port speaks plain HTTP),
  ``X-Forwarded-Host`` (the Host the caller asked for) and ``X-Real-IP`` (the caller).
- Headers of those names that come from the internet are removed first: anyone can send them,
  and a service that trusts its proxy would believe a forged address.
- When the peer is a trusted proxy (`arps --trusted-proxy CIDR`, e.g. nginx in front), its
  headers are kept: the relay appends the peer to its ``X-Forwarded-For`` and keeps its
  ``X-Real-IP``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, which carry the real caller.
- A client registered with ``forwarded_headers: false`` (`arpc --no-forwarded-headers`) gets
  its requests untouched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from arp.protocol.http import RequestHead

NAMES: Final = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from flags or a comma/space separated environment value;
    ValueError names a bad one."""
    networks: list[Network] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxy {item!r} is not an address or CIDR") from None
    return tuple(networks)


def caller_ip(address: str) -> str:
    """The caller's address as the headers carry it (an IPv4-mapped IPv6 address as IPv4)."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address.partition("%")[0]


def is_trusted(address: str, networks: Sequence[Network]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(caller_ip(address))
    except ValueError:
        return False
    return any(ip in net for net in networks)


class Caller:
    """The public connection's peer, worked out once per connection; not changed after.

    A compiled class, not a NamedTuple: making a NamedTuple runs its ``__new__`` as Python
    (about 3,000 instructions, paid by every public connection).
    """

    __slots__ = ("ip", "trusted")

    def __init__(self, ip: str, trusted: bool) -> None:
        self.ip = ip
        self.trusted = trusted

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Caller) and other.ip == self.ip and other.trusted == self.trusted

    def __hash__(self) -> int:
        return hash((self.ip, self.trusted))

    def __repr__(self) -> str:
        return f"Caller(ip={self.ip!r}, trusted={self.trusted!r})"


def rewrite_head(
    raw: bytes, head: RequestHead, caller: Caller | None, target: str | None = None
) -> bytes:
    """The request head `raw` (parsed as `head`) as the service should see it: with the relay's
    forwarded headers when `caller` is given, and with `target` as its request target."""
    if target is not None:
        eol = raw.index(b"\r\n")
        line = f"{head.method} {target} HTTP/{head.http_version}".encode("latin-1")
        raw = line + raw[eol:]
    if caller is None:
        return raw
    host = head.header(b"host")
    present = [(key, value) for key, value in head.headers if key in NAMES]
    ip = caller.ip.encode("latin-1")
    if not present:
        # The common case: nothing to remove, four lines to add before the blank line.
        return b"".join(
            (
                raw[:-2],
                b"X-Forwarded-For: ", ip,
                b"\r\nX-Forwarded-Proto: http",
                b"\r\nX-Forwarded-Host: " + host if host is not None else b"",
                b"\r\nX-Real-IP: ", ip,
                b"\r\n\r\n",
            )
        )  # fmt: skip
    theirs: dict[bytes, bytes] = {}
    if caller.trusted:
        for key, value in present:
            value = value.strip()
            theirs[key] = theirs[key] + b", " + value if key in theirs else value
    chain = theirs.get(b"x-forwarded-for")
    lines = [
        b"X-Forwarded-For: " + (chain + b", " + ip if chain else ip),
        b"X-Forwarded-Proto: " + theirs.get(b"x-forwarded-proto", b"http"),
    ]
    forwarded_host = theirs.get(b"x-forwarded-host", host)
    if forwarded_host is not None:
        lines.append(b"X-Forwarded-Host: " + forwarded_host)
    lines.append(b"X-Real-IP: " + theirs.get(b"x-real-ip", ip))
    kept = [
        line
        for line in raw[:-4].split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in NAMES
    ]
    return b"\r\n".join(kept + lines) + b"\r\n\r\n"
