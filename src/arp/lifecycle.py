"""The shape of every long-lived thing (servers, clients, session managers).

`start()` begins the work, `close()` ends it and is idempotent, `wait_closed()` returns once it
has ended; as an async context manager it starts on entry and closes, then waits, on exit.
"""

from __future__ import annotations

from typing import Self


class Service:
    """Base of long-lived components; subclasses implement the three coroutines."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
        await self.wait_closed()
