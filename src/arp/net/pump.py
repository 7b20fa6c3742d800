"""The data path: join a raw socket (public or local) to a tunnel until both directions end.

On a tunnel, bytes travel in data frames (`arp.protocol.tunnel`: the codec and its pure
decoder): a frame of length 0 ends its direction, the way a FIN ends a TCP direction, except
that the tunnel stays open: once each side has sent and received that end, the tunnel is clean
and can carry the next connection. A tunnel that closes between frames ends its direction like
a FIN but is not reused; one that breaks (inside a frame, a reset) ends both.

Between plain sockets each direction is a readiness-driven state machine with no task and no
coroutine per chunk. It starts by copying through one reusable buffer (`recv_into` + `send`,
the header written in place in front of the payload: the cheapest way to move a short HTTP
exchange); once a read fills the buffer, a sign of bulk transfer, it switches to zero-copy
`os.splice` through a kernel pipe (Linux), one frame per pipeful, so Python touches lengths,
never bytes. TLS links fall back to coroutines that copy.

A direction whose source ends half-closes its destination, so protocols that close one side
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
from typing import Final

from arp.config import Limits
from arp.net import sockio
from arp.net.links import Link
from arp.net.readiness import readiness
from arp.net.sockets import shut_write
from arp.net.streams import FrameReader as FrameReader
from arp.net.streams import pump_streams
from arp.protocol.responses import ResponseTracker
from arp.protocol.tunnel import (
    END_FRAME,
    HEADER,
    HEADER_SIZE,
    TunnelDecoder,
    TunnelProtocolError,
)

SPLICE_AVAILABLE: Final = sys.platform == "linux" and hasattr(os, "splice")
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_FLAGS: Final = (
    getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2) if SPLICE_AVAILABLE else 0
)
COPY_BUFFER: Final = 64 * 1024
"""A read that fills this buffer means bulk: the direction then switches to splice."""

# One read buffer serves every flow: each chunk is sent before the next read (a partial send
# keeps its remainder as bytes), and the loop runs one callback at a time.
_SHARED: Final = bytearray(COPY_BUFFER)
_SHARED_VIEW: Final = memoryview(_SHARED)
_PAYLOAD_ROOM: Final = COPY_BUFFER - HEADER_SIZE
"""A read for the tunnel goes after room for its frame header (`recv_frame`)."""

# Final: compiled code calls these from C statics; an imported name is a dict lookup per call.
_recv_into: Final = sockio.recv_into
_forward_frame: Final = sockio.forward_frame
_frame_out: Final = sockio.frame_out

_MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)
_FRAMES_PER_WAKEUP: Final = 4

Transform = Callable[[bytes], bytes]
Meter = Callable[[int, int], None]
"""Told, once a connection ended, the payload bytes it moved: raw → tunnel, tunnel → raw."""
_RETRY: Final = (BlockingIOError, InterruptedError)


class _Flow:
    """One direction, src → dst, driven by readiness callbacks on the running loop.

    `clean` is set when the direction ended by its end frame (sent or received), the only
    ending after which the tunnel may carry another connection.
    """

    __slots__ = (
        "_dst",
        "_dst_fd",
        "_ended",
        "_in_pipe",
        "_on_done",
        "_out",
        "_pipe_r",
        "_pipe_size",
        "_pipe_w",
        "_reading",
        "_ready",
        "_src",
        "_src_fd",
        "_stopped",
        "clean",
        "error",
        "moved",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        pipe_size: int,
        on_done: Callable[[_Flow], None],
    ) -> None:
        self._ready = readiness(loop)
        self._src, self._dst = src, dst
        self._src_fd, self._dst_fd = src.fileno(), dst.fileno()
        self._pipe_size = pipe_size
        self._on_done = on_done
        self._out: bytes | memoryview | None = None  # read, not yet sent
        self._pipe_r = self._pipe_w = -1  # splice mode once >= 0
        self._in_pipe = 0  # splice mode: payload bytes in the pipe, not yet sent
        self._reading = False
        self._stopped = False
        self._ended = False  # the source reached its end (read by the direction that needs it)
        self.clean = False
        self.error: BaseException | None = None
        self.moved = 0
        """Payload bytes taken from the source: added once per chunk, read at the end."""

    def start(self) -> None:
        self._resume_reading()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _resume_reading(self) -> None:
        if not self._reading and not self._stopped:
            self._reading = True
            self._ready.add_reader(self._src_fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._ready.remove_reader(self._src_fd)

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _send_out(self, flags: int = 0) -> bool:
        """Send what is pending; False when the destination is full (then wait writable)."""
        data = self._out
        while data is not None and len(data):
            try:
                sent = self._dst.send(data, flags)
            except _RETRY:
                # Keep the rest as our own bytes: the shared buffer serves the next read.
                self._out = bytes(data) if isinstance(data, memoryview) else data
                self._wait_writable()
                return False
            data = data[sent:]
        self._out = None
        return True

    def _splice_out(self) -> bool:
        """Move the pipe's bytes to the destination; False when it is full."""
        while self._in_pipe:
            try:
                n = os.splice(self._pipe_r, self._dst_fd, self._in_pipe, flags=_SPLICE_FLAGS)
            except _RETRY:
                self._wait_writable()
                return False
            self._in_pipe -= n
        return True

    def _wait_writable(self) -> None:
        # Back-pressure: stop reading until the destination drains.
        self._pause_reading()
        self._ready.add_writer(self._dst_fd, self._on_writable)

    def _on_writable(self) -> None:
        self._ready.remove_writer(self._dst_fd)
        try:
            self._drain()
        except OSError as exc:
            self._finish(exc)

    def _drain(self) -> None:
        """Send everything pending, then go on reading (or end)."""
        raise NotImplementedError

    def _open_pipe(self) -> None:
        try:
            self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # out of fds: keep copying
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._pipe_w, _F_SETPIPE_SZ, self._pipe_size)

    def _end_destination(self) -> None:
        """The source ended: the destination learns it by a FIN (raw) or an end frame."""
        shut_write(self._dst)

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
        self._ready.remove_writer(self._dst_fd)
        self._close_pipe()

    def unhook(self) -> None:
        """Forget the owner's callback once stopped for good: the owner holds this flow, so
        the two would otherwise be a cycle that only the cyclic collector frees."""
        self._on_done = _no_flow_done

    def _close_pipe(self) -> None:
        if self._pipe_r >= 0:
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1


