"""Deeply nested JSON on the relay's control and proxy ports (issue 14 item 6): a clear `Error`
frame, a closed link, no traceback in the log, and the relay serves on."""

from __future__ import annotations

import asyncio
import logging
import struct

import aiohttp
import pytest

from arp.protocol import frames
from tests.conftest import units
from tests.relay.conftest import Stack


def deep_frame(depth: int = 2000) -> bytes:
    body = ('{"Register": {"client_id": ' + "[" * depth + "]" * depth + "}}").encode()
    return struct.pack(">I", len(body)) + body


async def answer_to(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(units(4)):
            return await reader.read(-1)
    finally:
        writer.close()


@pytest.mark.parametrize("port_name", ["control_port", "proxy_port"])
async def test_a_2000_deep_frame_gets_an_error_frame_and_no_traceback(
    stack: Stack, port_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await answer_to(getattr(stack.relay, port_name), deep_frame())
    assert answer, "the relay closed the link without saying why"
    (length,) = struct.unpack(">I", answer[:4])
    message = frames.decode_body(answer[4 : 4 + length])
    assert isinstance(message, frames.Error)
    assert "nested deeper than" in message.message
    await asyncio.sleep(units(0.05))
    tracebacks = [r for r in caplog.records if r.exc_info or "RecursionError" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/echo?token=tester") as response,
    ):
        assert response.status == 200
