"""What a public connection's `Conversation` needs of the public port: the `Door`.

`arp.relay.public.Public` is the one door; `arp.relay.conversation` names what it uses here so
it does not import the module that imports it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from arp.net.links import Link
from arp.protocol import http as phttp
from arp.protocol.forwarded import Caller
from arp.protocol.requests import Request
from arp.relay.registry import ClientState, Pools
from arp.relay.settings import RelayConfig
from arp.relay.stats import RelayStats


class Door:
    """What a conversation needs of the public port; `arp.relay.public.Public` is the one door.

    A base class, not a Protocol, so compiled code calls these through Public's vtable (a
    Protocol's methods are looked up by name on every call: about 250 instructions for the
    per-request `client_for`)."""

    config: RelayConfig
    pools: Pools
    recent: tuple[Request, Caller, bytes] | None
    stats: RelayStats

    def client_for(self, route: phttp.Route) -> ClientState | None:
        raise NotImplementedError

    def decide(
        self, head: phttp.RequestHead, route: phttp.Route | None
    ) -> tuple[bytes | None, ClientState | None]:
        raise NotImplementedError

    def plain(self, tunnel: Link) -> Link:
        raise NotImplementedError

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    async def take_tunnel(self, state: ClientState) -> Link:
        raise NotImplementedError

    def tunnel_done(self, state: ClientState, tunnel: Link, leftover: bytes | None) -> None:
        raise NotImplementedError

    async def send_and_close(self, link: Link, response: bytes) -> None:
        raise NotImplementedError
