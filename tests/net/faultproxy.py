"""A TCP proxy for tests that makes the network misbehave on demand (asyncpg's habit).

Put it between two ends that normally talk directly (arpc and the relay's control or proxy
port, a public client and the public port) and, per connection and while bytes flow:

- `delay`: hold every piece this long before passing it on;
- `split`: pass bytes on in pieces of at most this many (1: one byte at a time);
- `reset()`: end both sides with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox does;
- `blackhole()`: stop passing bytes in both directions and keep both sockets open (a half-open
  link: a peer whose host vanished, a NAT that forgot the flow);
- `cut(direction)`: stop passing one direction only (with ``fin=True``: end it with a FIN).

Faults set on the proxy (`FaultProxy.faults`) apply to connections accepted later; faults set on
a `ProxiedConnection` apply to it at once. Everything is bounded: the number of connections, the
bytes held per direction (one read of `chunk`), and `close()`, which resets whatever is left.
Only loopback is used: the proxy listens on 127.0.0.1, port 0, and forwards to a loopback target.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from dataclasses import dataclass, replace
from types import TracebackType

_LINGER_RESET = struct.pack("ii", 1, 0)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Direction(enum.Enum):
    """Which way bytes travel through the proxy."""

    UP = "up"
    """From the connecting side (the proxy's client) to the target."""
    DOWN = "down"
    """From the target back to the connecting side."""


@dataclass(frozen=True, slots=True)
class Faults:
    """How one connection is treated: the proxy's defaults for new ones, or a live setting."""

    delay: float = 0.0
    """Seconds each piece waits before it is passed on."""
    split: int | None = None
    """The largest piece passed on at once (None: as read)."""
    direction: Direction | None = None
    """The one direction `delay` and `split` apply to (None: both)."""


_NO_FAULTS = Faults()


class ProxiedConnection:
    """One connection through the proxy: its two sockets and the faults applied to them."""

    def __init__(
        self,
        proxy: FaultProxy,
        outer: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        inner: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        faults: Faults,
    ) -> None:
        self.proxy = proxy
        self.faults = faults
        self._outer = outer
        self._inner = inner
        self._flowing = {d: asyncio.Event() for d in Direction}
        for event in self._flowing.values():
            event.set()
        self.forwarded = {d: 0 for d in Direction}
        """Bytes passed on so far, per direction."""
        self.ended = {d: False for d in Direction}
        """True once a direction's source ended (FIN or error)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(Direction.UP, self._outer[0], self._inner[1])),
            loop.create_task(self._pump(Direction.DOWN, self._inner[0], self._outer[1])),
        ]
        for task in self._tasks:
            self.proxy._tasks.add(task)
            task.add_done_callback(self.proxy._tasks.discard)

    # -- faults -----------------------------------------------------------------------------

    def set_faults(self, **changes: float | int | Direction | None) -> None:
        """Change `delay` / `split` / `direction` for this connection from now on."""
        self.faults = replace(self.faults, **changes)  # type: ignore[arg-type]

    def blackhole(self) -> None:
        """Stop passing bytes both ways; both sockets stay open (a half-open link)."""
        for direction in Direction:
            self._flowing[direction].clear()

    def cut(self, direction: Direction, *, fin: bool = False) -> None:
        """Stop passing `direction`; with `fin`, its destination sees a clean end (FIN)."""
        self._flowing[direction].clear()
        if fin:
            writer = self._inner[1] if direction is Direction.UP else self._outer[1]
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

    def resume(self) -> None:
        """Pass bytes both ways again (after `blackhole` or a `cut` without FIN)."""
        for event in self._flowing.values():
            event.set()

    def reset(self) -> None:
        """End both sides with a TCP reset (RST), dropping whatever was not yet passed on."""
        for _, writer in (self._outer, self._inner):
            _abort_with_reset(writer)
        for task in self._tasks:
            task.cancel()
        self._finish()

    def close(self) -> None:
        """End both sides with a FIN."""
        for task in self._tasks:
            task.cancel()
        for _, writer in (self._outer, self._inner):
            writer.close()
        self._finish()

    # -- data path --------------------------------------------------------------------------

    async def _pump(
        self, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        flowing = self._flowing[direction]
        try:
            while True:
                await flowing.wait()
                data = await reader.read(self.proxy.chunk)
                if not data:
                    break
                while data:
                    await flowing.wait()  # a black hole holds what was read, then drops it
                    faults = self.faults
                    if faults.direction not in (None, direction):
                        faults = _NO_FAULTS
                    size = faults.split or len(data)
                    piece, data = data[:size], data[size:]
                    if faults.delay:
                        await asyncio.sleep(faults.delay)
                    if not flowing.is_set():
                        break
                    writer.write(piece)
                    await writer.drain()
                    self.forwarded[direction] += len(piece)
            # The source ended clean: pass its FIN on, unless this direction is cut.
            if flowing.is_set():
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
        except (ConnectionError, OSError):
            # A reset on one side becomes a reset on the other, as a real path would carry it.
            other = self._outer[1] if writer is self._inner[1] else self._inner[1]
            _abort_with_reset(writer)
            _abort_with_reset(other)
        finally:
            self.ended[direction] = True
            if all(self.ended.values()):
                for _, w in (self._outer, self._inner):
                    w.close()
                self._finish()

    def _finish(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.proxy._forget(self)

    async def wait_closed(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        # (a transport already closed has no descriptor left: ValueError)
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1 (port 0) and forwards each connection to a loopback target."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        faults: Faults | None = None,
        max_connections: int = 256,
        chunk: int = 64 * 1024,
        connect_timeout: float = 5.0,
    ) -> None:
        if target_host not in _LOOPBACK:
            raise ValueError(f"the fault proxy forwards to loopback only, not {target_host!r}")
        self.target = (target_host, target_port)
        self.faults = faults or Faults()
        """Faults given to each connection accepted from now on."""
        self.max_connections = max_connections
        self.chunk = chunk
        self.connect_timeout = connect_timeout
        self.connections: list[ProxiedConnection] = []
        """Open connections, oldest first."""
        self.accepted = 0
        self.refused = 0
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        """Every connection's two pumps."""
        self._arrived = asyncio.Condition()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting and reset every connection still open; idempotent."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.reset()
        pending = [*self._handlers, *self._tasks]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.connect_timeout)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await self._server.wait_closed()
            self._server = None

    # -- faults on every open connection ----------------------------------------------------

    def blackhole_all(self) -> None:
        for connection in list(self.connections):
            connection.blackhole()

    def reset_all(self) -> None:
        for connection in list(self.connections):
            connection.reset()

    async def wait_connections(self, count: int, timeout: float) -> list[ProxiedConnection]:
        """Until at least `count` connections were accepted in all; the open ones."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: self.accepted >= count)
        return list(self.connections)

    # -- accepting ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self.connections) >= self.max_connections:
                self.refused += 1
                _abort_with_reset(writer)
                return
            try:
                async with asyncio.timeout(self.connect_timeout):
                    inner = await asyncio.open_connection(*self.target)
            except (OSError, TimeoutError):
                _abort_with_reset(writer)
                return
            connection = ProxiedConnection(self, (reader, writer), inner, self.faults)
            self.connections.append(connection)
            connection.start()
            async with self._arrived:
                self.accepted += 1
                self._arrived.notify_all()
        except asyncio.CancelledError:
            # asyncio's start_server (3.11) mishandles a handler that ends cancelled.
            writer.close()
        finally:
            self._handlers.discard(task)

    def _forget(self, connection: ProxiedConnection) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(connection)
