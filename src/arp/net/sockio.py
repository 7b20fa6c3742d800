"""The data path's non-blocking socket calls: the C ones of `arp.net._sockio` when built.

Why: through the socket module each call of the four per keep-alive request costs about 930
instructions around the system call (a method lookup, a parsed argument tuple, a memoryview
slice for the range, a release and retake of the GIL); `_sockio` (built with the compiled data
path, `arp.native`) makes the same calls with ranges in integers and keeps the GIL, since
every call passes ``MSG_DONTWAIT`` and cannot block. Without the build (``ARP_NATIVE=0``, no
C compiler) the functions below do the same through the socket module.

They raise what the socket module raises (BlockingIOError when nothing is ready, the errno's
OSError subclass otherwise); ranges outside their buffer are a ValueError.
"""

from __future__ import annotations

import socket
from typing import Final

from arp.protocol.tunnel import HEADER, HEADER_SIZE

Buffer = bytes | bytearray | memoryview
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_NOSIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)


def _recv_into(sock: socket.socket, buffer: bytearray, start: int) -> int:
    """Receive into ``buffer[start:]``; the count (0: the peer's end)."""
    if not 0 <= start < len(buffer):
        raise ValueError("start must be inside the buffer")
    return sock.recv_into(memoryview(buffer)[start:], 0, _DONTWAIT)


def _recv_frame(sock: socket.socket, buffer: bytearray) -> int:
    """Receive into ``buffer[4:]`` and write the data frame header of the count in front."""
    if len(buffer) <= HEADER_SIZE:
        raise ValueError("the buffer must hold a header and a payload")
    n = sock.recv_into(memoryview(buffer)[HEADER_SIZE:], 0, _DONTWAIT)
    HEADER.pack_into(buffer, 0, n)
    return n


def _send(sock: socket.socket, data: Buffer, start: int, end: int, flags: int) -> int:
    """Send ``data[start:end]``; the count sent."""
    if not 0 <= start <= end <= len(data):
        raise ValueError("start:end must be a range inside the data")
    return sock.send(memoryview(data)[start:end], flags | _DONTWAIT | _NOSIGNAL)


try:
    from arp.net._sockio import recv_frame as recv_frame
    from arp.net._sockio import recv_into as recv_into
    from arp.net._sockio import send as send

    BUILT = True
    """Whether the C calls are what runs (the compiled data path is built and loaded)."""
except ImportError:  # not built: the same calls through the socket module
    recv_into, recv_frame, send = _recv_into, _recv_frame, _send
    BUILT = False
