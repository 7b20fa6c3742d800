"""asyncio's loop and the data path's callbacks on one epoll (`arp.net.selector`).

The rest of tests/net, relay, client and cluster run on this loop too (their ``asyncio``
variant); these cases are the ones only the shared epoll has: a socket both sides watch, an
error that wakes both of the loop's directions, a callback that raises, the selector contract,
and the loop's own work (a handle, a timer, a stop, a wake-up from a thread) reaching the loop
while data-path callbacks alone keep the epoll busy.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from arp.net.readiness import readiness
from arp.net.selector import Selector, new_event_loop
from tests.conftest import units


def _run(test: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]]) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(test(loop), units(10)))
    finally:
        loop.close()


def test_the_plain_loop_serves_readiness_from_its_own_selector() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        ready = readiness(loop)
        assert isinstance(ready, Selector)
        assert ready is loop._selector  # type: ignore[attr-defined]

    _run(check)


def test_one_socket_watched_by_a_callback_and_by_the_loop() -> None:
    """A callback reads a socket while a coroutine's sock_sendall waits to write on it: each
    side hears of its own events only, and either can leave without the other."""

    async def check(loop: asyncio.AbstractEventLoop) -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        ready = readiness(loop)
        got = bytearray()
        heard = asyncio.Event()

        def on_readable() -> None:
            got.extend(a.recv(65536))
            heard.set()

        try:
            ready.add_reader(a.fileno(), on_readable)
            # Fill a's send buffer so sock_sendall must wait for writability in the loop.
            big = b"x" * (8 << 20)
            send = loop.create_task(loop.sock_sendall(a, big))
            await asyncio.sleep(units(0.05))
            assert not send.done()
            b.send(b"ping")
            await asyncio.wait_for(heard.wait(), units(2))
            assert bytes(got) == b"ping"
            # Drain b: the loop's writer wakes and finishes while the callback stays.
            drained = 0
            while drained < len(big):
                try:
                    drained += len(b.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await asyncio.wait_for(send, units(2))
            heard.clear()
            b.send(b"pong")
            await asyncio.wait_for(heard.wait(), units(2))
            assert bytes(got) == b"pingpong"
            assert ready.remove_reader(a.fileno())
            # With the callback gone, the loop alone reads the socket.
            b.send(b"last")
            assert await asyncio.wait_for(loop.sock_recv(a, 16), units(2)) == b"last"
        finally:
            ready.remove_reader(a.fileno())
            a.close()
            b.close()

    _run(check)


def test_a_reset_wakes_the_loops_reader_and_writer_of_that_socket() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        woke: list[str] = []
        done = asyncio.Event()

        def note(side: str) -> None:
            woke.append(side)
            if {"read", "write"} <= set(woke):
                done.set()

        loop.add_reader(a.fileno(), note, "read")
        loop.add_writer(a.fileno(), note, "write")
        try:
            b.close()  # a hang-up: readable (EOF) and, as EpollSelector reports it, writable
            await asyncio.wait_for(done.wait(), units(2))
        finally:
            loop.remove_reader(a.fileno())
            loop.remove_writer(a.fileno())
            a.close()

    _run(check)


def test_a_raising_callback_is_reported_and_the_others_still_run() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        ready = readiness(loop)
        pairs = [socket.socketpair() for _ in range(2)]
        calls: list[int] = []

        def bad() -> None:
            pairs[0][0].recv(16)
            raise RuntimeError("boom")

        def good() -> None:
            pairs[1][0].recv(16)
            calls.append(1)

        try:
            ready.add_reader(pairs[0][0].fileno(), bad)
            ready.add_reader(pairs[1][0].fileno(), good)
            for _, peer in pairs:
                peer.send(b"x")
            await asyncio.sleep(units(0.1))
            assert calls == [1]
            assert [str(c.get("exception")) for c in reported] == ["boom"]
            assert loop.is_running()
        finally:
            for mine, peer in pairs:
                ready.remove_reader(mine.fileno())
                mine.close()
                peer.close()

    _run(check)


def test_the_selector_contract_asyncio_relies_on() -> None:
    selector = Selector()
    a, b = socket.socketpair()
    try:
        key = selector.register(a, selectors.EVENT_READ, "data")
        assert (key.fd, key.events, key.data) == (a.fileno(), selectors.EVENT_READ, "data")
        assert selector.get_key(a.fileno()) == key
        assert selector.get_map()[a] == key
        with pytest.raises(KeyError):
            selector.register(a.fileno(), selectors.EVENT_WRITE)
        with pytest.raises(ValueError):
            selector.register(b, 0)
        with pytest.raises(ValueError):
            selector.register(-1, selectors.EVENT_READ)
        assert selector.select(0) == []
        b.send(b"x")
        assert selector.select(units(1)) == [(key, selectors.EVENT_READ)]
        key = selector.modify(a, selectors.EVENT_WRITE, "other")
        assert selector.select(units(1)) == [(key, selectors.EVENT_WRITE)]
        assert selector.unregister(a) == key
        with pytest.raises(KeyError):
            selector.get_key(a)
        with pytest.raises(KeyError):
            selector.unregister(a)
        # The data path's registration of the same socket is its own.
        fired: list[int] = []
        selector.add_reader(a.fileno(), lambda: fired.append(1))
        assert selector.select(units(1)) == []
        assert fired == [1]
    finally:
        selector.close()
        a.close()
        b.close()


@contextmanager
def _always_ready(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Iterator[None]:
    """A data-path callback on a socket that stays readable (its byte is never read), so the
    epoll reports it on every wake-up: only callbacks want those wake-ups."""
    a, b = socket.socketpair()
    ready = readiness(loop)
    b.send(b"x")
    ready.add_reader(a.fileno(), callback)
    try:
        yield
    finally:
        ready.remove_reader(a.fileno())
        a.close()
        b.close()


def test_a_handle_a_callback_makes_ready_runs_while_callbacks_keep_the_epoll_busy() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        done = loop.create_future()
        calls = 0

        def busy() -> None:
            nonlocal calls
            calls += 1
            if calls == 50:  # by now the loop waits in select, with nothing of its own
                loop.call_soon(done.set_result, calls)

        started = time.monotonic()
        with _always_ready(loop, busy):
            assert await asyncio.wait_for(done, units(5)) == 50
        # At once: not at the next deadline the loop knew of before (wait_for's).
        assert time.monotonic() - started < units(1)

    _run(check)


def test_a_timer_a_callback_schedules_fires_while_callbacks_keep_the_epoll_busy() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        fired = loop.create_future()
        scheduled = False

        def busy() -> None:
            nonlocal scheduled
            if not scheduled:
                scheduled = True
                loop.call_later(units(0.05), lambda: fired.set_result(time.monotonic()))

        started = time.monotonic()
        with _always_ready(loop, busy):
            at = await asyncio.wait_for(fired, units(2))
        # On time: not at the next deadline the loop knew of before (wait_for's, 2 units).
        assert units(0.05) <= at - started < units(1)

    _run(check)


def test_a_stop_from_a_callback_ends_run_forever() -> None:
    loop = new_event_loop()
    try:
        with _always_ready(loop, loop.stop):
            loop.call_later(units(5), loop.stop)  # a bound: run_forever must not wait this out
            started = time.monotonic()
            loop.run_forever()
            assert time.monotonic() - started < units(2)
    finally:
        loop.close()


def test_call_soon_threadsafe_reaches_a_loop_whose_epoll_only_callbacks_use() -> None:
    async def check(loop: asyncio.AbstractEventLoop) -> None:
        done = loop.create_future()
        thread = threading.Thread(
            target=lambda: loop.call_soon_threadsafe(done.set_result, "from a thread")
        )
        with _always_ready(loop, lambda: None):
            thread.start()
            assert await asyncio.wait_for(done, units(2)) == "from a thread"
        thread.join(units(2))

    _run(check)
