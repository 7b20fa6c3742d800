"""Registration rules: whether a ``Register`` is accepted, as a pure decision (no I/O here).

The relay gathers what the rules need (the message, what its client table knows of that id,
how many clients it serves, who holds which TCP port, its own settings) and `decide` answers
with a `Refuse` or an `Accept`; the relay then applies it (binding ports can still fail, which
is I/O and stays with `arp.relay.tcp_ports`). Keeping the rules here, apart from sockets and the
loop, lets every rule be tested by a plain function call.

Rules, in the order they are checked (the first that fails answers):
1. The shared secret (`arps --auth-token`), compared in constant time: not retryable.
2. The tunnel protocol must be the relay's: not retryable.
3. The client_id must be usable as a token (`check_client_id`): not retryable.
4. An id with a live registration is taken over only with that registration's resume key
   (the same client reconnecting before the relay noticed); otherwise retryable ("in use").
5. A new id is refused while the relay serves its maximum number of clients: retryable.
6. TCP ports: at most `max_tcp_ports_per_client`, only when the relay grants a range, each in
   it and held by no other client: not retryable.
"""

from __future__ import annotations

# hmac.compare_digest itself, without hmac's hashlib (and OpenSSL's digests: idle RSS of arps).
from _operator import _compare_digest as compare_digest
from collections.abc import Mapping
from dataclasses import dataclass

from arp.protocol import frames
from arp.relay.registry import check_client_id


@dataclass(frozen=True, slots=True)
class Rules:
    """The relay's settings the rules read."""

    version: str
    auth_token: str | None
    tcp_ports: range | None
    max_clients: int
    max_tcp_ports_per_client: int


@dataclass(frozen=True, slots=True)
class Known:
    """What the client table holds for the id being registered."""

    live: bool
    """Its control link is up."""
    resume_key: str


@dataclass(frozen=True, slots=True)
class Refuse:
    error: str
    retryable: bool
    reason: str = "other"
    """A short fixed label for metrics (the error text varies)."""


@dataclass(frozen=True, slots=True)
class Accept:
    takeover: bool
    """A live registration of the same client is replaced (it proved so by its resume key)."""
    new: bool
    """The table holds nothing for this id: a state is created."""


Decision = Accept | Refuse


def decide(
    msg: frames.Register,
    known: Known | None,
    client_count: int,
    port_holders: Mapping[int, str],
    rules: Rules,
) -> Decision:
    """Whether `msg` may register; `port_holders` maps each held TCP port to its client_id."""
    if rules.auth_token is not None and not compare_digest(
        (msg.auth_token or "").encode(), rules.auth_token.encode()
    ):
        return Refuse(
            "this relay requires a shared secret: start arpc with --auth-token "
            "(or env ARPS_AUTH_TOKEN) matching arps --auth-token",
            retryable=False,
            reason="auth_token",
        )
    if msg.tunnel_protocol != frames.TUNNEL_PROTOCOL:
        return Refuse(
            f"this relay (arps {rules.version}) speaks tunnel protocol "
            f"{frames.TUNNEL_PROTOCOL} and this client speaks {msg.tunnel_protocol}: "
            "run the same ARP version on both ends",
            retryable=False,
            reason="tunnel_protocol",
        )
    problem = check_client_id(msg.client_id)
    if problem:
        return Refuse(problem, retryable=False, reason="client_id")
    takeover = False
    if known is not None and known.live:
        if msg.resume_key is None or not compare_digest(
            msg.resume_key.encode(), known.resume_key.encode()
        ):
            return Refuse(
                f"client_id {msg.client_id} is in use by another live connection",
                retryable=True,
                reason="in_use",
            )
        takeover = True
    if known is None and client_count >= rules.max_clients:
        return Refuse(
            "the relay serves its maximum number of clients", retryable=True, reason="max_clients"
        )
    grant_error = check_tcp_ports(msg.client_id, msg.tcp_ports, port_holders, rules)
    if grant_error:
        return Refuse(grant_error, retryable=False, reason="tcp_ports")
    return Accept(takeover=takeover, new=known is None)


def check_tcp_ports(
    client_id: str, ports: list[int], port_holders: Mapping[int, str], rules: Rules
) -> str | None:
    """Why `client_id` cannot hold `ports`, or None."""
    if not ports:
        return None
    allowed = rules.tcp_ports
    if len(ports) > rules.max_tcp_ports_per_client:
        return f"at most {rules.max_tcp_ports_per_client} TCP ports per client"
    if allowed is None:
        return "this relay grants no dedicated TCP ports (start arps with --tcp-ports A-B)"
    for port in ports:
        if port not in allowed:
            return (
                f"TCP port {port} is outside the relay's allowed range "
                f"{allowed.start}-{allowed.stop - 1}"
            )
        holder = port_holders.get(port)
        if holder is not None and holder != client_id:
            return f"TCP port {port} is held by another client"
    return None
