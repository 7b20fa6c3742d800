"""A TLS tunnel seen as a plain socket: a socket pair with two copying tasks between them.

The relay's per-request routing (`arp.relay.conversation`) drives plain sockets by readiness
callbacks. When tunnels run over TLS (`arps --tls-cert`), their bytes pass through Python
anyway; a bridge copies them to and from one end of a local socket pair and hands the other
end to the caller, so one implementation serves both. `release` gives the TLS link back once the
caller's last bytes have gone out, so the tunnel can return to its pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from arp.net.links import Link, SocketLink


class BridgedTunnel(SocketLink):
    """The near end of a socket pair whose far end is copied to and from `inner` (TLS)."""

    __slots__ = ("_down", "_far", "_up", "inner")

    def __init__(self, inner: Link, chunk: int) -> None:
        near, far = socket.socketpair()
        near.setblocking(False)
        far.setblocking(False)
        super().__init__(near)
        self.inner = inner
        self._far = SocketLink(far)
        loop = asyncio.get_running_loop()
        self._up = loop.create_task(self._copy(self._far, inner, chunk, end=False))
        self._down = loop.create_task(self._copy(inner, self._far, chunk, end=True))

    @staticmethod
    async def _copy(src: Link, dst: Link, chunk: int, *, end: bool) -> None:
        """Copy until `src` ends; with `end`, tell `dst` (TLS cannot half-close: the up
        direction ends only when the caller releases the bridge)."""
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.recv(chunk):
                await dst.send(data)
            if end:
                dst.shutdown_write()

    async def release(self, timeout: float) -> Link | None:
        """Stop bridging once every byte written here has reached `inner`; `inner` back, or
        None (and everything closed) when that did not happen in time."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._up)
        except TimeoutError:
            self.close()
            return None
        self._down.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._down
        super().close()
        self._far.close()
        return self.inner

    def close(self) -> None:
        self._up.cancel()
        self._down.cancel()
        super().close()
        self._far.close()
        self.inner.close()
