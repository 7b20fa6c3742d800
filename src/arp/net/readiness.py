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
from typing import Final, Protocol

from arp.net import sockio
from arp.net.selector import BATCH, Callback, Callbacks, Selector

_dispatch: Final = sockio.dispatch
"""Final: compiled code calls it from a C static, not by a lookup per call."""


class Readiness(Protocol):
    """The four calls the data path needs, as `asyncio.AbstractEventLoop` names them."""

    def add_reader(self, fd: int, callback: Callback) -> None: ...

    def remove_reader(self, fd: int) -> bool: ...

    def add_writer(self, fd: int, callback: Callback) -> None: ...

    def remove_writer(self, fd: int) -> bool: ...


class _Nested(Callbacks):
    """One epoll for many sockets, registered as a single reader with the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def _dispatch(self) -> None:
        _dispatch(self._epoll, 0, BATCH, self._readers, self._writers, None, self._report)


_NESTED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Nested] = weakref.WeakKeyDictionary()


_last: tuple[asyncio.AbstractEventLoop, Readiness] | None = None
"""The last loop asked for and its registry: asked for per connection, nearly always the same."""


_HAS_EPOLL: Final = hasattr(select, "epoll")
"""Asked once: `readiness` runs for every flow of every connection."""


def readiness(loop: asyncio.AbstractEventLoop) -> Readiness:
    """The running loop's readiness registry for data-path sockets."""
    global _last
    if not _HAS_EPOLL:
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
