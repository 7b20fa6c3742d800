"""The data path: move bytes both ways between two links until both directions end.

Between two plain sockets each direction is a readiness-driven state machine with no task and
no coroutine per chunk. It starts by copying through one reusable buffer (`recv_into` + `send`:
the cheapest way to move a short HTTP exchange), and once a read fills the buffer, a sign of bulk
transfer, it switches for good to zero-copy `os.splice` through a kernel pipe (Linux): from then
on Python touches chunk counts, never bytes. TLS links fall back to a coroutine copy.

A direction that reads EOF half-closes its destination, so protocols that close one side first
(HTTP/1.0 requests, `Connection: close`) work; an error in either direction ends both.
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
COPY_BUFFER = 64 * 1024
"""A read that fills this buffer means bulk: the direction then switches to splice."""

# One read buffer serves every flow: each chunk is sent before the next read (a partial send
# keeps its remainder as bytes), and the loop runs one callback at a time.
_SHARED = bytearray(COPY_BUFFER)
_SHARED_VIEW = memoryview(_SHARED)

Transform = Callable[[bytes], bytes]
_RETRY = (BlockingIOError, InterruptedError)


class _Flow:
    """One direction, src → dst, driven by readiness callbacks on the running loop."""

    __slots__ = (
        "_dst",
        "_dst_fd",
        "_eof",
        "_first",
        "_in_pipe",
        "_loop",
        "_on_done",
        "_pending",
        "_pipe_r",
        "_pipe_size",
        "_pipe_w",
        "_reading",
        "_src",
        "_src_fd",
        "_stopped",
        "error",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        pipe_size: int,
        on_done: Callable[[_Flow], None],
        first: Transform | None = None,
    ) -> None:
        self._loop = loop
        self._src, self._dst = src, dst
        self._src_fd, self._dst_fd = src.fileno(), dst.fileno()
        self._pipe_size = pipe_size
        self._on_done = on_done
        self._first = first
        self._pending: bytes | memoryview | None = None  # copy mode: read, not yet sent
        self._pipe_r = self._pipe_w = -1  # splice mode once >= 0
        self._in_pipe = 0  # splice mode: bytes in the pipe, not yet sent
        self._eof = False
        self._reading = False
        self._stopped = False
        self.error: BaseException | None = None

    def start(self) -> None:
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._reading and not self._stopped:
            self._reading = True
            self._loop.add_reader(self._src_fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._src_fd)

    def _on_readable(self) -> None:
        if self._pipe_r >= 0:
            self._splice_in()
        else:
            self._copy_in()

    # -- copy mode ----------------------------------------------------------------------------

    def _copy_in(self) -> None:
        try:
            n = self._src.recv_into(_SHARED)
        except _RETRY:
            return
        except OSError as exc:
            self._finish(exc)
            return
        if n == 0:
            self._at_eof()
            return
        data: bytes | memoryview = _SHARED_VIEW[:n]
        if self._first is not None:
            data = self._first(bytes(data))
            self._first = None
        self._pending = data
        if n == COPY_BUFFER and SPLICE_AVAILABLE:
            self._open_pipe()  # bulk: later reads splice; this chunk still goes by copy
        self._copy_out()

    def _copy_out(self) -> None:
        data = self._pending
        while data is not None and len(data):
            try:
                sent = self._dst.send(data)
            except _RETRY:
                # Keep the rest as our own bytes: the shared buffer serves the next read.
                self._pending = bytes(data) if isinstance(data, memoryview) else data
                self._pause_reading()
                self._loop.add_writer(self._dst_fd, self._on_writable)
                return
            except OSError as exc:
                self._finish(exc)
                return
            data = data[sent:]
        self._pending = None
        self._resume_reading()

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._dst_fd)
        if self._pipe_r >= 0 and self._pending is None:
            self._splice_out()
        else:
            self._copy_out()
            if self._pending is None and self._pipe_r >= 0:
                self._splice_out()

    # -- splice mode --------------------------------------------------------------------------

    def _open_pipe(self) -> None:
        try:
            self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # out of fds: keep copying
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._pipe_w, _F_SETPIPE_SZ, self._pipe_size)

    def _splice_in(self) -> None:
        try:
            n = os.splice(self._src_fd, self._pipe_w, self._pipe_size, flags=_SPLICE_FLAGS)
        except _RETRY:
            return
        except OSError as exc:
            self._finish(exc)
            return
        if n == 0:
            self._eof = True
            self._pause_reading()
        self._in_pipe += n
        self._splice_out()

    def _splice_out(self) -> None:
        while self._in_pipe:
            try:
                n = os.splice(self._pipe_r, self._dst_fd, self._in_pipe, flags=_SPLICE_FLAGS)
            except _RETRY:
                # The destination is full: stop reading until it drains (back-pressure).
                self._pause_reading()
                self._loop.add_writer(self._dst_fd, self._on_writable)
                return
            except OSError as exc:
                self._finish(exc)
                return
            self._in_pipe -= n
        if self._eof:
            self._at_eof()
        else:
            self._resume_reading()

    # -- ending -------------------------------------------------------------------------------

    def _at_eof(self) -> None:
        with contextlib.suppress(OSError):
            self._dst.shutdown(socket.SHUT_WR)
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if self._stopped:
            return
        self.error = exc
        self.stop()
        self._on_done(self)

    def stop(self) -> None:
        """Unhook from the loop and free the pipe; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._pause_reading()
        self._loop.remove_writer(self._dst_fd)
        if self._pipe_r >= 0:
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1


async def _copy(src: Link, dst: Link, chunk: int, first: Transform | None) -> None:
    """One direction through Python coroutines: for TLS links."""
    while True:
        data = await src.recv(chunk)
        if not data:
            dst.shutdown_write()
            return
        if first is not None:
            data, first = first(data), None
        await dst.send(data)


async def pump(a: Link, b: Link, limits: Limits, *, b_to_a_first: Transform | None = None) -> None:
    """Relay bytes a ⇄ b until both directions reach EOF or either fails; then close both.

    `b_to_a_first` rewrites the first chunk b sends (the relay adds a Set-Cookie there).
    Errors of the peers (reset, broken pipe) end the pump quietly: they are how TCP ends.
    """
    a_sock, b_sock = a.sock, b.sock
    try:
        if a_sock is not None and b_sock is not None:
            await _pump_sockets(a_sock, b_sock, limits, b_to_a_first)
        else:
            await _pump_streams(a, b, limits, b_to_a_first)
    finally:
        a.close()
        b.close()


async def _pump_sockets(
    a: socket.socket, b: socket.socket, limits: Limits, first: Transform | None
) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = 2

    def on_done(flow: _Flow) -> None:
        nonlocal remaining
        remaining -= 1
        if (flow.error is not None or remaining == 0) and not done.done():
            done.set_result(None)

    forward = _Flow(loop, a, b, limits.pipe_size, on_done)
    backward = _Flow(loop, b, a, limits.pipe_size, on_done, first)
    try:
        forward.start()
        backward.start()
        await done
    finally:
        forward.stop()
        backward.stop()


async def _pump_streams(a: Link, b: Link, limits: Limits, first: Transform | None) -> None:
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_copy(a, b, limits.copy_chunk, None)),
        loop.create_task(_copy(b, a, limits.copy_chunk, first)),
    ]
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
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
