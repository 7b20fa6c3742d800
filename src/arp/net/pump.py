"""The data path: move bytes both ways between two links until both directions end.

Between two plain sockets on Linux each direction is a zero-copy `os.splice` through a kernel
pipe, driven by readiness callbacks: Python touches a chunk count, never the bytes. Anything
else (TLS, other systems) falls back to a chunked copy through Python.

A direction that reads EOF half-closes its destination, so protocols that close one side
first (HTTP/1.0 requests, `Connection: close`) work; an error in either direction ends both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Callable

from arp.config import Limits
from arp.net.links import Link

SPLICE_AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_FLAGS = (
    getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2) if SPLICE_AVAILABLE else 0
)

Transform = Callable[[bytes], bytes]


class _SpliceFlow:
    """One direction, src → pipe → dst, as a readiness-driven state machine."""

    __slots__ = (
        "_dst",
        "_dst_sock",
        "_eof",
        "_in_pipe",
        "_loop",
        "_pipe_r",
        "_pipe_w",
        "_size",
        "_src",
        "done",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket, size: int
    ) -> None:
        self._loop = loop
        self._src = src.fileno()
        self._dst = dst.fileno()
        self._dst_sock = dst
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._pipe_w, _F_SETPIPE_SZ, size)
        self._size = size
        self._in_pipe = 0
        self._eof = False
        self.done: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        self._loop.add_reader(self._src, self._on_readable)

    def _on_readable(self) -> None:
        try:
            n = os.splice(self._src, self._pipe_w, self._size, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc)
            return
        if n == 0:
            self._eof = True
            self._loop.remove_reader(self._src)
        self._in_pipe += n
        self._drain()

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._dst)
        self._drain()
        if self._in_pipe == 0 and not self._eof and not self.done.done():
            self._loop.add_reader(self._src, self._on_readable)

    def _drain(self) -> None:
        while self._in_pipe:
            try:
                n = os.splice(self._pipe_r, self._dst, self._in_pipe, flags=_SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                # The destination is full: stop reading until it drains (back-pressure).
                self._loop.remove_reader(self._src)
                self._loop.add_writer(self._dst, self._on_writable)
                return
            except OSError as exc:
                self._finish(exc)
                return
            self._in_pipe -= n
        if self._eof:
            with contextlib.suppress(OSError):
                self._dst_sock.shutdown(socket.SHUT_WR)
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        self.stop()
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def stop(self) -> None:
        """Unhook from the loop and free the pipe; idempotent."""
        if self._pipe_r < 0:
            return
        self._loop.remove_reader(self._src)
        self._loop.remove_writer(self._dst)
        os.close(self._pipe_r)
        os.close(self._pipe_w)
        self._pipe_r = self._pipe_w = -1


async def _copy(src: Link, dst: Link, chunk: int, first: Transform | None) -> None:
    """One direction through Python: for TLS links and systems without splice."""
    while True:
        data = await src.recv(chunk)
        if not data:
            dst.shutdown_write()
            return
        if first is not None:
            data, first = first(data), None
        await dst.send(data)


async def _first_then_splice(
    loop: asyncio.AbstractEventLoop,
    src: Link,
    dst: Link,
    flow_size: int,
    chunk: int,
    first: Transform,
    flows: list[_SpliceFlow],
) -> None:
    """Pass the first chunk through `first` in Python, then splice the rest."""
    data = await src.recv(chunk)
    if not data:
        dst.shutdown_write()
        return
    await dst.send(first(data))
    assert src.sock is not None and dst.sock is not None
    flow = _SpliceFlow(loop, src.sock, dst.sock, flow_size)
    flows.append(flow)
    flow.start()
    await flow.done


async def pump(a: Link, b: Link, limits: Limits, *, b_to_a_first: Transform | None = None) -> None:
    """Relay bytes a ⇄ b until both directions reach EOF or either fails; then close both.

    `b_to_a_first` rewrites the first chunk b sends (the relay adds a Set-Cookie there).
    Errors of the peers (reset, broken pipe) end the pump quietly: they are how TCP ends.
    """
    loop = asyncio.get_running_loop()
    a_sock, b_sock = a.sock, b.sock
    flows: list[_SpliceFlow] = []
    waits: list[asyncio.Future[None]] = []
    try:
        if SPLICE_AVAILABLE and a_sock is not None and b_sock is not None:
            forward = _SpliceFlow(loop, a_sock, b_sock, limits.pipe_size)
            flows.append(forward)
            forward.start()
            waits.append(forward.done)
            if b_to_a_first is None:
                backward = _SpliceFlow(loop, b_sock, a_sock, limits.pipe_size)
                flows.append(backward)
                backward.start()
                waits.append(backward.done)
            else:
                waits.append(
                    loop.create_task(
                        _first_then_splice(
                            loop, b, a, limits.pipe_size, limits.copy_chunk, b_to_a_first, flows
                        )
                    )
                )
        else:
            waits.append(loop.create_task(_copy(a, b, limits.copy_chunk, None)))
            waits.append(loop.create_task(_copy(b, a, limits.copy_chunk, b_to_a_first)))
        pending: set[asyncio.Future[None]] = set(waits)
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not f.cancelled() and f.exception() is not None for f in finished):
                break
    finally:
        for flow in flows:
            flow.stop()
        for wait in waits:
            if not wait.done():
                wait.cancel()
        for wait in waits:
            if wait.done() and not wait.cancelled():
                wait.exception()  # retrieved: a peer's reset is an ordinary end
        a.close()
        b.close()
