"""asyncio's selector and the data path's readiness callbacks in one epoll (asyncio's own loop).

Why: on asyncio's own loop (plain `arps`, forward-mode `arpc`: `arp.runtime.forgo_tls`) the
nested epoll of `arp.net.readiness` costs, per wake-up, a second ``epoll_wait``, a loop
`Handle`, and in the kernel a second level of wake-up callbacks for every ready socket. Here
the loop's selector is that epoll: `select` calls a data-path socket's callback as soon as the
kernel reports it, and returns the loop's own events to the loop as `selectors.EpollSelector`
does, once the loop has work (a wake-up only callbacks wanted stays in `select`). A
descriptor may be registered by both sides at once (a coroutine's `sock_sendall` on a socket
whose reads a callback serves): its epoll mask is the union, and each side hears only of its
own events.

`new_event_loop` makes such a loop (Linux; elsewhere asyncio's default).
"""

from __future__ import annotations

import asyncio
import math
import select
import selectors
import time
from collections.abc import Callable, Mapping, Sized
from typing import Any, Final

Callback = Callable[[], None]

_IN: Final = getattr(select, "EPOLLIN", 1)
_OUT: Final = getattr(select, "EPOLLOUT", 4)
_ERR: Final = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
_READ: Final = _IN | _ERR
_WRITE: Final = _OUT | _ERR
BATCH: Final = 256
"""Events taken per wake-up (here and by the nested epoll of `arp.net.readiness`); more stay
ready (level-triggered) for the next one."""
_EVENT_READ: Final = selectors.EVENT_READ
_EVENT_WRITE: Final = selectors.EVENT_WRITE


def _fd(fileobj: Any) -> int:
    """As `selectors` maps a file object to its descriptor."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class Callbacks:
    """Readiness callbacks over one epoll: a socket's registration is one ``epoll_ctl``.

    The base of `Selector` and of `arp.net.readiness`'s nested epoll; `_own_events` says what
    else epoll must watch on a descriptor (the loop's registrations, for `Selector`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        """What epoll has for each descriptor."""
        self.loop = loop
        """Told of an exception in a callback."""

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

    def _own_events(self, fd: int) -> int:
        return 0

    def _call(self, fd: int, mask: int) -> None:
        """Run `fd`'s callbacks for the epoll event `mask`. Looked up per event: an earlier
        callback may have unregistered this socket."""
        try:
            if mask & _READ and (reader := self._readers.get(fd)) is not None:
                reader()
            if mask & _WRITE and (writer := self._writers.get(fd)) is not None:
                writer()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self.loop is not None:
                self.loop.call_exception_handler(
                    {"message": "exception in a socket readiness callback", "exception": exc}
                )

    def _update(self, fd: int) -> None:
        events = self._own_events(fd)
        mask = (_IN if fd in self._readers or events & _EVENT_READ else 0) | (
            _OUT if fd in self._writers or events & _EVENT_WRITE else 0
        )
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
        except OSError:
            # Closed already: the kernel dropped its registration with it.
            if mask:
                raise


class Selector(Callbacks):
    """The `selectors.BaseSelector` calls asyncio makes, on the data path's epoll."""

    def __init__(self) -> None:
        super().__init__(None)  # the loop comes after its selector: `new_event_loop`
        self._keys: dict[int, selectors.SelectorKey] = {}
        """The loop's registrations."""
        self._loop_state: Any = None
        """The loop whose stop flag and timers `select` reads (asyncio's `BaseEventLoop`
        keeps them in `_stopping` and `_scheduled`)."""
        self._handles: Sized = ()
        """That loop's ready handles (`_ready`, a deque it keeps for its whole life)."""

    def _own_events(self, fd: int) -> int:
        key = self._keys.get(fd)
        return key.events if key is not None else 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._update(fd)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.pop(fd, None)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        self._update(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = selectors.SelectorKey(key.fileobj, fd, events, data)
        self._keys[fd] = key
        self._update(fd)
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._keys.get(_fd(fileobj))
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return {key.fileobj: key for key in self._keys.values()}

    def close(self) -> None:
        self._epoll.close()
        self._keys.clear()
        self._readers.clear()
        self._writers.clear()
        self._masks.clear()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for events and run the data path's callbacks until the loop has work: events
        of its own, a handle a callback made ready, a stop, a timer due, or `timeout` out.

        Returning to asyncio's `_run_once` (interpreted Python) after a wake-up that only
        callbacks wanted cost arpc about an eighth of its instructions per keep-alive
        request; here such wake-ups stay in this (compiled) loop.
        """
        wait = _wait_ms(timeout)
        # No clock read when the loop waits for nothing (it has handles ready: the usual call).
        deadline = time.monotonic() + wait if wait > 0 else wait
        keys = self._keys
        while True:
            try:
                events = self._epoll.poll(wait, BATCH)
            except InterruptedError:
                return []
            ready: list[tuple[selectors.SelectorKey, int]] = []
            for fd, mask in events:
                self._call(fd, mask)
                key = keys.get(fd)
                if key is not None:
                    # As EpollSelector: an error or hang-up wakes both a reader and a writer.
                    wanted = (_EVENT_WRITE if mask & ~_IN else 0) | (
                        _EVENT_READ if mask & ~_OUT else 0
                    )
                    wanted &= key.events
                    if wanted:
                        ready.append((key, wanted))
            loop = self._loop_state
            if ready or not events or not wait or loop is None or self._handles or loop._stopping:
                return ready
            # Only callbacks woke: wait on, up to the loop's deadline or its next timer
            # (a callback may have scheduled one).
            end = deadline
            scheduled = loop._scheduled
            if scheduled:
                when = float(scheduled[0]._when)
                end = when if end < 0 else min(end, when)
            if end < 0:
                wait = -1.0
            else:
                left = end - time.monotonic()
                if left <= 0:
                    return ready
                wait = _wait_ms(left)


def _wait_ms(timeout: float | None) -> float:
    """epoll's timeout: -1 for none, else whole milliseconds, rounded up."""
    if timeout is None:
        return -1.0
    if timeout <= 0:
        return 0.0
    return math.ceil(timeout * 1e3) * 1e-3


def new_event_loop() -> asyncio.AbstractEventLoop:
    """asyncio's own loop on one `Selector` (Linux); elsewhere asyncio's default loop."""
    if not hasattr(select, "epoll"):
        return asyncio.new_event_loop()
    selector = Selector()
    loop = asyncio.SelectorEventLoop(selector)  # type: ignore[arg-type]
    selector.loop = loop
    if all(hasattr(loop, name) for name in ("_ready", "_stopping", "_scheduled")):
        selector._loop_state = loop  # else every wake-up goes back to the loop
        selector._handles = loop._ready  # type: ignore[attr-defined]
    return loop
