"""A `Link` is one end of a byte stream the relay or client moves data over.

Plain TCP links stay raw sockets, so the pump can splice them in the kernel; TLS links are
asyncio streams, since their bytes must pass through Python to be encrypted.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from arp.config import Limits
from arp.net import sockio
from arp.net.readiness import wait_readable
from arp.net.sockets import connect, reset, shut_write, tune
from arp.protocol import frames

if TYPE_CHECKING:
    import ssl  # annotations only: a process without TLS may have no ssl (arp.runtime)


class Link:
    """One end of a byte stream: receive, send, half-close, close."""

    async def recv(self, size: int) -> bytes:
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    def shutdown_write(self) -> None:
        """Tell the peer no more bytes come (TCP FIN), keeping the other direction open."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the link at once; idempotent."""
        raise NotImplementedError

    def reset(self) -> None:
        """Release the link at once with a TCP reset: the peer must not see a clean end."""
        self.close()

    def is_idle_alive(self) -> bool:
        """For a link that should be silent: whether its peer is still there."""
        raise NotImplementedError

    @property
    def sock(self) -> socket.socket | None:
        """The raw socket where bytes can move without Python (plain TCP), else None."""
        return None


class SocketLink(Link):
    """A plain TCP socket, non-blocking, driven by the running loop."""

    __slots__ = ("_closed", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False

    @property
    def sock(self) -> socket.socket:
        return self._sock

    async def recv(self, size: int) -> bytes:
        # Try the syscall first: on the relay's hot path data is usually there already, and a
        # wait costs a registration (arp.net.readiness).
        while True:
            try:
                return self._sock.recv(size)
            except (BlockingIOError, InterruptedError):
                await wait_readable(self._sock.fileno())

    async def send(self, data: bytes) -> None:
        if not data:
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            await asyncio.get_running_loop().sock_sendall(self._sock, data[sent:])

    def shutdown_write(self) -> None:
        shut_write(self._sock)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_socket(self._sock)

    def reset(self) -> None:
        if not self._closed:
            self._closed = True
            reset(self._sock)

    def is_idle_alive(self) -> bool:
        return not self._closed and not sockio.peer_closed(self._sock)


_close_socket: Final = _socket.socket.close
"""`socket.socket.close` without its Python wrapper (two interpreted calls per close, two
closes per relayed connection in each process), which only defers the close while a
`makefile()` is open: a link's socket never has one. The object's `fileno()` reads -1 after
it, as after any close."""


class StreamLink(Link):
    """An asyncio stream pair (used for TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def recv(self, size: int) -> bytes:
        return await self.reader.read(size)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def shutdown_write(self) -> None:
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.write_eof()
        # TLS cannot half-close: the peer learns of the end when the whole link closes.

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None and not self.writer.transport.is_closing():
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def is_idle_alive(self) -> bool:
        return not (
            self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None
        )


async def wrap_tls_server(
    sock: socket.socket, context: ssl.SSLContext, timeout: float
) -> StreamLink:
    """Run the server side of a TLS handshake on an accepted socket."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    protocol = asyncio.StreamReaderProtocol(reader)
    async with asyncio.timeout(timeout):
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock, ssl=context, ssl_handshake_timeout=timeout
        )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return StreamLink(reader, writer)


async def open_link(
    host: str,
    port: int,
    *,
    timeout: float,
    limits: Limits,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    keepalive: bool = False,
) -> Link:
    """Connect to host:port, over TLS when `tls` is given; errors name the address."""
    sock = await connect(host, port, timeout, limits, keepalive=keepalive)
    if tls is None:
        return SocketLink(sock)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                sock=sock,
                ssl=tls,
                server_hostname=server_hostname or host,
                ssl_handshake_timeout=timeout,
                limit=2**20,
            )
    except BaseException:
        sock.close()
        raise
    with contextlib.suppress(OSError):
        raw = writer.get_extra_info("socket")
        if raw is not None:
            tune(raw, limits, keepalive=keepalive)
    return StreamLink(reader, writer)


async def read_message(
    recv: Callable[[int], Awaitable[bytes]], decoder: frames.FrameDecoder, timeout: float | None
) -> frames.Message:
    """The next control message from `recv` within `timeout` (None: no deadline, for idle
    pooled tunnels, whose dead peers TCP keepalive finds); TimeoutError otherwise."""
    if timeout is None:
        return await _next_message(recv, decoder)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            return await _next_message(recv, decoder)
    except TimeoutError:
        # A deadline measures the peer's silence, not this process's: after a stall (a busy
        # loop, a paused process), uvloop runs due timers before it polls, so the deadline
        # fires ahead of bytes that arrived in time. Late by more than a tenth of the deadline,
        # it looks once more, for as long as it was late (never longer than the deadline).
        late = loop.time() - deadline
        if late <= timeout / 10:
            raise
        async with asyncio.timeout(min(late, timeout)):
            return await _next_message(recv, decoder)


async def _next_message(
    recv: Callable[[int], Awaitable[bytes]], decoder: frames.FrameDecoder
) -> frames.Message:
    while (message := decoder.next_message()) is None:
        data = await recv(65536)
        if not data:
            raise ConnectionResetError("the link closed in the middle of the protocol")
        decoder.receive_data(data)
    return message
