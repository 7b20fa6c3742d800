"""`TunnelMachine` over real loopback sockets: the test plays the relay on one end of a tunnel
and runs a real local service; connections one after another, frames split byte by byte, the
coroutine path (a host name, a refused service and its 502), and every way the tunnel ends."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator

import pytest

from arp.client.config import ClientConfig, Target
from arp.client.tunnel import TunnelMachine
from arp.config import Limits, Timeouts
from arp.net.links import SocketLink
from arp.net.sockets import connect, connect_literal
from arp.net.sockio import peer_closed
from arp.protocol import frames
from arp.protocol.tunnel import END_FRAME, HEADER, data_frame
from tests.conftest import free_port, units

LIMITS = Limits()
START_HTTP = frames.encode(frames.StartProxy(tcp_port=None))
BIG = random.Random(7).randbytes(3 * 1024 * 1024)
"""The body of ``GET /big``: large enough for the splice path."""
TCP_PORT = 7000
"""A dedicated public port the relay names in StartProxy; the targets map it."""


def start_tcp(port: int) -> bytes:
    return frames.encode(frames.StartProxy(tcp_port=port))


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: service\r\n\r\n".encode()


def answer(number: int, path: str) -> bytes:
    """What the service answers the `number`-th connection it accepted, asking for `path`."""
    body = BIG if path == "/big" else f"connection {number}: GET {path}".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body


class Service:
    """The local service: answers one request per connection, then closes it; ``GET /hold``
    is held open until the other end ends it (`held`, then `hold_ended`)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.held = asyncio.Event()
        self.hold_ended = asyncio.Event()
        self.hold_reset = False
        """The held connection ended by a reset (not a FIN, which would pass for a clean end)."""
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        async with asyncio.timeout(units(2)):
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        number, self.accepted = self.accepted, self.accepted + 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            if path == "/hold":
                self.held.set()
                try:
                    while await reader.read(65536):
                        pass
                except ConnectionResetError:
                    self.hold_reset = True
                    raise
                finally:
                    self.hold_ended.set()
                return
            writer.write(answer(number, path))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    found = Service()
    await found.start()
    yield found
    await found.close()


def targets(
    http: Target, tcp: dict[int, Target] | None = None, connect_timeout: float = 2
) -> ClientConfig:
    """arpc's settings as far as a tunnel uses them: its services, bounds and deadlines."""
    return ClientConfig(
        client_id="machine",
        http_target=http,
        tcp_targets=tcp or {},
        limits=LIMITS,
        timeouts=Timeouts(connect=units(connect_timeout)),
    )


class Relay:
    """The relay's end of one tunnel, `machine` running on the other (`mine` is its socket)."""

    def __init__(self, sock: socket.socket, mine: socket.socket, machine: asyncio.Task[None]):
        self.sock, self.mine, self.machine = sock, mine, machine
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send_slowly(self, data: bytes) -> None:
        """One byte at a time, with pauses, so the machine reads every frame in pieces."""
        for i in range(len(data)):
            await self.send(data[i : i + 1])
            await asyncio.sleep(units(0.002))

    async def _need(self, n: int) -> None:
        async with asyncio.timeout(units(5)):
            while len(self._buffer) < n:
                chunk = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 20)
                assert chunk, "the tunnel closed before the machine's end frame"
                self._buffer += chunk

    async def read_frames(self) -> bytes:
        """Payloads up to the machine's end frame; nothing may follow it."""
        out = bytearray()
        while True:
            await self._need(HEADER.size)
            (length,) = HEADER.unpack_from(self._buffer)
            del self._buffer[: HEADER.size]
            if not length:
                break
            await self._need(length)
            out += self._buffer[:length]
            del self._buffer[:length]
        assert not self._buffer, "bytes after the machine's end frame"
        return bytes(out)

    async def exchange(self, path: str, start: bytes = START_HTTP) -> bytes:
        await self.send(start + data_frame(request(path)) + END_FRAME)
        return await self.read_frames()

    async def read_end(self) -> bytes:
        """What arrives until the machine's side closes (a FIN or a reset)."""
        received = bytes(self._buffer)
        async with asyncio.timeout(units(5)):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.get_running_loop().sock_recv(self.sock, 65536):
                    received += chunk
        return received

    def open_and_idle(self) -> bool:
        """The machine still runs and its tunnel is open, with nothing sent on it."""
        return not self.machine.done() and not peer_closed(self.sock)


