"""Per-caller bounds on the relay's front doors (issue 14 item 2): no one address can take the
public port's shared connection limit, or fill the client table with anonymous registrations.

Who the caller is: the TCP peer's address, IPv6 counted per /64 (one host usually holds a
whole /64) and an IPv4-mapped IPv6 address as the IPv4 one. A peer inside ``--trusted-proxy``
(a front proxy such as nginx) is not counted per connection: it carries everyone's requests,
so bounding it would bound everyone; the front proxy bounds its own callers (nginx
``limit_conn``). The X-Forwarded-For first hop is not used: it is known only after the head,
and the bound must hold for connections that never send one (half-sent heads).

Counting is an integer per address in a dict, added to on accept and taken from when the
connection ends: no timer, no per-byte work.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque

from arp.config import RegistrationBounds
from arp.errors import TooManyFromAddress as TooManyFromAddress


def address_key(address: str) -> str:
    """The key a caller address is counted under: IPv4 as is, IPv6 as its /64."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)).network_address}/64"


class AddressCounts:
    """Concurrent connections per caller address, at most `bound` each."""

    __slots__ = ("bound", "counts")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.counts: dict[str, int] = {}

    def enter(self, address: str) -> str | None:
        """Count one more connection of `address`: its key, or None when it is at its bound."""
        key = address_key(address)
        held = self.counts.get(key, 0)
        if held >= self.bound:
            return None
        self.counts[key] = held + 1
        return key

    def leave(self, key: str) -> None:
        """A connection counted under `key` ended ("" : one that was not counted)."""
        if not key:
            return
        held = self.counts.get(key, 0) - 1
        if held > 0:
            self.counts[key] = held
        else:
            self.counts.pop(key, None)


class RegistrationGate:
    """Anonymous registrations per address: a rate (`per_address_rate` per `rate_window`) and
    a count of clients held (`per_address_clients`); see `RegistrationBounds`."""

    def __init__(self, bounds: RegistrationBounds) -> None:
        self.bounds = bounds
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self.held: dict[str, int] = {}

    def admit(self, address: str, now: float | None = None) -> tuple[str | None, str]:
        """(key, "") when a new client from `address` may register (and is counted), else
        (None, why not)."""
        bounds = self.bounds
        now = time.monotonic() if now is None else now
        key = address_key(address)
        if self.held.get(key, 0) >= bounds.per_address_clients:
            return None, f"at most {bounds.per_address_clients} clients per address"
        stamps = self._recent.get(key)
        if stamps is None:
            stamps = self._recent[key] = deque(maxlen=bounds.per_address_rate)
            if len(self._recent) > bounds.max_addresses:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        if len(stamps) >= bounds.per_address_rate and now - stamps[0] < bounds.rate_window:
            return None, (
                f"at most {bounds.per_address_rate} registrations per address in "
                f"{bounds.rate_window:g} s"
            )
        stamps.append(now)
        self.held[key] = self.held.get(key, 0) + 1
        return key, ""

    def forget(self, key: str) -> None:
        """A client counted under `key` was forgotten."""
        if not key:
            return
        held = self.held.get(key, 0) - 1
        if held > 0:
            self.held[key] = held
        else:
            self.held.pop(key, None)