def _no_flow_done(flow: _Flow) -> None:
    """An unhooked flow's callback."""


def _no_end(leftover: bytes | None) -> None:
    """An ended joint's callback."""


class _ToTunnel(_Flow):
    """Raw socket → tunnel: each read becomes one data frame; the source's EOF, an end frame."""

    __slots__ = ()

    def _on_readable(self) -> None:
        try:
            if self._pipe_r >= 0:
                n = os.splice(self._src_fd, self._pipe_w, self._pipe_size, flags=_SPLICE_FLAGS)
                self._in_pipe = n
                self.moved += n
                self._out = HEADER.pack(n) if n else END_FRAME
            else:
                # The payload with its header in front, sent at once unless it filled the room
                # (the common case, kept short: the frame goes out whole in the same call).
                got = _frame_out(self._src, self._dst, _SHARED)
                if isinstance(got, int):
                    n = got
                    sent = HEADER_SIZE + n if 0 < n < _PAYLOAD_ROOM else 0
                else:
                    n, sent = got
                self.moved += n
                size = HEADER_SIZE + n
                if sent == size:
                    return
                if n == _PAYLOAD_ROOM and SPLICE_AVAILABLE:
                    self._open_pipe()  # bulk: later reads splice; this chunk still goes by copy
                self._out = _SHARED_VIEW[sent:size]
        except _RETRY:
            return
        except OSError as exc:
            self._finish(exc)
            return
        self._ended = n == 0
        self._drain()

    def _drain(self) -> None:
        try:
            # A header goes out with MORE so the kernel sends it in one segment with its payload.
            if not self._send_out(_MSG_MORE if self._in_pipe else 0) or not self._splice_out():
                return
        except OSError as exc:
            self._finish(exc)
            return
        if self._ended:
            self.clean = True
            self._finish(None)
        else:
            self._resume_reading()


