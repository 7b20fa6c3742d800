"""Access tokens on the wire (issue 14 item 4): how a token becomes the hash both ends use, and
how a new one is made. Pure code, shared by arpc (which sends hashes) and arps (which hashes
what arrives and keeps only hashes). hashlib and secrets load on first use: a client or relay
with no access token never needs them (they bring OpenSSL's libcrypto: idle RSS)."""

from __future__ import annotations

TOKEN_BYTES = 24
"""Random bytes in a generated token: 192 bits, 32 URL-safe characters."""


def token_hash(token: str) -> str:
    """Hex SHA-256 of the token's UTF-8 bytes."""
    import hashlib

    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh random access token, safe in a URL, a header and a cookie as it is."""
    import secrets

    return secrets.token_urlsafe(TOKEN_BYTES)
