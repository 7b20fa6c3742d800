"""Two raw links joined both ways, bytes unchanged: a public connection and the peer link that
carries it to the node holding its client, or, on that node, the peer link and the client's
tunnel it stands for (`arp.relay.peer`).

Unlike `arp.net.pump`, neither side is a tunnel: bytes pass unchanged. A side that ends
half-closes the other, so a request/response that ends one way first still completes; a side
that breaks (a reset, the other node killed) ends both, and the public side is then reset
rather than closed, so a person's client never takes a cut response for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from arp.net.links import Link

_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: close() sends a reset."""


def reset(link: Link) -> None:
    """Close `link` with a TCP reset (plain sockets), else close it."""
    sock = link.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    link.close()


async def _copy(src: Link, dst: Link, chunk: int) -> None:
    while True:
        data = await src.recv(chunk)
        if not data:
            dst.shutdown_write()
            return
        await dst.send(data)


async def join_raw(public: Link, peer: Link, chunk: int, *, initial: bytes = b"") -> bool:
    """Send `initial` (bytes already read from `public`) to `peer`, then copy both ways until
    both end (True) or either breaks (False: `public` is reset). Both links are closed after."""
    loop = asyncio.get_running_loop()
    clean = False
    try:
        await peer.send(initial)
        tasks = [
            loop.create_task(_copy(public, peer, chunk)),
            loop.create_task(_copy(peer, public, chunk)),
        ]
        try:
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        clean = all(not t.cancelled() and t.exception() is None for t in tasks)
    except OSError:
        clean = False
    finally:
        if clean:
            public.close()
        else:
            reset(public)
        peer.close()
    return clean
