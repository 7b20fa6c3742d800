"""Control-plane request signatures and agent tokens — pure code, the clock passed in.

A signed request carries three headers:

    X-ARP-Timestamp:  unix seconds (an integer)
    X-ARP-Request-Id: a unique id for this request (a nonce; 1..128 printable characters)
    X-ARP-Signature:  hex HMAC-SHA256(shared_secret, string_to_sign)

    string_to_sign = timestamp + "\\n" + METHOD + "\\n" + path_with_query + "\\n"
                     + request_id + "\\n" + hex(sha256(body))

A timestamp further than `clock_skew` from our clock, a request id seen within that window, or a
signature that does not match → 401. Agent tokens are random; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping

from arp.errors import ArpError

TIMESTAMP_HEADER = "X-ARP-Timestamp"
REQUEST_ID_HEADER = "X-ARP-Request-Id"
SIGNATURE_HEADER = "X-ARP-Signature"
SUBPROTOCOL = "agent-token"


class AuthError(ArpError):
    """A request or connection that did not prove who it is."""

    status = 401


class ForbiddenError(ArpError):
    status = 403


def _bytes(text: str) -> bytes:
    """Header text as bytes, whatever it holds: aiohttp keeps undecodable header bytes as lone
    surrogates, which a plain `.encode()` refuses (a 500 where a 401 is due)."""
    return text.encode("utf-8", "surrogatepass")


def string_to_sign(timestamp: str, method: str, path: str, request_id: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    return f"{timestamp}\n{method.upper()}\n{path}\n{request_id}\n{digest}"


def sign(secret: str, timestamp: str, method: str, path: str, request_id: str, body: bytes) -> str:
    text = string_to_sign(timestamp, method, path, request_id, body)
    return hmac.new(_bytes(secret), _bytes(text), hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, method: str, path: str, body: bytes, now: float, request_id: str | None = None
) -> dict[str, str]:
    """The three headers that sign one request (used by tests, the bench and the poller)."""
    timestamp = str(int(now))
    request_id = request_id or secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: timestamp,
        REQUEST_ID_HEADER: request_id,
        SIGNATURE_HEADER: sign(secret, timestamp, method, path, request_id, body),
    }


class NonceCache:
    """Request ids seen within the clock-skew window, bounded in count (oldest forgotten)."""

    def __init__(self, window: float, capacity: int = 100_000) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check_and_add(self, request_id: str, now: float) -> bool:
        """True if `request_id` is new (and remember it), False if it was used."""
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self.window and len(self._seen) < self.capacity:
                break
            del self._seen[oldest_id]
        if request_id in self._seen:
            return False
        self._seen[request_id] = now
        return True


class RequestVerifier:
    """Decides whether a control-plane request may proceed (bearer token and/or HMAC)."""

    def __init__(
        self, *, shared_secret: str, require_signature: bool, clock_skew: float, bearer: str
    ) -> None:
        self.shared_secret = shared_secret
        self.require_signature = require_signature and bool(shared_secret)
        self.clock_skew = clock_skew
        self.bearer = bearer
        self.nonces = NonceCache(window=2 * clock_skew)

    @property
    def open(self) -> bool:
        """No secret and no token configured: every request is accepted."""
        return not self.shared_secret and not self.bearer

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> None:
        """Return if the request is allowed; raise `AuthError` (401) saying why not.

        A request that carries a signature must carry a valid one. Without a signature, a valid
        bearer token is enough unless `require_signature` is set.
        """
        signature = headers.get(SIGNATURE_HEADER)
        if signature is not None and self.shared_secret:
            self._verify_signature(method, path, headers, body, signature, now)
            return
        if self.require_signature:
            raise AuthError(f"a signed request is required ({SIGNATURE_HEADER} header)")
        if self.open:
            return
        authorization = headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if (
            self.bearer
            and scheme.lower() == "bearer"
            and hmac.compare_digest(_bytes(token.strip()), _bytes(self.bearer))
        ):
            return
        if self.shared_secret and not self.bearer:
            raise AuthError(f"a signed request is required ({SIGNATURE_HEADER} header)")
        raise AuthError("missing or wrong bearer token")

    def _verify_signature(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        signature: str,
        now: float,
    ) -> None:
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        request_id = headers.get(REQUEST_ID_HEADER, "")
        if not timestamp or not request_id:
            raise AuthError(f"a signed request needs {TIMESTAMP_HEADER} and {REQUEST_ID_HEADER}")
        if len(request_id) > 128 or not request_id.isprintable():
            raise AuthError(f"{REQUEST_ID_HEADER} must be 1..128 printable characters")
        try:
            stamp = int(timestamp)
        except ValueError:
            raise AuthError(f"{TIMESTAMP_HEADER} must be unix seconds") from None
        if abs(now - stamp) > self.clock_skew:
            raise AuthError(f"{TIMESTAMP_HEADER} is outside the allowed clock skew")
        expected = sign(self.shared_secret, timestamp, method, path, request_id, body)
        if not hmac.compare_digest(_bytes(expected), _bytes(signature.strip().lower())):
            raise AuthError("the signature does not match")
        if not self.nonces.check_and_add(request_id, now):
            raise AuthError(f"{REQUEST_ID_HEADER} was already used")


def new_agent_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(_bytes(token)).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


def token_from_subprotocols(header: str) -> str | None:
    """The agent token from `Sec-WebSocket-Protocol: agent-token, <token>`, or None."""
    parts = [part.strip() for part in header.split(",") if part.strip()]
    if len(parts) != 2 or parts[0] != SUBPROTOCOL:
        return None
    return parts[1]
