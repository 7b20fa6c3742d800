"""Readiness callbacks for the data path's sockets: the loop's own epoll, or one nested in it.

Why not `loop.add_reader`: uvloop (libuv) makes a poll handle per file descriptor and closes it
when the last callback goes, and a new handle probes the descriptor with an extra
``epoll_ctl`` add and delete and sets O_NONBLOCK again. Registering and unregistering a reader
so costs about seven syscalls, and the relay does it for several sockets per connection. Here
a socket's registration is one ``epoll_ctl``; the nested epoll is itself one reader of the loop,
and each of its wake-ups serves every ready socket.

On asyncio's own loop made by `arp.net.selector.new_event_loop` (the plain processes) the
loop's selector is that epoll, and nothing is nested. Elsewhere than Linux the loop's own
methods are used.
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable
from typing import Protocol

from arp.net.selector import Selector

Callback = Callable[[], None]

_IN = getattr(select, "EPOLLIN", 1)
_OUT = getattr(select, "EPOLLOUT", 4)
_ERR = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
_READ = _IN | _ERR
_WRITE = _OUT | _ERR
_BATCH = 256
"""Ready sockets served per wake-up; more stay ready (level-triggered) for the next one."""


class Readiness(Protocol):
    """The four calls the data path needs, as `asyncio.AbstractEventLoop` names them."""

    def add_reader(self, fd: int, callback: Callback) -> None: ...

    def remove_reader(self, fd: int) -> bool: ...

    def add_writer(self, fd: int, callback: Callback) -> None: ...

    def remove_writer(self, fd: int) -> bool: ...


class _Nested:
    """One epoll for many sockets, registered as a single reader with the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> bool:
        if self._writers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def _update(self, fd: int) -> None:
        mask = (_IN if fd in self._readers else 0) | (_OUT if fd in self._writers else 0)
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        try:
            if not mask:
                del self._masks[fd]
                self._epoll.unregister(fd)
            elif not old:
                self._epoll.register(fd, mask)
                self._masks[fd] = mask
            else:
                self._epoll.modify(fd, mask)
                self._masks[fd] = mask
        except FileExistsError:
            # A descriptor closed while registered left its entry behind; this is a new
            # socket with the same number.
            self._epoll.modify(fd, mask)
            self._masks[fd] = mask
        except (FileNotFoundError, OSError):
            # Closed already: the kernel dropped its registration with it.
            if not mask:
                return
            raise

    def _dispatch(self) -> None:
        try:
            events = self._epoll.poll(0, _BATCH)
        except InterruptedError:
            return
        readers, writers = self._readers, self._writers
        for fd, mask in events:
            # Looked up per event: an earlier callback may have unregistered this socket. The
            # calls are made here, not through a helper: this loop runs once per relayed chunk.
            try:
                if mask & _READ and (reader := readers.get(fd)) is not None:
                    reader()
                if mask & _WRITE and (writer := writers.get(fd)) is not None:
                    writer()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {"message": "exception in a socket readiness callback", "exception": exc}
                )


_NESTED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Nested] = weakref.WeakKeyDictionary()


_last: tuple[asyncio.AbstractEventLoop, Readiness] | None = None
"""The last loop asked for and its registry: asked for per connection, nearly always the same."""


def readiness(loop: asyncio.AbstractEventLoop) -> Readiness:
    """The running loop's readiness registry for data-path sockets."""
    global _last
    if not hasattr(select, "epoll"):
        return loop
    last = _last
    if last is not None and last[0] is loop:
        return last[1]
    # asyncio's own loop made by `arp.net.selector.new_event_loop`: its selector is the epoll.
    # (`_selector` is asyncio's name for it, the one private name read here.)
    selector = getattr(loop, "_selector", None)
    if isinstance(selector, Selector):
        _last = (loop, selector)
        return selector
    nested = _NESTED.get(loop)
    if nested is None:
        nested = _NESTED[loop] = _Nested(loop)
    _last = (loop, nested)
    return nested


async def wait_readable(fd: int) -> None:
    """Until `fd` has bytes (or an end, or an error) to read."""
    loop = asyncio.get_running_loop()
    ready = readiness(loop)
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    ready.add_reader(fd, wake)
    try:
        await waiter
    finally:
        ready.remove_reader(fd)