@contextlib.asynccontextmanager
async def tunnel_to(where: ClientConfig) -> AsyncIterator[Relay]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        mine = await connect("127.0.0.1", listener.getsockname()[1], units(2), LIMITS)
        theirs, _ = listener.accept()
    theirs.setblocking(False)
    theirs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # so bytes go out one by one
    machine = asyncio.create_task(TunnelMachine(SocketLink(mine), where).run())
    try:
        yield Relay(theirs, mine, machine)
    finally:
        machine.cancel()
        try:
            async with asyncio.timeout(units(2)):
                await machine
        except asyncio.CancelledError:
            pass
        finally:
            theirs.close()
            mine.close()


async def test_connections_one_after_another_share_the_tunnel(service: Service) -> None:
    # (path, whether the relay's end frame comes only after the answer, glued to the next use)
    plan = [
        ("/a", False),
        ("/big", False),
        ("/b", True),
        ("/c", True),
        ("/big", True),
        ("/d", False),
    ]
    async with tunnel_to(targets(Target("127.0.0.1", service.port))) as relay:
        async with asyncio.timeout(units(10)):
            pending = b""
            for number, (path, late_end) in enumerate(plan):
                end = b"" if late_end else END_FRAME
                await relay.send(pending + START_HTTP + data_frame(request(path)) + end)
                pending = END_FRAME if late_end else b""
                assert await relay.read_frames() == answer(number, path)
                assert service.accepted == number + 1  # a TCP connection of its own
                if not late_end:
                    assert relay.open_and_idle()
            assert await relay.exchange("/e") == answer(len(plan), "/e")
            assert relay.open_and_idle()
    assert service.accepted == len(plan) + 1


async def test_start_proxy_and_data_split_byte_by_byte(service: Service) -> None:
    where = targets(
        Target("127.0.0.1", service.port), {TCP_PORT: Target("127.0.0.1", service.port)}
    )
    async with tunnel_to(where) as relay, asyncio.timeout(units(10)):
        await relay.send_slowly(START_HTTP + data_frame(request("/one")))
        assert await relay.read_frames() == answer(0, "/one")
        # The relay's end frame and the start of the next StartProxy in one piece: the machine
        # keeps what follows the end frame and reads the rest of the frame byte by byte.
        following = start_tcp(TCP_PORT) + data_frame(request("/two")) + END_FRAME
        await relay.send(END_FRAME + following[:3])
        await asyncio.sleep(units(0.02))
        await relay.send_slowly(following[3:])
        assert await relay.read_frames() == answer(1, "/two")
        assert relay.open_and_idle()
        assert await relay.exchange("/three") == answer(2, "/three")
    assert service.accepted == 3


async def test_a_service_named_by_host_name_takes_the_coroutine_path(service: Service) -> None:
    where = targets(
        Target("localhost", service.port), {TCP_PORT: Target("127.0.0.1", service.port)}
    )
    async with tunnel_to(where) as relay, asyncio.timeout(units(10)):
        assert await relay.exchange("/named") == answer(0, "/named")
        assert relay.open_and_idle()
        # The next use glued to the relay's end frame, read by the coroutine's pump.
        await relay.send(START_HTTP + data_frame(request("/big")))
        assert await relay.read_frames() == answer(1, "/big")
        await relay.send(END_FRAME + START_HTTP + data_frame(request("/again")) + END_FRAME)
        assert await relay.read_frames() == answer(2, "/again")
        assert relay.open_and_idle()
        # From the coroutine path back to the callbacks' (an IP literal).
        assert await relay.exchange("/literal", start_tcp(TCP_PORT)) == answer(3, "/literal")
        assert relay.open_and_idle()
    assert service.accepted == 4


async def test_a_refused_service_is_answered_502_and_the_tunnel_stays_usable(
    service: Service,
) -> None:
    nowhere = Target("127.0.0.1", free_port())
    where = targets(nowhere, {TCP_PORT: Target("127.0.0.1", service.port), TCP_PORT + 1: nowhere})
    async with tunnel_to(where) as relay, asyncio.timeout(units(10)):
        for _ in range(2):
            await relay.send(START_HTTP + data_frame(request("/refused")))
            refused = await relay.read_frames()
            assert refused.startswith(b"HTTP/1.1 502 "), refused
            assert b"cannot reach the local service" in refused
            assert relay.open_and_idle()  # it waits for the relay's end frame
            await relay.send(data_frame(b"more of the request") + END_FRAME)
            await asyncio.sleep(units(0.05))
            assert relay.open_and_idle()
        # A raw TCP port's refused connection: no answer, only the end.
        assert await relay.exchange("/raw", start_tcp(TCP_PORT + 1)) == b""
        assert relay.open_and_idle()
        # And a service that does listen, on the same tunnel.
        assert await relay.exchange("/alive", start_tcp(TCP_PORT)) == answer(0, "/alive")
        assert relay.open_and_idle()
    assert service.accepted == 1


