"""The PROXY protocol version 2 header (HAProxy's binary form), encoded (no I/O here).

`arpc --proxy-protocol` asks the relay to put this header in front of every connection to the
client's dedicated raw TCP ports, so PostgreSQL, nginx or HAProxy behind arpc can log the real
peer instead of arpc's own address. Layout, all integers big-endian:

- 12 bytes of signature: ``0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A``;
- 1 byte: version 2 in the high nibble, command in the low one (1 = PROXY, 0 = LOCAL);
- 1 byte: address family in the high nibble (1 = IPv4, 2 = IPv6, 0 = unspecified) and
  transport in the low one (1 = stream/TCP);
- 2 bytes: length of the address block that follows;
- the address block: source address, destination address, source port, destination port
  (4+4+2+2 bytes for IPv4, 16+16+2+2 for IPv6; nothing for LOCAL/unspecified).

When the two ends are of different families, both are given as IPv6 (IPv4-mapped).
"""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
VERSION_2 = 0x20
PROXY = 0x01
LOCAL = 0x00
AF_UNSPEC, AF_INET, AF_INET6 = 0x00, 0x10, 0x20
STREAM = 0x01

_PREFIX = struct.Struct(">12sBBH")
_PORTS = struct.Struct(">HH")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> Address:
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _as_v6(address: Address) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address("::ffff:" + str(address)).packed
    return address.packed


def encode(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The header for a TCP connection from `source` to `destination` ((address, port) each)."""
    src, dst = _ip(source[0]), _ip(destination[0])
    ports = _PORTS.pack(source[1], destination[1])
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        block = src.packed + dst.packed + ports
        family = AF_INET
    else:
        block = _as_v6(src) + _as_v6(dst) + ports
        family = AF_INET6
    return _PREFIX.pack(SIGNATURE, VERSION_2 | PROXY, family | STREAM, len(block)) + block


def encode_local() -> bytes:
    """The header that says "no peer to report" (a connection of the proxy's own)."""
    return _PREFIX.pack(SIGNATURE, VERSION_2 | LOCAL, AF_UNSPEC, 0)
