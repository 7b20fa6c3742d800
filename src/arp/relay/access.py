"""Access tokens on the relay (issue 14 item 4): only their hashes, looked up in O(1).

A client that names access tokens (`arpc --access-token`) sends their SHA-256 hashes at
registration; the relay never sees or keeps a token itself. A public request's token is hashed
as it arrives and looked up in one dict keyed by those hashes (one hash and one dict lookup per
routing decision, whatever the number of clients or tokens); the stored hash is then compared
with `hmac.compare_digest`. A client with access tokens is reached by them alone: its bare
client_id, or its subdomain without a token, opens nothing (the same 404 as an unknown token).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from arp.protocol.access_tokens import token_hash

if TYPE_CHECKING:
    from arp.relay.registry import ClientState

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")


class AccessIndex:
    """Every registered client's access-token hashes → that client."""

    __slots__ = ("_by_hash",)

    def __init__(self) -> None:
        self._by_hash: dict[str, ClientState] = {}

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def find(self, token: str) -> ClientState | None:
        """The client `token` is an access token of, or None."""
        if not self._by_hash:
            return None  # no client uses access tokens: nothing to hash
        digest = token_hash(token)
        state = self._by_hash.get(digest)
        if state is None:
            return None
        import hmac  # here: a relay whose clients use no access tokens never loads it

        return state if any(hmac.compare_digest(digest, h) for h in state.access_hashes) else None

    @staticmethod
    def check(hashes: list[str], bound: int) -> str | None:
        """Why `hashes` cannot be registered, or None."""
        if len(hashes) > bound:
            return f"at most {bound} access tokens per client"
        if not all(isinstance(h, str) and HASH_PATTERN.fullmatch(h) for h in hashes):
            return "access_token_hashes must be hex SHA-256 digests (64 lowercase hex digits)"
        return None

    def claim(self, state: ClientState, hashes: list[str]) -> str | None:
        """Make `hashes` the access tokens of `state` (replacing its old ones); why not, or
        None. A hash held by another client is refused (a token names one client)."""
        for digest in hashes:
            holder = self._by_hash.get(digest)
            if holder is not None and holder is not state:
                return "an access token given is already used by another client"
        self.release(state)
        state.access_hashes = frozenset(hashes)
        for digest in hashes:
            self._by_hash[digest] = state
        return None

    def release(self, state: ClientState) -> None:
        """`state` is forgotten (or changes its tokens): its hashes route nowhere."""
        for digest in state.access_hashes:
            if self._by_hash.get(digest) is state:
                del self._by_hash[digest]
        state.access_hashes = frozenset()
