"""The data path's socket calls and epoll dispatch: the C ones of `arp.net._sockio` when built.

Why: through the socket module each call of the four per keep-alive request costs about 930
instructions around the system call (a method lookup, a parsed argument tuple, a memoryview
slice for the range, a release and retake of the GIL); `_sockio` (built with the compiled data
path, `arp.native`) makes the same calls with ranges in integers and keeps the GIL, since
every call passes ``MSG_DONTWAIT`` and cannot block. Without the build (``ARP_NATIVE=0``, no
C compiler) the functions below do the same through the socket module.

`forward_frame`, `frame_out` and `forward_if_same` are a read and a send in one call, for the
common case of a chunk that is one data frame (a keep-alive request or response) or, at the
relay, a request that repeats the last one byte for byte (its rewritten head goes on): one
call less per chunk, and none of the glue between the two in compiled Python.

`peer_closed` and `accept` serve a new connection: the dead-tunnel check before a pooled
tunnel takes a request, and the public port's accept. Through the socket module the first
raises and catches BlockingIOError for every live tunnel (about 17,000 instructions with the
flag enum's arithmetic, 15 % of what arps spent on a new connection), and the second builds
an address tuple and pays an ``ioctl`` to make the socket non-blocking; here they answer in
integers and ``accept4`` makes it non-blocking. `peer_ip` is the caller's address without
the socket module's address tuple, and `epoll_set` a readiness registration's change in one
``epoll_ctl`` with the GIL kept (four per relayed connection in each process).

`dispatch` is the readiness callbacks' loop (`arp.net.selector`): one ``epoll_wait`` and a
call per event, where asyncio's epoll wrapper makes a tuple per event, mallocs its event
array per wait and releases the GIL even for a poll that cannot wait.

They raise what the socket module raises (BlockingIOError when nothing is ready, the errno's
OSError subclass otherwise); ranges outside their buffer are a ValueError.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable
from typing import Any, Final

from arp.protocol.tunnel import HEADER, HEADER_SIZE

Buffer = bytes | bytearray | memoryview
_DONTWAIT: Final = int(getattr(socket, "MSG_DONTWAIT", 0))
_NOSIGNAL: Final = int(getattr(socket, "MSG_NOSIGNAL", 0))
_PEEK: Final = int(getattr(socket, "MSG_PEEK", 2)) | _DONTWAIT
"""Plain ints: the socket module's flags are an IntFlag, whose ``|`` runs enum code."""
_IN: Final = int(getattr(select, "EPOLLIN", 1))
_OUT: Final = int(getattr(select, "EPOLLOUT", 4))
_ERR: Final = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
MAX_BATCH: Final = 1024
"""The most events `dispatch` takes per wait (`BATCH_MAX` in _sockio.c, its event array on the
stack)."""


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


def _send_some(sock: socket.socket, data: memoryview) -> int:
    """Send what fits; 0 when the socket is full."""
    try:
        return sock.send(data, _DONTWAIT | _NOSIGNAL)
    except BlockingIOError:
        return 0


def _forward_frame(
    src: socket.socket, dst: socket.socket, buffer: bytearray
) -> int | tuple[int, int]:
    """Receive from the tunnel `src` into `buffer`; when the n bytes read are exactly one whole
    data frame with a payload, send the payload on to `dst` at once: -n when all of it went,
    ``(n, sent)`` when only part did. Otherwise n, nothing sent (0: the tunnel's end)."""
    if len(buffer) <= HEADER_SIZE:
        raise ValueError("the buffer must hold a header and a payload")
    n = src.recv_into(buffer, 0, _DONTWAIT)
    if n <= HEADER_SIZE or HEADER.unpack_from(buffer)[0] != n - HEADER_SIZE:
        return n
    sent = _send_some(dst, memoryview(buffer)[HEADER_SIZE:n])
    return -n if sent == n - HEADER_SIZE else (n, sent)


def _frame_out(src: socket.socket, dst: socket.socket, buffer: bytearray) -> int | tuple[int, int]:
    """`_recv_frame` from `src`; when 0 < n < the room, the frame goes to the tunnel `dst` at
    once: n when it all went, ``(n, sent)`` when only part did. Otherwise n, nothing sent."""
    n = _recv_frame(src, buffer)
    if n == 0 or n == len(buffer) - HEADER_SIZE:
        return n
    sent = _send_some(dst, memoryview(buffer)[: HEADER_SIZE + n])
    return n if sent == HEADER_SIZE + n else (n, sent)


