"""What the relay counts for its admin port, kept as plain numbers (no metrics library here).

The relay always keeps these, with or without `--admin-port`: each is an integer added to once
per connection, request or registration, never per byte or per chunk (the pump counts its own
bytes per chunk and hands the totals over when a connection ends). The admin port
(`arp.relay.admin`) reads them, and the relay's live state, only when it is asked.

- `ClientStats`: per client, on its `ClientState` (so it lives and goes with the client):
  connections open and served, bytes in (callers → client) and out (client → callers), last seen.
- `RelayStats`: the relay's own answers and joined requests by status class, registrations
  refused by reason, and the slow path's tunnel waits (a fixed-bucket histogram).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

TUNNEL_WAIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the tunnel-wait histogram; the relay's default wait is 10 s."""

Transform = Callable[[bytes], bytes]


@dataclass(slots=True)
class ClientStats:
    """One client's traffic. Counts restart when the relay forgets the client."""

    open: int = 0
    """Public connections joined to this client's tunnels right now (its busy tunnels)."""
    connections: int = 0
    """Public connections joined since the relay first saw this client."""
    bytes_in: int = 0
    """Bytes from callers to the client, counted when each connection ends."""
    bytes_out: int = 0
    """Bytes from the client to its callers, counted when each connection ends."""
    last_seen: float = field(default_factory=time.time)
    """Wall-clock time of the client's last registration or heartbeat."""

    def joined(self, received: int = 0) -> ClientStats:
        """A public connection was joined to one of this client's tunnels, `received` bytes of
        it (its head, read to route it) already sent on."""
        self.open += 1
        self.connections += 1
        self.bytes_in += received
        return self

    def ended(self, bytes_in: int, bytes_out: int) -> None:
        """That connection ended, having moved these many payload bytes each way."""
        self.open -= 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def seen(self) -> None:
        self.last_seen = time.time()


@dataclass(slots=True)
class Histogram:
    """Fixed buckets: counts per bucket (not cumulative), sum and count."""

    bounds: tuple[float, ...] = TUNNEL_WAIT_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) as Prometheus writes buckets."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def status_class(response: bytes) -> str:
    """'2xx' and so on from the first bytes of an HTTP response; 'other' when they are not one."""
    if response.startswith(b"HTTP/") and len(response) >= 12 and response[9:10].isdigit():
        return f"{response[9:10].decode()}xx"
    return "other"


@dataclass(slots=True)
class RelayStats:
    """The relay's own counts; the admin port reads them at scrape time."""

    answers: dict[str, int] = field(default_factory=dict)
    """The relay's own answers on the public port (errors, the token page), by status class."""
    served: dict[str, int] = field(default_factory=dict)
    """The service's final responses by status class, each request counted once."""
    refused: dict[str, int] = field(default_factory=dict)
    """Registrations refused, by reason (`arp.relay.registration.Refuse.reason`)."""
    tunnel_waits: Histogram = field(default_factory=Histogram)
    """Seconds a public connection waited for a fresh tunnel (the slow path), timeouts too."""

    def answered(self, response: bytes) -> None:
        key = status_class(response)
        self.answers[key] = self.answers.get(key, 0) + 1

    def count_classes(self, classes: list[int]) -> None:
        """Add a tunnel use's final responses by status class (`ResponseTracker.classes`)."""
        served = self.served
        for digit, count in enumerate(classes):
            if count:
                key = f"{digit}xx" if digit else "other"
                served[key] = served.get(key, 0) + count

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def peek_status(self, inner: Transform | None) -> Transform:
        """A first-response transform that counts the response's status class, then applies
        `inner` (the cookie transform) if there is one: once per connection, not per chunk."""

        def transform(first: bytes) -> bytes:
            key = status_class(first)
            self.served[key] = self.served.get(key, 0) + 1
            return inner(first) if inner is not None else first

        return transform