class FromTunnel(_Flow):
    """Tunnel → raw socket: payloads of data frames go on; the end frame half-closes the socket.

    Bytes after the end frame belong to the tunnel's next use and are kept in `leftover`. A
    tunnel that closes without its end frame (a peer that died or gave up) is an error, so the
    raw side is reset, never handed a clean end (issue 14 item 3).
    """

    __slots__ = ("_decoder", "_first", "keep_open", "leftover", "moved", "raw_ended", "tracker")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        pipe_size: int,
        on_done: Callable[[_Flow], None],
        first: Transform | None,
    ) -> None:
        super().__init__(loop, src, dst, pipe_size, on_done)
        self._first = first
        self._decoder = TunnelDecoder()
        self.leftover = b""
        self.raw_ended = False
        """The raw socket's own side has ended (read to EOF): it closes next, so no FIN first."""
        self.keep_open = False
        """The end frame does not end the raw socket's direction: the relay asked for it, to
        carry the connection's next request on another tunnel."""
        self.moved = 0
        """Reads so far (a cheap sign of progress for an idle deadline)."""
        self.tracker: ResponseTracker | None = None
        """Told every payload byte, in order (the relay learns where responses end); it keeps
        splices within a counted body, so no response head passes unseen."""

    def feed(self, data: bytes) -> None:
        """Bytes of the tunnel read before the flow started (after StartProxy)."""
        if data:
            self._take(memoryview(data))

    def _on_readable(self) -> None:
        self.moved += 1
        tracker = self.tracker
        try:
            if self._pipe_r >= 0:
                if tracker is None or tracker.body_left or self._in_pipe:
                    self._splice_in()
                    return
                self._close_pipe()  # a counted body ended: the next head must be seen
            if self._first is None and self._decoder.between_frames:
                # The common case, kept short: a read that is one whole frame is sent on in
                # the same call.
                got = _forward_frame(self._src, self._dst, _SHARED)
            else:
                got = _recv_into(self._src, _SHARED, 0)
        except _RETRY:
            return
        except OSError as exc:
            self._finish(exc)
            return
        if isinstance(got, int):
            if got < 0:  # one whole frame of -got bytes, its payload all sent
                self.moved += -got - HEADER_SIZE
                if tracker is not None:
                    tracker.feed_at(_SHARED, HEADER_SIZE, -got)
                return
            if got == 0:
                self._tunnel_closed()
            else:
                self._take(_SHARED_VIEW[:got])
            return
        n, sent = got  # one whole frame, its payload sent in part: the rest waits
        self.moved += n - HEADER_SIZE
        self._out = _SHARED_VIEW[HEADER_SIZE + sent : n]
        self._drain()
        if tracker is not None:
            tracker.feed_at(_SHARED, HEADER_SIZE, n)

    def _take(self, view: memoryview) -> None:
        """Split `view` into payload for the destination and frame headers; then send."""
        decoder = self._decoder
        try:
            parts = decoder.feed(view)
        except TunnelProtocolError as exc:
            self._finish(exc)
            return
        if decoder.ended:
            self.leftover = decoder.rest
            self.clean = True
        tracker = self.tracker
        for part in parts:
            self.moved += len(part)
            if tracker is not None:
                tracker.feed(part)
        if len(parts) == 1:
            self._out = parts[0]
        elif parts:
            self._out = b"".join(parts)
        self._apply_first()
        self._drain()

    def _apply_first(self) -> None:
        if self._first is not None and self._out is not None and len(self._out):
            self._out = self._first(bytes(self._out))
            self._first = None

    def _splice_in(self) -> None:
        # A frame that ends inside the bytes at hand is usually followed by the next header,
        # so a few frames are taken per wake-up (bounded, so other sockets get their turn).
        decoder = self._decoder
        for _ in range(_FRAMES_PER_WAKEUP):
            need = decoder.header_needed()
            if need:
                # A header: read exactly its bytes, so no payload leaves the kernel.
                data = self._src.recv(need)
                if not data:
                    self._tunnel_closed()
                    return
                try:
                    decoder.feed_header(data)
                except TunnelProtocolError as exc:
                    self._finish(exc)
                    return
                if decoder.ended:
                    self.clean = True
                    self._drain()
                    return
                if not decoder.left:
                    return  # the header is still partial
            size = min(decoder.left, self._pipe_size)
            tracker = self.tracker
            if tracker is not None:
                size = min(size, tracker.body_left)
                if not size:
                    return  # a counted body ended inside this frame: its rest goes by copy
            n = os.splice(self._src_fd, self._pipe_w, size, flags=_SPLICE_FLAGS)
            if n == 0:
                self._tunnel_closed()
                return
            decoder.consumed(n)
            if tracker is not None:
                tracker.consumed(n)
            self._in_pipe += n
            self.moved += n
            self._drain()
            if decoder.left or self._in_pipe or not self._reading:
                return

    def _end_destination(self) -> None:
        if not self.raw_ended and not self.keep_open:
            # (raw_ended: a shutdown right before the close would be a wasted syscall)
            super()._end_destination()

    def _tunnel_closed(self) -> None:
        try:
            self._decoder.close()
        except TunnelProtocolError as exc:
            self._finish(exc)
            return
        self._finish(ConnectionResetError("the tunnel closed without its end frame"))

    def _drain(self) -> None:
        try:
            if not self._send_out() or not self._splice_out():
                return
        except OSError as exc:
            self._finish(exc)
            return
        if self.clean:
            self._end_destination()
            self._finish(None)
            return
        if (
            self._decoder.left >= COPY_BUFFER
            and self._pipe_r < 0
            and SPLICE_AVAILABLE
            and (self.tracker is None or self.tracker.body_left >= COPY_BUFFER)
        ):
            self._open_pipe()  # a long frame: its rest moves by splice
        self._resume_reading()


