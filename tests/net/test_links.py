"""`read_message`'s deadline: silence of the peer, not a stall of this process, ends a link."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from arp.protocol import frames
from tests.conftest import units


async def test_a_message_that_arrived_during_a_stall_of_this_process_is_read() -> None:
    """The peer spoke in time, but this process was stalled past the deadline: uvloop runs due
    timers before it polls, so the deadline fired ahead of the waiting bytes and a busy arpc or
    arps dropped a healthy control link (a 503 "client offline" under load)."""
    from arp.net.links import read_message

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader, _writer = await asyncio.open_connection(sock=ours)
    decoder = frames.FrameDecoder(64 * 1024)
    deadline = units(0.5)
    heartbeat = frames.encode(frames.Heartbeat())
    sender = threading.Timer(deadline / 5, theirs.sendall, (heartbeat,))
    sender.start()
    loop = asyncio.get_running_loop()
    # The stall: this process does nothing for twice the deadline, while the peer's heartbeat
    # arrives a fifth of the way in.
    loop.call_later(deadline / 10, time.sleep, deadline * 2)
    try:
        message = await read_message(reader.read, decoder, deadline)
    finally:
        sender.join()
        theirs.close()
    assert isinstance(message, frames.Heartbeat)


async def test_a_silent_peer_still_times_out() -> None:
    from arp.net.links import read_message

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader, _writer = await asyncio.open_connection(sock=ours)
    decoder = frames.FrameDecoder(64 * 1024)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await read_message(reader.read, decoder, units(0.3))
    # Not extended when nothing stalled: the deadline holds (with room for a slow machine).
    assert time.monotonic() - started < units(0.3) * 3
    theirs.close()