async def test_a_handshake_that_does_not_complete_in_time_is_answered_502(
    service: Service,
) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=0) as stuck:
        # A listener that never accepts, its backlog full: further handshakes stay in progress.
        host, port = stuck.getsockname()
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex((host, port))
        probe = connect_literal(host, port, LIMITS)
        assert probe is not None
        probe[0].close()
        assert not probe[2], "precondition: a handshake with this listener stays in progress"
        where = targets(
            Target(host, port), {TCP_PORT: Target("127.0.0.1", service.port)}, connect_timeout=0.3
        )
        async with tunnel_to(where) as relay, asyncio.timeout(units(5)):
            began = asyncio.get_running_loop().time()
            await relay.send(START_HTTP + data_frame(request("/stuck")))
            refused = await relay.read_frames()
            assert refused.startswith(b"HTTP/1.1 502 "), refused
            # (after the connect deadline; uvloop's clock counts whole milliseconds)
            assert asyncio.get_running_loop().time() - began >= units(0.3) - 0.01
            await relay.send(END_FRAME)
            assert await relay.exchange("/after", start_tcp(TCP_PORT)) == answer(0, "/after")
            assert relay.open_and_idle()
        for filler in fillers:
            filler.close()


async def test_a_start_proxy_for_an_unknown_tcp_port_closes_the_tunnel(service: Service) -> None:
    where = targets(
        Target("127.0.0.1", service.port), {TCP_PORT: Target("127.0.0.1", service.port)}
    )
    async with tunnel_to(where) as relay, asyncio.timeout(units(5)):
        await relay.send(start_tcp(TCP_PORT + 5) + data_frame(request("/x")) + END_FRAME)
        assert await relay.read_end() == b""
        await relay.machine  # run() returned
        assert relay.mine.fileno() == -1
    assert service.accepted == 0


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "after_a_connection"])
async def test_the_relay_closing_an_idle_tunnel_ends_run(service: Service, used: bool) -> None:
    async with tunnel_to(targets(Target("127.0.0.1", service.port))) as relay:
        async with asyncio.timeout(units(5)):
            if used:
                assert await relay.exchange("/once") == answer(0, "/once")
            relay.sock.close()
            await relay.machine  # run() returned
        assert relay.mine.fileno() == -1
    assert service.accepted == int(used)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["callbacks", "coroutine"])
async def test_cancelling_run_closes_the_tunnel_and_the_local_connection(
    service: Service, host: str
) -> None:
    async with tunnel_to(targets(Target(host, service.port))) as relay:
        async with asyncio.timeout(units(5)):
            await relay.send(START_HTTP + data_frame(request("/hold")))
            await service.held.wait()
            await relay.send(data_frame(b"part of a body"))
            await asyncio.sleep(units(0.02))
            relay.machine.cancel()
            with pytest.raises(asyncio.CancelledError):
                await relay.machine
            assert relay.mine.fileno() == -1
            assert await relay.read_end() == b""  # no end frame: a cut, not a clean end
            await service.hold_ended.wait()
    # The request was cut short: the service must not take a FIN for its complete end.
    assert service.hold_reset
    assert service.accepted == 1


NOT_START = {
    "bad_json": HEADER.pack(5) + b"nope!",
    "data_frame": data_frame(request("/stray")),
    "error": frames.encode(frames.Error(message="go away")),
    "heartbeat": frames.encode(frames.Heartbeat(seq=1)),
    "oversize": HEADER.pack(LIMITS.max_frame + 1) + b"{",
}


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "after_a_connection"])
@pytest.mark.parametrize("frame", NOT_START.values(), ids=NOT_START.keys())
async def test_a_frame_other_than_start_proxy_closes_the_tunnel(
    service: Service, frame: bytes, used: bool
) -> None:
    async with tunnel_to(targets(Target("127.0.0.1", service.port))) as relay:
        async with asyncio.timeout(units(5)):
            if used:
                assert await relay.exchange("/once") == answer(0, "/once")
            await relay.send(frame)
            assert await relay.read_end() == b""
            await relay.machine  # run() returned
        assert relay.mine.fileno() == -1
    assert service.accepted == int(used)
