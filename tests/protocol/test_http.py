"""Routing on the public port: head sniffing and token extraction, pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arp.protocol import http as phttp

MAX = 8192


def head(raw: bytes) -> phttp.RequestHead:
    parsed = phttp.parse_request_head(raw, MAX)
    assert parsed is not None
    return parsed


def test_head_needs_more_bytes_until_blank_line() -> None:
    assert phttp.parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n", MAX) is None
    assert phttp.parse_request_head(b"GE", MAX) is None


def test_head_parses_and_keeps_case_of_values() -> None:
    h = head(b"GET /a?b=1 HTTP/1.1\r\nHost: X\r\nX-ARP-Token: Tok\r\n\r\nbody")
    assert (h.method, h.target, h.http_version) == ("GET", "/a?b=1", "1.1")
    assert h.header(b"x-arp-token") == b"Tok"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"SSH-2.0-OpenSSH\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 needs Host
    ],
)
def test_malformed_heads_are_400(raw: bytes) -> None:
    with pytest.raises(phttp.HeadError) as info:
        phttp.parse_request_head(raw, MAX)
    assert info.value.status == 400


def test_oversized_head_is_431_even_before_it_ends() -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX
    with pytest.raises(phttp.HeadError) as info:
        phttp.parse_request_head(big, MAX)
    assert info.value.status == 431
    with pytest.raises(phttp.HeadError) as info:
        phttp.parse_request_head(big + b"\r\n\r\n", MAX)
    assert info.value.status == 431


def test_http10_without_host_is_fine() -> None:
    assert head(b"GET /x?token=a HTTP/1.0\r\n\r\n").http_version == "1.0"


@pytest.mark.parametrize(
    ("raw", "token", "source", "cookie"),
    [
        (b"GET /?token=A HTTP/1.1\r\nHost: h\r\n\r\n", "A", phttp.TokenSource.QUERY, True),
        (
            b"GET /?token=A HTTP/1.1\r\nHost: h\r\nCookie: arp_token=A\r\n\r\n",
            "A",
            phttp.TokenSource.QUERY,
            False,
        ),
        (
            b"GET /?token=B HTTP/1.1\r\nHost: h\r\nCookie: arp_token=A\r\n\r\n",
            "B",
            phttp.TokenSource.QUERY,
            True,
        ),
        (
            b"GET /?x=1&token=A%2BB HTTP/1.1\r\nHost: h\r\n\r\n",
            "A+B",
            phttp.TokenSource.QUERY,
            True,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX-ARP-Token: H\r\nCookie: arp_token=C\r\n\r\n",
            "H",
            phttp.TokenSource.HEADER,
            False,
        ),
        (
            b"GET /app.js HTTP/1.1\r\nHost: h\r\nCookie: a=1; arp_token=C; b=2\r\n\r\n",
            "C",
            phttp.TokenSource.COOKIE,
            False,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: myclient.relay.example:17003\r\n\r\n",
            "myclient",
            phttp.TokenSource.SUBDOMAIN,
            False,
        ),
    ],
)
def test_token_order(raw: bytes, token: str, source: phttp.TokenSource, cookie: bool) -> None:
    route = phttp.route(head(raw), domain="relay.example")
    assert route == phttp.Route(token, source, cookie)


def test_no_token_anywhere() -> None:
    assert (
        phttp.route(head(b"GET / HTTP/1.1\r\nHost: relay.example\r\n\r\n"), "relay.example") is None
    )
    assert (
        phttp.route(head(b"GET / HTTP/1.1\r\nHost: a.b.relay.example\r\n\r\n"), "relay.example")
        is None
    )
    assert phttp.route(head(b"GET /?token= HTTP/1.1\r\nHost: x\r\n\r\n"), None) is None


def test_cookie_is_injected_after_the_status_line() -> None:
    header = phttp.set_cookie_header("tok")
    out = phttp.inject_header(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", header)
    assert out == b"HTTP/1.1 200 OK\r\n" + header + b"A: b\r\n\r\nbody"
    assert b"HttpOnly" in header and b"SameSite=Lax" in header and b"Path=/" in header
    assert phttp.inject_header(b"HTTP/1.1 100 Continue\r\n\r\n", header) is None
    assert phttp.inject_header(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", header) is not None
    assert phttp.inject_header(b"\x00\x01binary", header) is None
    assert phttp.inject_header(b"HTTP/1.1 200 OK", header) is None


def _inject_by_split(first: bytes, line: bytes) -> bytes | None:
    """inject_header as first written (split the status line): the reference."""
    if not first.startswith(b"HTTP/1."):
        return None
    eol = first.find(b"\r\n")
    if eol == -1:
        return None
    parts = first[:eol].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    status = int(parts[1])
    if 100 <= status < 200 and status != 101:
        return None
    return first[: eol + 2] + line + first[eol + 2 :]


@given(
    st.lists(
        st.sampled_from(
            [
                b"HTTP/1.",
                b"1",
                b"0",
                b" ",
                b"  ",
                b"200",
                b"101",
                b"199",
                b"\r\n",
                b"\r",
                b"OK",
                b"x",
                b"\xff",
                b"12a",
                b"\xd9\xa3",
            ]
        ),
        max_size=12,
    ).map(b"".join),
    st.booleans(),
)
def test_inject_header_agrees_with_splitting_the_status_line(tail: bytes, prefixed: bool) -> None:
    """Mutated status lines (odd spaces, no reason, cut lines, non-ASCII digits) get the
    header where, and only where, splitting the line would have put it."""
    first = (b"HTTP/1.1 " if prefixed else b"") + tail
    line = b"Set-Cookie: a=b\r\n"
    assert phttp.inject_header(first, line) == _inject_by_split(first, line)


def test_error_response_is_complete() -> None:
    raw = phttp.error_response(404, "no client is registered with token x", origin="arps")
    head_part, _, body = raw.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Connection: close" in head_part
    assert f"Content-Length: {len(body)}".encode() in head_part
    assert body == b"arps: no client is registered with token x\n"


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_sniffer(blob: bytes) -> None:
    try:
        parsed = phttp.parse_request_head(blob, 256)
    except phttp.HeadError as exc:
        assert exc.status in (400, 431)
    else:
        if parsed is not None:
            phttp.route(parsed, "example.com")


def test_cookie_is_secure_behind_an_https_proxy() -> None:
    plain = head(b"GET /?token=A HTTP/1.1\r\nHost: h\r\n\r\n")
    proxied = head(b"GET /?token=A HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert not phttp.came_over_https(plain) and phttp.came_over_https(proxied)
    assert b"; Secure" in phttp.set_cookie_header("A", secure=True)
    assert b"Secure" not in phttp.set_cookie_header("A")


@given(st.text(alphabet="tokenab=&%+#?2F0x;é ", max_size=40))
def test_query_token_follows_parse_qsl(query: str) -> None:
    """The token is read from the query as urllib's parse_qsl would read it."""
    from urllib.parse import parse_qsl

    target = "/p?" + query
    expected = next(
        (v for k, v in parse_qsl(query.partition("#")[0], keep_blank_values=True)
         if k == "token" and v),
        None,
    )  # fmt: skip
    assert phttp._query_token(target) == expected
