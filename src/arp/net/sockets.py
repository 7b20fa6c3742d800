"""Socket set-up shared by every listener and link: the only place that tunes sockets."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

from arp.config import SOCKET_OPTIONS, Limits
from arp.net import sockio

log = logging.getLogger(__name__)


_TCP: Final = int(socket.IPPROTO_TCP)
_SOL: Final = int(socket.SOL_SOCKET)
_NODELAY: Final = int(socket.TCP_NODELAY)
_SNDBUF: Final = int(socket.SO_SNDBUF)
_RCVBUF: Final = int(socket.SO_RCVBUF)
_KEEPALIVE_OPTIONS: Final = tuple(
    (level, option, value)
    for level, name, value in (
        (_SOL, "SO_KEEPALIVE", 1),
        (_TCP, "TCP_KEEPIDLE", SOCKET_OPTIONS.keepalive_idle),
        (_TCP, "TCP_KEEPINTVL", SOCKET_OPTIONS.keepalive_interval),
        (_TCP, "TCP_KEEPCNT", SOCKET_OPTIONS.keepalive_count),
    )
    if (option := getattr(socket, name, None)) is not None
)
"""What `tune` sets for `keepalive`, as plain ints (the ones this platform has)."""


def tune(sock: socket.socket, limits: Limits, *, keepalive: bool = False) -> None:
    """TCP_NODELAY (and `Limits.socket_buffer`, when set); with `keepalive`, probes that find
    a dead peer of a long-lived idle link (control links and pooled tunnels) within about a
    minute. A refused option is skipped: none is needed for correctness.

    (Plain ``try`` and ints, not ``contextlib.suppress`` and the socket module's names: each
    suppress is a Python object entered and left, and arpc tunes two sockets per connection.)
    """
    try:  # noqa: SIM105 - see above
        sock.setsockopt(_TCP, _NODELAY, 1)
    except OSError:
        pass
    if limits.socket_buffer:
        try:
            sock.setsockopt(_SOL, _SNDBUF, limits.socket_buffer)
            sock.setsockopt(_SOL, _RCVBUF, limits.socket_buffer)
        except OSError:
            pass
    if keepalive:
        for level, option, value in _KEEPALIVE_OPTIONS:
            try:  # noqa: SIM105 - see above
                sock.setsockopt(level, option, value)
            except OSError:
                pass


_SOCK_NONBLOCK: Final = int(getattr(socket, "SOCK_NONBLOCK", 0))
_ACCEPTED: Final = int(socket.SOCK_STREAM) | _SOCK_NONBLOCK
"""The type an accepted socket is built with: SOCK_NONBLOCK tells the socket object that
`sockio.accept` made it non-blocking (so it sets its own timeout to 0 without an ``ioctl``)."""

# Accepted sockets inherit the listener's options on Linux (buffers, TCP_NODELAY, keepalive), so
# setting them once on the listener saves several syscalls per accepted connection.
_ACCEPTED_INHERIT: Final = sys.platform == "linux"


def listen(
    host: str, port: int, limits: Limits, *, keepalive: bool = False, client_first: bool = False
) -> socket.socket:
    """A non-blocking listening socket with a high backlog, tuned like every link (`keepalive`
    for long-lived ones); raises OSError naming the address.

    `client_first` is for a protocol whose client speaks first (HTTP): on Linux the kernel then
    hands a connection over only once its first bytes have arrived (TCP_DEFER_ACCEPT), so the
    request head is read at once instead of waiting on the loop; a silent client is handed over
    after a second and meets the first-byte deadline as before.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Buffer sizes must be set before the handshake; accepted sockets inherit them.
        tune(sock, limits, keepalive=keepalive)
        if client_first and hasattr(socket, "TCP_DEFER_ACCEPT"):
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, SOCKET_OPTIONS.defer_accept
                )
        sock.bind((host, port))
        sock.listen(limits.listen_backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def connect_literal(
    host: str, port: int, limits: Limits, *, keepalive: bool = False
) -> tuple[socket.socket, tuple[Any, ...], bool] | None:
    """Start connecting a tuned, non-blocking socket to an IP literal without waiting: the
    socket, the address and whether it is connected already (a loopback or LAN handshake is
    usually done within the call); None when `host` is a name (then use `connect`). OSError
    names the address; a socket that failed is closed."""
    infos = _literal_address(host, port)
    if infos is None:
        return None
    family, type_, proto, _, address = infos[0]
    sock = _new_socket(family, type_, proto, limits, keepalive)
    try:
        connected = _start_connect(sock, address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot connect to {host}:{port}: {exc.strerror}") from None
    return sock, address, connected


async def finish_connect(
    sock: socket.socket, address: tuple[Any, ...], timeout: float, host: str, port: int
) -> None:
    """Wait, within `timeout`, for a connect `connect_literal` started; on failure the socket
    is closed and OSError or TimeoutError names the address."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot connect to {host}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise


async def connect(
    host: str, port: int, timeout: float, limits: Limits, *, keepalive: bool = False
) -> socket.socket:
    """A connected, tuned, non-blocking socket; OSError or TimeoutError names the address."""
    started = connect_literal(host, port, limits, keepalive=keepalive)
    if started is not None:
        sock, address, connected = started
        if not connected:
            await finish_connect(sock, address, timeout, host, port)
        return sock
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    async with asyncio.timeout(timeout):
        for family, type_, proto, _, address in await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            sock = _new_socket(family, type_, proto, limits, keepalive)
            try:
                if not _start_connect(sock, address):
                    await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
    reason = last.strerror if last is not None else "no address"
    raise OSError(getattr(last, "errno", None), f"cannot connect to {host}:{port}: {reason}")


def _new_socket(
    family: int, type_: int, proto: int, limits: Limits, keepalive: bool
) -> socket.socket:
    if _SOCK_NONBLOCK:
        sock = socket.socket(family, type_ | _SOCK_NONBLOCK, proto)  # no ioctl to make it so
    else:  # pragma: no cover - platforms without SOCK_NONBLOCK
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
    # Everything is set before the handshake: the buffer sizes decide the window scale.
    tune(sock, limits, keepalive=keepalive)
    return sock


_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


_LITERALS: Final[dict[tuple[str, int], list[_AddrInfo] | None]] = {}
"""`_literal_address`'s answers: a process connects to few addresses (its targets, its relays),
each once per connection."""
_LITERALS_KEPT: Final = 256
_UNKNOWN: Final[list[_AddrInfo]] = []
"""Not in `_LITERALS` yet (one lookup where ``in`` and ``[]`` are two)."""


def _literal_address(host: str, port: int) -> list[_AddrInfo] | None:
    """getaddrinfo's answer for an IP literal, without a trip through the resolver."""
    key = (host, port)
    known = _LITERALS.get(key, _UNKNOWN)
    if known is not _UNKNOWN:
        return known
    answer: list[_AddrInfo] | None = None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        address: tuple[Any, ...] = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        answer = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
        break
    if len(_LITERALS) >= _LITERALS_KEPT:
        _LITERALS.clear()
    _LITERALS[key] = answer
    return answer


_EINPROGRESS: Final = errno.EINPROGRESS
_EAGAIN: Final = errno.EAGAIN
_EALREADY: Final = errno.EALREADY
_EISCONN: Final = errno.EISCONN
"""Constants: in compiled code ``errno.EAGAIN`` is a module attribute lookup at each use."""


def _start_connect(sock: socket.socket, address: tuple[Any, ...]) -> bool:
    """Start connecting a non-blocking socket: True when connected already, False when the
    loop must wait for it; OSError when it failed.

    A loopback (or LAN-fast) handshake completes inside the first ``connect`` call even though
    it reports EINPROGRESS; asking again costs one syscall, where the loop's wait for
    writability costs a poll handle, two ``epoll_ctl`` calls and a wake-up (about 100 µs here,
    paid for each connection arpc makes to its local service).
    """
    err = sock.connect_ex(address)
    if err in (_EINPROGRESS, _EAGAIN):
        err = sock.connect_ex(address)
        if err in (_EINPROGRESS, _EALREADY, _EAGAIN):
            return False
        if err == _EISCONN:
            err = 0
    if err:
        raise OSError(err, os.strerror(err))
    return True


def shut_write(sock: socket.socket) -> None:
    """Half-close `sock` (a FIN); a socket that is gone already is no error. A plain ``try``,
    not ``contextlib.suppress`` (an object per call): it runs once per relayed connection."""
    try:  # noqa: SIM105 - see above
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


def reset(sock: socket.socket) -> None:
    """Close `sock` with a TCP reset (SO_LINGER 0), not a FIN: how a broken link is passed on,
    so a peer never takes a cut-short stream for a complete one."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: each relayed connection holds several fds."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = hard if hard != resource.RLIM_INFINITY else 1 << 20
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def accept_loop(
    listener: socket.socket,
    handle: Callable[[socket.socket], Coroutine[Any, Any, None] | None],
    limits: Limits,
    tasks: set[asyncio.Task[None]],
    name: str,
) -> None:
    """Accept until cancelled, calling `handle` per connection at once; the coroutine it
    returns (an ``async def`` handler always returns one) runs in a task kept in `tasks`, and a
    handler that dealt with the connection itself returns None.

    The listener stays registered with the loop and each readiness event accepts every pending
    connection (the loop's `sock_accept` re-registers per connection). Running out of file
    descriptors pauses accepting briefly instead of ending the server.
    """
    loop = asyncio.get_running_loop()
    fd = listener.fileno()
    keepalive = bool(listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
    # `socket.accept()` is Python that reads the listener's family and type through enum
    # properties for every connection (about 15,000 instructions, a tenth of what arps spends
    # on a new connection); `sockio.accept` answers an int, -1 for "no more" rather than an
    # exception, and its socket is non-blocking already: the one built on it from known values
    # (`_ACCEPTED`) needs no ``ioctl``.
    family, proto = int(listener.family), listener.proto
    failed: asyncio.Future[None] = loop.create_future()

    def resume() -> None:
        if not failed.done():
            loop.add_reader(fd, on_readable)

    def on_readable() -> None:
        for _ in range(limits.listen_backlog):
            try:
                conn_fd = sockio.accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: cannot accept (%s); pausing 100 ms", name, exc.strerror)
                    loop.remove_reader(fd)
                    loop.call_later(0.1, resume)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.error("%s: accepting failed, port closed: %s", name, exc)
                loop.remove_reader(fd)
                failed.set_exception(exc)
                return
            if conn_fd < 0:
                return
            conn = socket.socket(family, _ACCEPTED, proto, conn_fd)
            if not _ACCEPTED_INHERIT:
                tune(conn, limits, keepalive=keepalive)
            work = handle(conn)
            if work is not None:
                task: asyncio.Task[None] = loop.create_task(work)
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    loop.add_reader(fd, on_readable)
    try:
        await failed
    finally:
        if not failed.done():
            failed.cancel()
        loop.remove_reader(fd)
