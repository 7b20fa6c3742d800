"""The data path for TLS links: the same data frames as `arp.net.pump`, through coroutines.

A TLS link's bytes must pass through Python to be encrypted, so there is no splice and no
readiness state machine here: one task copies each direction, framing the raw side's bytes onto
the tunnel and unframing the tunnel's onto the raw side (`FrameReader`, which arpc also uses
on its error path). `pump_streams` is what `arp.net.pump.pump` runs when either link is TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from arp.config import Limits
from arp.net.links import Link
from arp.protocol.tunnel import END_FRAME, HEADER, TunnelDecoder

Transform = Callable[[bytes], bytes]


async def _send_frames(src: Link, dst: Link, chunk: int, moved: list[int]) -> None:
    while True:
        data = await src.recv(chunk)
        if not data:
            await dst.send(END_FRAME)
            return
        moved[0] += len(data)
        await dst.send(HEADER.pack(len(data)) + data)


class FrameReader:
    """Reads data frames from a link with coroutines (TLS tunnels, the client's error path)."""

    def __init__(self, link: Link, initial: bytes, chunk: int) -> None:
        self._link = link
        self._pending = initial
        self._chunk = chunk
        self._decoder = TunnelDecoder()

    async def payloads(self, sink: Callable[[bytes], object]) -> bool:
        """Hand every payload to `sink` (awaiting it when it returns an awaitable) until the end
        frame (True) or a clean close of the tunnel (False)."""
        decoder = self._decoder
        data, self._pending = self._pending, b""
        while True:
            if data:
                for part in decoder.feed(memoryview(data)):
                    result = sink(bytes(part))
                    if asyncio.iscoroutine(result):
                        await result
                if decoder.ended:
                    return True
            data = await self._link.recv(self._chunk)
            if not data:
                decoder.close()
                return False

    def rest(self) -> bytes:
        return self._decoder.rest


async def _receive_frames(
    src: Link, dst: Link, chunk: int, initial: bytes, first: Transform | None, moved: list[int]
) -> bytes | None:
    reader = FrameReader(src, initial, chunk)

    async def sink(data: bytes) -> None:
        nonlocal first
        moved[1] += len(data)
        if first is not None:
            data, first = first(data), None
        await dst.send(data)

    ended = await reader.payloads(sink)
    dst.shutdown_write()
    return reader.rest() if ended else None


async def pump_streams(
    raw: Link,
    tunnel: Link,
    limits: Limits,
    initial: bytes,
    first: Transform | None,
    moved: list[int],
) -> bytes | None:
    loop = asyncio.get_running_loop()
    outgoing = loop.create_task(_send_frames(raw, tunnel, limits.copy_chunk, moved))
    incoming = loop.create_task(
        _receive_frames(tunnel, raw, limits.copy_chunk, initial, first, moved)
    )
    tasks = [outgoing, incoming]
    try:
        pending: set[asyncio.Task[None] | asyncio.Task[bytes | None]] = set(tasks)
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() is not None for t in finished):
                break
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a peer's reset is an ordinary end
    if outgoing.cancelled() or outgoing.exception() is not None:
        return None
    if incoming.cancelled() or incoming.exception() is not None:
        return None
    return incoming.result()
