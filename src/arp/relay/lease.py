"""The cluster's rules of ownership, as pure code: key names, records, claim outcomes, leases.

Several `arps --cluster` nodes share one Redis. What each one holds lives there under leases
(keys with a time to live that the holder renews), so a node that dies without a word loses
what it held when its leases run out, and no node needs to be told. The rules:

1. A client_id is live on one node at a time, cluster-wide. A node claims it when the client
   registers; the claim succeeds when nobody holds it, when this node holds it already, or when
   the registering client proves it is the holder's client by its resume key (the same rule as
   the hijack rule on one node: its control link broke, or its node died, and it came back
   elsewhere). Otherwise it is refused, naming the holding node (retryable: the holder's lease
   may run out).
2. A dedicated TCP port is granted once in the cluster: claimed together with its client (one
   atomic script), free or already this client's.
3. A node renews every lease it holds each `ClusterBounds.renew_every`; a renewal that finds a
   record now naming another node has *lost* it (the client moved), and the node lets its
   client go. A record that expired meanwhile (Redis was unreachable) is written again.
4. A node releases a client's claim when its control link ends (only if the record is still
   the one it wrote), so the client can come back anywhere at once.

The Lua scripts that apply rules 1, 2 and 3 atomically live in `arp.relay.cluster`; this module
names the keys, encodes the records and reads the scripts' answers, so each can be tested by a
plain function call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DEFAULT_PREFIX = "arp:cluster:"
"""Where the cluster's keys live in the Redis they share with the gateway (whose own keys have
their own prefix, `redis.prefix` in the gateway's config)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The cluster's key names under one prefix (documented in docs/cluster.md)."""

    prefix: str = DEFAULT_PREFIX

    def node(self, node_id: str) -> str:
        """A hash: the node's peer address and when it started; lives under the node's lease."""
        return f"{self.prefix}node:{node_id}"

    @property
    def nodes(self) -> str:
        """A sorted set: every node id ever seen, scored by its last renewal (unix seconds)."""
        return f"{self.prefix}nodes"

    def client(self, client_id: str) -> str:
        """A string (JSON `Holder`): which node holds the client; under that node's lease."""
        return f"{self.prefix}client:{client_id}"

    def tcp_port(self, port: int) -> str:
        """A string: the client_id granted this dedicated TCP port; under its node's lease."""
        return f"{self.prefix}tcp:{port}"

    @property
    def client_pattern(self) -> str:
        return f"{self.prefix}client:*"


def resume_hash(resume_key: str | None) -> str:
    """What Redis keeps of a resume key: its SHA-256, never the key (another node compares)."""
    if not resume_key:
        return ""
    import hashlib  # here: only cluster nodes hash resume keys (plain arps: idle RSS)

    return hashlib.sha256(resume_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Holder:
    """The record of a claimed client: the node holding it, the hash of its resume key, and
    the claim's own random epoch, so a node renews or releases only the very claim it made
    (not a newer one of the same client on the same node)."""

    node: str
    resume: str
    epoch: str = ""

    def encode(self) -> str:
        return json.dumps(
            {"node": self.node, "rk": self.resume, "e": self.epoch}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, raw: str | bytes | None) -> Holder | None:
        """The record, or None for a missing or unreadable one (treated as free)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(
                node=str(data["node"]), resume=str(data.get("rk", "")), epoch=str(data.get("e", ""))
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class Claimed:
    """The claim succeeded; `moved_from` names the node the client left (resume key proven)."""

    moved_from: str | None = None


@dataclass(frozen=True, slots=True)
class HeldElsewhere:
    """Another node holds the client and the registering one did not prove it is that client."""

    node: str

    @property
    def error(self) -> str:
        return f"client_id is in use by another live connection (on relay node {self.node})"


@dataclass(frozen=True, slots=True)
class PortTaken:
    """A TCP port asked for is granted to another client in the cluster."""

    port: int
    holder: str

    @property
    def error(self) -> str:
        return f"TCP port {self.port} is held by another client in the cluster"


ClaimOutcome = Claimed | HeldElsewhere | PortTaken


def read_claim_reply(reply: list[object]) -> ClaimOutcome:
    """The claim script's answer: ``["ok", moved_from|""]``, ``["held", node]`` or
    ``["port", port, holder]``."""
    kind = _text(reply[0]) if reply else ""
    if kind == "ok":
        moved = _text(reply[1]) if len(reply) > 1 else ""
        return Claimed(moved_from=moved or None)
    if kind == "held" and len(reply) > 1:
        return HeldElsewhere(node=_text(reply[1]))
    if kind == "port" and len(reply) > 2:
        return PortTaken(port=int(_text(reply[1])), holder=_text(reply[2]))
    raise ValueError(f"unexpected answer of the claim script: {reply!r}")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def lease_ms(lease: float) -> int:
    """A lease in the milliseconds Redis takes (PX), at least one."""
    return max(1, int(lease * 1000))


@dataclass(slots=True)
class LeaseClock:
    """When renewals are due, and whether this node may still believe what it holds.

    A node whose renewals have failed for longer than the lease can no longer know whether
    another node took its clients: `stale` says so, and the node keeps serving (Redis may be
    the only thing down) but logs it; the next renewal that reaches Redis writes the records
    again or finds them lost.
    """

    lease: float
    renew_every: float
    last_renewed: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.renew_every < self.lease:
            raise ValueError("the renewal interval must be shorter than the lease")

    def renewed(self, now: float) -> None:
        self.last_renewed = now

    def stale(self, now: float) -> bool:
        return self.last_renewed is not None and now - self.last_renewed > self.lease

    def expiry_bound(self) -> float:
        """The longest a dead node's records outlive it: each renewal sets them to expire one
        lease later, so a node that dies right after one is forgotten a lease later."""
        return self.lease
