"""The shape of every long-lived thing (servers, clients, session managers).

`start()` begins the work, `close()` ends it, `wait_closed()` returns once it has ended; as an
async context manager it starts on entry and closes, then waits, on exit. The base owns the part
every service would otherwise copy: `close()` is idempotent and safe to call from several tasks
at once (the subclass's `_shutdown()` runs exactly once, in a task of its own, so a closer that
is cancelled does not cut the shutdown short), and `wait_closed()` really waits — until the
shutdown finished, however long before or after the wait began.

A subclass implements `start()` and `_shutdown()`; one that can end by itself (a client the
relay refused for good) calls `_set_closed()` so that its waiters return.
"""

from __future__ import annotations

import asyncio
from typing import Self


class Service:
    """Base of long-lived components; subclasses implement `start()` and `_shutdown()`."""

    # Class-level defaults, so subclasses need not call a base __init__.
    _service_close_task: asyncio.Task[None] | None = None
    _service_closed: asyncio.Event | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        """Release what `start()` took; runs once, on the first `close()`."""

    @property
    def closing(self) -> bool:
        """Whether `close()` was called (the shutdown may still be running)."""
        return self._service_close_task is not None

    async def close(self) -> None:
        """End the service; idempotent. Every caller returns once the shutdown finished, and
        sees its exception if it failed."""
        if self._service_close_task is None:
            self._service_close_task = asyncio.ensure_future(self._shut_down_once())
        await asyncio.shield(self._service_close_task)

    async def wait_closed(self) -> None:
        """Until the service has ended: `close()` finished (or `_set_closed()` was called)."""
        await self._closed_signal().wait()

    def _set_closed(self) -> None:
        """The service ended by itself: `wait_closed()` returns (`close()` still cleans up)."""
        self._closed_signal().set()

    def _closed_signal(self) -> asyncio.Event:
        if self._service_closed is None:
            self._service_closed = asyncio.Event()
        return self._service_closed

    async def _shut_down_once(self) -> None:
        try:
            await self._shutdown()
        finally:
            self._set_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
        await self.wait_closed()
