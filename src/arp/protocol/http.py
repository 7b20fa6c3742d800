"""Routing decisions on the public port: sniff the HTTP head, find the token (no I/O here).

Rules:
- A request head is parsed (httptools, the llhttp parser) only to route it; its bytes are
  forwarded untouched.
- The token comes from, in order: the query's ``token``, the ``X-ARP-Token`` header, the
  ``arp_token`` cookie, then the subdomain ``<client_id>.<domain>`` of the Host header.
- A token taken from the query that differs from the cookie is remembered in the browser by a
  ``Set-Cookie`` added to the first response, so the page's assets, fetches and WebSocket upgrades
  reach the same client without the token in their URLs.
- The relay's own answers (errors) are complete HTTP/1.1 responses that close the connection.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple
from urllib.parse import unquote_plus

import httptools

from arp.errors import HeadError as HeadError

TOKEN_QUERY: Final = "token"
TOKEN_HEADER: Final = b"x-arp-token"
TOKEN_COOKIE: Final = "arp_token"
COOKIE_MAX_AGE: Final = 30 * 24 * 3600

_METHOD_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class TokenSource(enum.Enum):
    QUERY = "query"
    HEADER = "header"
    COOKIE = "cookie"
    SUBDOMAIN = "subdomain"


class RequestHead(NamedTuple):
    """A parsed request head (a named tuple: built once per request on the keep-alive path)."""

    method: str
    target: str
    http_version: str
    headers: tuple[tuple[bytes, bytes], ...]
    """Header names lower-cased, values as sent."""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Route(NamedTuple):
    """Which client a request is for, and how (a named tuple: built once per request)."""

    token: str
    source: TokenSource
    set_cookie: bool
    """Whether the first response should carry a Set-Cookie remembering `token`."""
    target: str | None = None
    """The request target the client should see, when the relay rewrites it: the original
    ``/?token=ID/path`` form names the client and the path in one query value."""


def looks_like_http(data: bytes) -> bool:
    """Whether the first bytes can start an HTTP/1.x request line (a method token, a space)."""
    head = data[:16]
    space = head.find(b" ")
    if space == -1:
        return len(head) < 16 and all(c in _METHOD_CHARS for c in head)
    return space > 0 and all(c in _METHOD_CHARS for c in head[:space])


def parse_request_head(data: bytes, max_head: int) -> RequestHead | None:
    """The request head at the start of `data`; None while more bytes are needed.

    Raises `HeadError` with 400 for a malformed head and 431 for one larger than `max_head`.
    """
    if not looks_like_http(data):
        raise HeadError(400, "this port speaks HTTP; the request line is not HTTP")
    end = data.find(b"\r\n\r\n")
    if end == -1:
        if len(data) > max_head:
            raise HeadError(431, f"request head larger than {max_head} bytes")
        return None
    if end + 4 > max_head:
        raise HeadError(431, f"request head larger than {max_head} bytes")
    return HeadParser().parse(data[: end + 4])


_METHODS: Final = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH")}


class _Head:
    """httptools' callbacks for one request head (apart from the parser, so the two make no
    reference cycle: a connection's garbage goes with its last reference)."""

    __slots__ = ("complete", "done", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_message_complete(self) -> None:
        self.done = True


class HeadParser:
    """llhttp (httptools) for the request heads of one connection, one whole head at a time.

    The parser is reused from head to head while messages carry no body (the keep-alive case:
    creating one costs more than parsing a small head); after a body, an Upgrade or a
    ``Connection: close`` the next head gets a fresh one, since the relay moves bodies itself.
    """

    __slots__ = ("_head", "_parser")

    def __init__(self) -> None:
        self._head = _Head()
        self._parser: httptools.HttpRequestParser | None = None

    def parse(self, raw: bytes) -> RequestHead:
        """The head in `raw`, which holds exactly one head through its blank line; HeadError
        (400) when it is malformed."""
        found = self._head
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(found)
        found.url, found.headers = b"", []
        found.complete = found.done = False
        upgrade = False
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            upgrade = True  # an Upgrade (WebSocket) head: complete, and relayed untouched
        except httptools.HttpParserError as exc:
            self._parser = None
            raise HeadError(400, f"malformed HTTP request head: {exc}") from None
        if not found.complete:  # pragma: no cover - a full head always completes
            self._parser = None
            raise HeadError(400, "malformed HTTP request head")
        version = parser.get_http_version()
        if upgrade or not found.done or not parser.should_keep_alive():
            self._parser = None  # the next head starts a fresh parser
        headers = found.headers
        if version == "1.1":
            for key, _ in headers:
                if key == b"host":
                    break
            else:
                self._parser = None
                raise HeadError(
                    400, "malformed HTTP request head: an HTTP/1.1 request needs a Host header"
                )
        method = parser.get_method()
        return RequestHead(
            method=_METHODS.get(method) or method.decode("ascii", "replace"),
            target=found.url.decode("latin-1"),
            http_version=version,
            headers=tuple(headers),
        )


def _query_token(target: str) -> str | None:
    _, sep, query = target.partition("?")
    if not sep:
        return None
    query = query.partition("#")[0]
    # parse_qsl's rules (pairs split on "&", "+" and %XX decoded), without its cost on the
    # common query that needs no decoding: it ran on every public connection.
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if key == TOKEN_QUERY and value:
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


def _target_without_token(target: str, path: str) -> str:
    """`path` with the query of `target` less its first ``token`` pair."""
    query = target.partition("?")[2].partition("#")[0]
    kept: list[str] = []
    dropped = False
    for pair in query.split("&"):
        key = pair.partition("=")[0]
        if not dropped and unquote_plus(key) == TOKEN_QUERY:
            dropped = True
            continue
        if pair:
            kept.append(pair)
    return path + ("?" + "&".join(kept) if kept else "")


def cookie_value(cookie_header: bytes | None, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header, tolerant of the odd formats browsers send."""
    if not cookie_header:
        return None
    for part in cookie_header.decode("latin-1").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip().strip('"')
            return value or None
    return None


def _subdomain_token(host: bytes | None, domain: str | None) -> str | None:
    if not host or not domain:
        return None
    hostname = host.decode("latin-1").strip().lower()
    if hostname.startswith("["):
        return None
    hostname = hostname.rpartition(":")[0] if ":" in hostname else hostname
    suffix = "." + domain.strip(".").lower()
    if hostname.endswith(suffix):
        label = hostname[: -len(suffix)]
        if label and "." not in label:
            return label
    return None


def route(head: RequestHead, domain: str | None = None) -> Route | None:
    """Which client the request is for, or None when it names none."""
    cookie = cookie_value(head.header(b"cookie"), TOKEN_COOKIE)
    token = _query_token(head.target)
    if token is not None:
        if "/" in token:
            # The original form, ``/?token=ID/path``: client ids never hold a "/".
            token, _, path = token.partition("/")
            target = _target_without_token(head.target, "/" + path)
            return Route(token, TokenSource.QUERY, set_cookie=token != cookie, target=target)
        return Route(token, TokenSource.QUERY, set_cookie=token != cookie)
    header = head.header(TOKEN_HEADER)
    if header:
        return Route(header.decode("latin-1").strip(), TokenSource.HEADER, set_cookie=False)
    if cookie is not None:
        return Route(cookie, TokenSource.COOKIE, set_cookie=False)
    sub = _subdomain_token(head.header(b"host"), domain)
    if sub is not None:
        return Route(sub, TokenSource.SUBDOMAIN, set_cookie=False)
    return None


def set_cookie_header(token: str, *, secure: bool = False) -> bytes:
    """The header that remembers `token`; `secure` when the browser came over HTTPS."""
    value = token.encode("latin-1", "replace")
    return b"".join((_COOKIE_START, value, _COOKIE_SECURE_END if secure else _COOKIE_END))


_COOKIE_START: Final = b"Set-Cookie: " + TOKEN_COOKIE.encode() + b"="
_COOKIE_END: Final = b"; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax\r\n" % COOKIE_MAX_AGE
_COOKIE_SECURE_END: Final = _COOKIE_END[:-2] + b"; Secure\r\n"
"""`set_cookie_header`'s fixed parts, made once (a public connection that brings its token in
the query gets one)."""


def came_over_https(head: RequestHead) -> bool:
    """Whether a TLS front proxy (nginx, Caddy) says the browser used HTTPS."""
    proto = head.header(b"x-forwarded-proto") or b""
    return proto.split(b",")[0].strip().lower() == b"https"


def inject_header(first_chunk: bytes, header_line: bytes) -> bytes | None:
    """`first_chunk` of a response with `header_line` added after its status line.

    None when the chunk does not start with a complete HTTP/1.x status line, or is an interim
    1xx response other than 101 (the header belongs on the final response).
    """
    if not first_chunk.startswith(b"HTTP/1."):
        return None
    eol = first_chunk.find(b"\r\n")
    if eol == -1:
        return None
    space = first_chunk.find(b" ", 0, eol)
    if space == -1:
        return None
    end = first_chunk.find(b" ", space + 1, eol)
    code = first_chunk[space + 1 : eol if end == -1 else end]
    if not code.isdigit():
        return None
    status = int(code)
    if 100 <= status < 200 and status != 101:
        return None
    return b"".join((first_chunk[: eol + 2], header_line, first_chunk[eol + 2 :]))


_REASONS: Final = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    413: "Content Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def wants_page(head: RequestHead) -> bool:
    """Whether a browser is asking for a page (a GET/HEAD that accepts HTML)."""
    accept = head.header(b"accept") or b""
    return head.method in ("GET", "HEAD") and b"text/html" in accept


def clear_cookie_header() -> bytes:
    """Forgets a remembered token (one that named no client)."""
    return (
        b"Set-Cookie: "
        + TOKEN_COOKIE.encode()
        + b"=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax\r\n"
    )


def page_response(
    status: int,
    body: bytes,
    headers: dict[str, str],
    *,
    head_only: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A complete response from ARP itself carrying a page (the console's token page), with
    `extra` raw header lines; the connection closes after it."""
    reason = "OK" if status == 200 else _REASONS.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n" + extra + b"\r\n"
    return head + (b"" if head_only else body)


def error_response(status: int, message: str, *, origin: str) -> bytes:
    """A complete plain-text response from ARP itself (`origin` says which program spoke);
    the connection closes after it."""
    body = (f"{origin}: {message}\n").encode()
    reason = _REASONS.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body
