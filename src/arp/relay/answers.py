"""What the relay itself says on the public port, and what it adds to a client's answers.

Every failure before a request reaches its client is an `ArpError` carrying its HTTP status;
`error_response` is the one place such an error becomes the public response. The token page
answers a browser that names no client; `cookie_transform` adds the Set-Cookie that remembers
a token given in the query to the first response of the client it named.
"""

from __future__ import annotations

from arp.errors import ArpError
from arp.errors import HeadTimeout as HeadTimeout
from arp.net.pump import Transform
from arp.protocol import http as phttp
from arp.relay.token_page import token_page, token_page_headers


def error_response(exc: ArpError) -> bytes:
    """The one place an error becomes the relay's public answer: its status and message (and
    Retry-After when the error says when to come back)."""
    response = phttp.error_response(exc.status, exc.message, origin="arps")
    retry_after: int | None = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response = phttp.inject_header(response, b"Retry-After: %d\r\n" % retry_after) or response
    return response


def token_page_response(
    head: phttp.RequestHead, status: int, message: str | None, *, clear_cookie: bool
) -> bytes:
    """The token page as a complete response (it closes the connection)."""
    return phttp.page_response(
        status,
        token_page(message),
        token_page_headers(),
        head_only=head.method == "HEAD",
        extra=phttp.clear_cookie_header() if clear_cookie else b"",
    )


def cookie_transform(route: phttp.Route, head: phttp.RequestHead) -> Transform | None:
    """What adds the Set-Cookie remembering the token to the first response, if one is due."""
    if not route.set_cookie:
        return None
    cookie = phttp.set_cookie_header(route.token, secure=phttp.came_over_https(head))

    def transform(first: bytes) -> bytes:
        return phttp.inject_header(first, cookie) or first

    return transform