class Joint:
    """Both directions between a raw socket and a tunnel, run by readiness callbacks alone.

    When both directions have ended, or either failed, `on_end` is called (perhaps already
    within `start`) with the tunnel's bytes beyond this connection's end frame when the tunnel
    ended clean and may be reused, else None; `raw` is closed by then, and so is the tunnel
    when it cannot be reused. Errors of the peers (reset, broken pipe) end it quietly: they are
    how TCP ends.
    """

    __slots__ = (
        "_aborted",
        "_ended",
        "_incoming",
        "_initial",
        "_meter",
        "_on_end",
        "_outgoing",
        "_raw",
        "_tunnel",
    )

    def __init__(
        self,
        raw: Link,
        tunnel: Link,
        limits: Limits,
        *,
        on_end: Callable[[bytes | None], None],
        initial: bytes = b"",
        first: Transform | None = None,
        meter: Meter | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        raw_sock, tunnel_sock = raw.sock, tunnel.sock
        if raw_sock is None or tunnel_sock is None:
            raise TypeError("a Joint joins plain sockets; TLS links go through pump()")
        # A caller that knows the loop saves a getpid() (Python 3.11's get_running_loop).
        loop = loop or asyncio.get_running_loop()
        self._raw, self._tunnel = raw, tunnel
        self._on_end = on_end
        self._meter = meter
        self._initial = initial
        self._ended = False
        self._aborted = False
        self._outgoing = _ToTunnel(loop, raw_sock, tunnel_sock, limits.pipe_size, self._done)
        self._incoming = FromTunnel(
            loop, tunnel_sock, raw_sock, limits.pipe_size, self._done, first
        )

    def start(self) -> None:
        self._outgoing.start()
        self._incoming.feed(self._initial)
        self._incoming.start()

    def abort(self) -> None:
        """End now (shutdown, cancellation): both links are reset, since what they carried was
        cut short and a FIN would pass for its complete end; idempotent (nothing after the
        end)."""
        self._outgoing.clean = False
        self._aborted = True
        self._end()

    def _done(self, flow: _Flow) -> None:
        if flow is self._outgoing and flow.clean:
            self._incoming.raw_ended = True
        if flow.error is not None or (self._outgoing.stopped and self._incoming.stopped):
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._outgoing.stop()
        self._incoming.stop()
        self._outgoing.unhook()  # no cycle joint → flow → joint outlives the end
        self._incoming.unhook()
        clean = self._outgoing.clean and self._incoming.clean
        leftover = self._incoming.leftover if clean else None
        broken = (
            self._aborted or self._outgoing.error is not None or self._incoming.error is not None
        )
        (self._raw.reset if broken else self._raw.close)()  # a break: resets, never a clean end
        if leftover is None:
            (self._tunnel.reset if broken else self._tunnel.close)()
        if self._meter is not None:
            self._meter(self._outgoing.moved, self._incoming.moved)
        on_end, self._on_end = self._on_end, _no_end  # nor one through the owner's callback
        on_end(leftover)


async def pump(
    raw: Link,
    tunnel: Link,
    limits: Limits,
    *,
    initial: bytes = b"",
    first: Transform | None = None,
    meter: Meter | None = None,
) -> bytes | None:
    """Relay raw ⇄ tunnel until both directions end; close `raw`.

    `initial` holds tunnel bytes already read (data frames after StartProxy); `first` rewrites
    the first payload going to `raw` (the relay adds a Set-Cookie there); `meter` is told the
    bytes moved each way at the end. Returns the tunnel's
    bytes beyond this connection's end frame when the tunnel is clean and may be reused, else
    None, and then the tunnel is closed too.
    """
    if raw.sock is None or tunnel.sock is None:
        leftover: bytes | None = None
        moved = [0, 0]
        try:
            leftover = await pump_streams(raw, tunnel, limits, initial, first, moved)
        finally:
            # A tunnel that did not end clean (a break, a close without its end frame, a reset
            # of the raw side) reaches both peers as a reset, as on the splice path.
            if leftover is None:
                raw.reset()
                tunnel.reset()
            else:
                raw.close()
            if meter is not None:
                meter(moved[0], moved[1])
        return leftover
    done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

    def on_end(leftover: bytes | None) -> None:
        if not done.done():
            done.set_result(leftover)

    joint = Joint(raw, tunnel, limits, on_end=on_end, initial=initial, first=first, meter=meter)
    try:
        joint.start()
        return await done
    finally:
        joint.abort()  # cancelled: close both; after the end, nothing


class CountedSplice:
    """Moves bytes of a known count (a request body) from a raw socket to tunnels as data
    frames through a kernel pipe: Python touches lengths, never the bytes.

    `read` takes at most one pipeful from the source; `flush` sends its header and its bytes to
    a tunnel and says whether all went (else wait until the tunnel is writable and flush
    again). Nothing may be sent to that tunnel in between (`pending`).
    """

    __slots__ = ("_header", "_in_pipe", "_pipe_r", "_pipe_size", "_pipe_w", "_src_fd")

    def __init__(self, src: socket.socket, pipe_size: int) -> None:
        self._src_fd = src.fileno()
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._pipe_w, _F_SETPIPE_SZ, pipe_size)
        self._pipe_size = pipe_size
        self._header = b""
        self._in_pipe = 0

    @property
    def pending(self) -> bool:
        return bool(self._header or self._in_pipe)

    def read(self, count: int) -> int:
        """Up to `count` bytes from the source into the pipe (0: the source ended). Raises
        BlockingIOError when none are there; call only when nothing is `pending`."""
        n = os.splice(self._src_fd, self._pipe_w, min(count, self._pipe_size), flags=_SPLICE_FLAGS)
        self._header = HEADER.pack(n) if n else b""
        self._in_pipe = n
        return n

    def flush(self, dst: socket.socket) -> bool:
        """Send what is pending to `dst`; False when `dst` is full."""
        try:
            while self._header:
                sent = dst.send(self._header, _MSG_MORE)
                self._header = self._header[sent:]
            while self._in_pipe:
                self._in_pipe -= os.splice(
                    self._pipe_r, dst.fileno(), self._in_pipe, flags=_SPLICE_FLAGS
                )
        except _RETRY:
            return False
        return True

    def close(self) -> None:
        if self._pipe_r >= 0:
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1