def _forward_if_same(
    src: socket.socket, dst: socket.socket, buffer: bytearray, expected: bytes, instead: bytes
) -> int | tuple[int, int]:
    """Receive from `src` into `buffer`; when the n bytes read are exactly `expected`, send
    `instead` to `dst` at once: -n when all of it went, ``(n, sent)`` when only part did.
    Otherwise n, nothing sent (0: the peer's end)."""
    if not buffer:
        raise ValueError("the buffer must not be empty")
    n = src.recv_into(buffer, 0, _DONTWAIT)
    if n == 0 or n != len(expected) or buffer[:n] != expected:
        return n
    sent = _send_some(dst, memoryview(instead))
    return -n if sent == len(instead) else (n, sent)


def _peer_closed(sock: socket.socket) -> bool:
    """Whether an idle socket's peer has gone (FIN, RST) or sent bytes it should not have."""
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # EOF (b""), or bytes an idle link must never carry


def _accept(listener: socket.socket) -> int:
    """One pending connection's descriptor, non-blocking; -1 when none is pending."""
    try:
        fd, _ = listener._accept()  # type: ignore[attr-defined]
    except BlockingIOError:
        return -1
    os.set_blocking(fd, False)
    return int(fd)


def _epoll_set(epoll: Any, fd: int, old: int, new: int) -> None:
    """Change what `epoll` watches on `fd` from the mask `old` to `new` (0: not registered)."""
    for name, value in (("fd", fd), ("old", old), ("new", new)):
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if new == old:
        return
    try:
        if not new:
            epoll.unregister(fd)
        elif not old:
            epoll.register(fd, new)
        else:
            epoll.modify(fd, new)
    except FileExistsError:  # (only register's): a stale entry of a closed descriptor
        epoll.modify(fd, new)
    except OSError as exc:
        if new or exc.errno not in (errno.EBADF, errno.ENOENT):
            raise  # (a closed descriptor's registration went with it)


def _peer_ip(sock: socket.socket) -> str | None:
    """The IP address of a connected socket's peer; None when it has none."""
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return str(peer[0]).partition("%")[0]


def _dispatch(
    epoll: Any,
    timeout_ms: int,
    maxevents: int,
    readers: list[Any],
    writers: list[Any],
    loop_keys: list[Any] | None,
    on_error: Callable[[BaseException], object],
) -> list[tuple[Any, int]] | None:
    """One epoll wait, its events' callbacks run: a reader (``readers[fd]``) on EPOLLIN, ERR
    or HUP, then a writer on EPOLLOUT, ERR or HUP, each looked up just before its call (an
    earlier one may have removed it). None when no event came, else ``(loop_keys[fd], mask)``
    for each event of a descriptor the loop has registered. An exception in a callback goes
    to `on_error`, but SystemExit and KeyboardInterrupt, which go up."""
    if timeout_ms < -1 or not 1 <= maxevents <= MAX_BATCH:
        raise ValueError("timeout_ms must be -1 or more, maxevents 1 to 1024")
    events = epoll.poll(timeout_ms * 1e-3 if timeout_ms >= 0 else -1, maxevents)
    if not events:
        return None
    ready: list[tuple[Any, int]] = []
    for fd, mask in events:
        for wanted, table in ((_IN | _ERR, readers), (_OUT | _ERR, writers)):
            callback = table[fd] if mask & wanted and 0 <= fd < len(table) else None
            if callback is None:
                continue
            try:
                callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                on_error(exc)
        if loop_keys is not None and 0 <= fd < len(loop_keys) and loop_keys[fd] is not None:
            ready.append((loop_keys[fd], mask))
    return ready


try:
    from arp.net._sockio import accept as accept
    from arp.net._sockio import dispatch as dispatch
    from arp.net._sockio import epoll_set as epoll_set
    from arp.net._sockio import forward_frame as forward_frame
    from arp.net._sockio import forward_if_same as forward_if_same
    from arp.net._sockio import frame_out as frame_out
    from arp.net._sockio import peer_closed as peer_closed
    from arp.net._sockio import peer_ip as peer_ip
    from arp.net._sockio import recv_frame as recv_frame
    from arp.net._sockio import recv_into as recv_into
    from arp.net._sockio import send as send

    BUILT = True
    """Whether the C calls are what runs (the compiled data path is built and loaded)."""
except ImportError:  # not built: the same calls through the socket module
    recv_into, recv_frame, send, dispatch = _recv_into, _recv_frame, _send, _dispatch
    forward_frame, frame_out, forward_if_same = _forward_frame, _frame_out, _forward_if_same
    peer_closed, accept, epoll_set, peer_ip = _peer_closed, _accept, _epoll_set, _peer_ip
    BUILT = False
