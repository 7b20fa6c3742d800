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
import contextvars
import math
import select
import selectors
import time
from collections.abc import Callable, Mapping, Sized
from typing import Any, Final, TypeVarTuple, Unpack

from arp.net import sockio

Callback = Callable[[], None]

_IN: Final = int(getattr(select, "EPOLLIN", 1))
_OUT: Final = int(getattr(select, "EPOLLOUT", 4))
BATCH: Final = 256  # at most sockio.MAX_BATCH
"""Events taken per wake-up (here and by the nested epoll of `arp.net.readiness`); more stay
ready (level-triggered) for the next one."""
_EVENT_READ: Final = selectors.EVENT_READ
_EVENT_WRITE: Final = selectors.EVENT_WRITE
_dispatch: Final = sockio.dispatch
_epoll_set: Final = sockio.epoll_set
"""Final, as `_monotonic`: compiled code calls them from C statics, not by a lookup per call."""
_monotonic: Final = time.monotonic


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


def _at(table: list[Any], fd: int) -> Any:
    """`table`'s entry for `fd`, or None."""
    return table[fd] if 0 <= fd < len(table) else None


def _put(table: list[Any], fd: int, value: object) -> None:
    """Set `table`'s entry for `fd`, growing it to the highest descriptor seen."""
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    if fd >= len(table):
        table.extend([None] * (fd + 1 - len(table)))
    table[fd] = value


def _take(table: list[Any], fd: int) -> Any:
    """Clear `table`'s entry for `fd`; what it was, or None."""
    value = _at(table, fd)
    if value is not None:
        table[fd] = None
    return value


class Callbacks:
    """Readiness callbacks over one epoll: a socket's registration is one ``epoll_ctl``.

    The base of `Selector` and of `arp.net.readiness`'s nested epoll; `_own_events` says what
    else epoll must watch on a descriptor (the loop's registrations, for `Selector`). The
    callbacks are in lists indexed by descriptor, which `arp.net.sockio.dispatch` reads for
    each event (in C when built).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._epoll = select.epoll()
        self._readers: list[Callback | None] = []
        self._writers: list[Callback | None] = []
        self._masks: dict[int, int] = {}
        """What epoll has for each descriptor."""
        self.loop = loop
        """Told of an exception in a callback."""

    def add_reader(self, fd: int, callback: Callback) -> None:
        _put(self._readers, fd, callback)
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        if _take(self._readers, fd) is None:
            return False
        self._update(fd)
        return True

    def add_writer(self, fd: int, callback: Callback) -> None:
        _put(self._writers, fd, callback)
        self._update(fd)

    def remove_writer(self, fd: int) -> bool:
        if _take(self._writers, fd) is None:
            return False
        self._update(fd)
        return True

    def _own_events(self, fd: int) -> int:
        return 0

    def _report(self, exc: BaseException) -> None:
        """An exception in a callback: the loop's exception handler hears of it."""
        if self.loop is not None:
            self.loop.call_exception_handler(
                {"message": "exception in a socket readiness callback", "exception": exc}
            )

    def _update(self, fd: int) -> None:
        events = self._own_events(fd)
        mask = (_IN if _at(self._readers, fd) is not None or events & _EVENT_READ else 0) | (
            _OUT if _at(self._writers, fd) is not None or events & _EVENT_WRITE else 0
        )
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        _epoll_set(self._epoll, fd, old, mask)
        if mask:
            self._masks[fd] = mask
        else:
            del self._masks[fd]


class Selector(Callbacks):
    """The `selectors.BaseSelector` calls asyncio makes, on the data path's epoll."""

    def __init__(self) -> None:
        super().__init__(None)  # the loop comes after its selector: `new_event_loop`
        self._keys: dict[int, selectors.SelectorKey] = {}
        """The loop's registrations."""
        self._loop_keys: list[selectors.SelectorKey | None] = []
        """The same, indexed by descriptor (for `dispatch`)."""
        self._told = False
        """The loop tells this selector of stops and new timers (`_Loop`): `select` may
        then stay in its own loop while only callbacks woke."""
        self._handles: Sized = ()
        """That loop's ready handles (`_ready`, a deque it keeps for its whole life)."""
        self._stop_asked = False
        """The loop was told to stop during this `select`."""
        self._next_timer = math.inf
        """The earliest timer the loop was given during this `select` (loop time)."""

    def loop_stopping(self) -> None:
        """The loop was told to stop (`_Loop.stop`)."""
        self._stop_asked = True

    def timer_at(self, when: float) -> None:
        """The loop has a new timer due at `when` (`_Loop.call_at`)."""
        if when < self._next_timer:
            self._next_timer = when

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
        _put(self._loop_keys, fd, key)
        self._update(fd)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.pop(fd, None)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        _take(self._loop_keys, fd)
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
        _put(self._loop_keys, fd, key)
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
        self._loop_keys.clear()
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
        deadline = _monotonic() + wait * 1e-3 if wait > 0 else -1.0
        # The loop's timers until now are in `timeout`; those it is given from now on, and a
        # stop, it tells `timer_at` and `loop_stopping`.
        self._stop_asked = False
        self._next_timer = math.inf
        while True:
            events = _dispatch(
                self._epoll, wait, BATCH, self._readers, self._writers, self._loop_keys,
                self._report,
            )  # fmt: skip
            if events is None:
                return []  # the timeout (or a signal, which the loop handles)
            ready: list[tuple[selectors.SelectorKey, int]] = []
            for key, mask in events:
                # As EpollSelector: an error or hang-up wakes both a reader and a writer.
                wanted = (_EVENT_WRITE if mask & ~_IN else 0) | (_EVENT_READ if mask & ~_OUT else 0)
                wanted &= key.events
                if wanted:
                    ready.append((key, wanted))
            if ready or not wait or not self._told or self._handles or self._stop_asked:
                return ready
            # Only callbacks woke: wait on, up to the loop's deadline or a timer a callback
            # gave it.
            end = deadline
            if self._next_timer < math.inf:
                end = self._next_timer if end < 0 else min(end, self._next_timer)
            if end < 0:
                wait = -1
            else:
                left = end - _monotonic()
                if left <= 0:
                    return ready
                wait = _wait_ms(left)


def _wait_ms(timeout: float | None) -> int:
    """epoll's timeout: -1 for none, else whole milliseconds, rounded up."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    return math.ceil(timeout * 1e3)


_Ts = TypeVarTuple("_Ts")


class _Loop(asyncio.SelectorEventLoop):
    """asyncio's own loop, telling its `Selector` of a stop and of each new timer: what
    `select` needs to know when only callbacks woke, which it would otherwise read from the
    loop's private attributes on every wake-up."""

    def __init__(self, selector: Selector) -> None:
        super().__init__(selector)  # type: ignore[arg-type]
        self._told_selector = selector

    def stop(self) -> None:
        super().stop()
        self._told_selector.loop_stopping()

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self._told_selector.timer_at(when)
        return handle


def new_event_loop() -> asyncio.AbstractEventLoop:
    """asyncio's own loop on one `Selector` (Linux); elsewhere asyncio's default loop."""
    if not hasattr(select, "epoll"):
        return asyncio.new_event_loop()
    selector = Selector()
    loop = _Loop(selector)
    selector.loop = loop
    handles = getattr(loop, "_ready", None)
    if handles is not None:
        selector._handles = handles
        selector._told = True  # else every wake-up goes back to the loop
    return loop
