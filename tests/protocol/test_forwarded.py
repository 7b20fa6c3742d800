"""Forwarded headers, the PROXY v2 header and the original token/path form: pure tests."""

from __future__ import annotations

import ipaddress
import struct

from arp.protocol import http as phttp
from arp.protocol import proxy_v2
from arp.protocol.forwarded import Caller, is_trusted, parse_networks, rewrite_head


def head_of(raw: bytes) -> phttp.RequestHead:
    head = phttp.parse_request_head(raw, 4096)
    assert head is not None
    return head


def headers_of(raw: bytes) -> dict[bytes, bytes]:
    return dict(head_of(raw).headers)


def test_the_relays_headers_are_added_and_forgeries_dropped() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Real-IP: 6.6.6.6\r\n\r\n"
    )
    out = rewrite_head(raw, head_of(raw), Caller("192.0.2.1", trusted=False))
    seen = headers_of(out)
    assert seen[b"x-forwarded-for"] == b"192.0.2.1"
    assert seen[b"x-real-ip"] == b"192.0.2.1"
    assert seen[b"x-forwarded-proto"] == b"http"
    assert seen[b"x-forwarded-host"] == b"h.example"
    assert b"6.6.6.6" not in out


def test_a_trusted_proxy_is_appended_to() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    out = rewrite_head(raw, head_of(raw), Caller("10.0.0.2", trusted=True))
    seen = headers_of(out)
    assert seen[b"x-forwarded-for"] == b"203.0.113.9, 10.0.0.2"
    assert seen[b"x-forwarded-proto"] == b"https"


def test_trust_is_by_network() -> None:
    networks = parse_networks(["10.0.0.0/8, ::1", "192.0.2.7"])
    assert is_trusted("10.1.2.3", networks) and is_trusted("::1", networks)
    assert is_trusted("::ffff:192.0.2.7", networks)
    assert not is_trusted("11.0.0.1", networks) and not is_trusted("10.0.0.1", ())


def test_the_original_token_path_form_routes_and_rewrites() -> None:
    raw = b"GET /?token=alpha/sessions/7&limit=5 HTTP/1.1\r\nHost: h\r\n\r\n"
    route = phttp.route(head_of(raw))
    assert route is not None
    assert (route.token, route.target) == ("alpha", "/sessions/7?limit=5")
    out = rewrite_head(raw, head_of(raw), None, route.target)
    assert out.startswith(b"GET /sessions/7?limit=5 HTTP/1.1\r\n")


def test_proxy_v2_ipv4_header_layout() -> None:
    header = proxy_v2.encode(("192.0.2.1", 5555), ("198.51.100.2", 5432))
    assert header[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert header[12:16] == b"\x21\x11\x00\x0c"
    assert header[16:20] == ipaddress.IPv4Address("192.0.2.1").packed
    assert header[20:24] == ipaddress.IPv4Address("198.51.100.2").packed
    assert struct.unpack(">HH", header[24:28]) == (5555, 5432)
    assert len(header) == 28


def test_proxy_v2_ipv6_and_mixed_families() -> None:
    header = proxy_v2.encode(("2001:db8::1", 1), ("::ffff:127.0.0.1", 2))
    assert header[12:16] == b"\x21\x21\x00\x24" and len(header) == 16 + 36
    assert header[16:32] == ipaddress.IPv6Address("2001:db8::1").packed
    assert header[32:48] == ipaddress.IPv6Address("::ffff:127.0.0.1").packed
    mapped = proxy_v2.encode(("::ffff:10.0.0.1", 1), ("10.0.0.2", 2))
    assert mapped[13] == 0x11  # both IPv4 after unmapping
    assert proxy_v2.encode_local() == b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
