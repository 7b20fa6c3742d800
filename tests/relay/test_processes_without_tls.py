"""Real `arps` and `arpc` processes leave OpenSSL out unless they speak TLS (`arp.runtime`):
plain ones map neither libssl nor libcrypto and still relay; with certificates both load it and
relay over TLS. The idle RSS this saves is measured by `bench/run.sh relay`, not here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import free_port, units
from tests.relay.conftest import SERVER_NAME, Pki

OPENSSL = ("libssl", "libcrypto")


def openssl_mapped(pid: int) -> list[str]:
    """OpenSSL's libraries in the process's memory map."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({name for name in OPENSSL if name in maps})


@pytest.fixture
async def service() -> AsyncIterator[int]:
    """A local HTTP service answering every request with 'hello' and closing."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def start(*args: str, ready: str) -> asyncio.subprocess.Process:
    """A program of this checkout, once it printed `ready` (its output is drained after)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    seen = b""
    async with asyncio.timeout(units(20)):
        while ready.encode() not in seen:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"{args[1]} ended before {ready!r}: {seen.decode()}")
            seen += line
    return process


async def stop(*processes: asyncio.subprocess.Process) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        async with asyncio.timeout(units(10)):
            await process.communicate()


async def fetch(port: int, token: str) -> bytes:
    async with asyncio.timeout(units(10)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /?token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        response = await reader.read()
    writer.close()
    return response


def relay_args(control: int, proxy: int, public: int, *extra: str) -> list[str]:
    return [
        "-m", "arp.relay", "--bind", "127.0.0.1", "--control-port", str(control),
        "--proxy-port", str(proxy), "--public-port", str(public), "--pool-size", "2", *extra,
    ]  # fmt: skip


def client_args(control: int, proxy: int, local: int, *extra: str) -> list[str]:
    return [
        "-m", "arp.client", "--control-port", str(control), "--proxy-port", str(proxy),
        "--local-port", str(local), "--client-id", "plain", *extra,
    ]  # fmt: skip


async def test_plain_arps_and_arpc_leave_openssl_out_and_relay(service: int) -> None:
    control, proxy, public = free_port(), free_port(), free_port()
    arps = await start(*relay_args(control, proxy, public), ready="arps listening")
    arpc = None
    try:
        arpc = await start(*client_args(control, proxy, service), ready="Public URL")
        response = await fetch(public, "plain")
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello"), response
        assert openssl_mapped(arps.pid) == []
        assert openssl_mapped(arpc.pid) == []
    finally:
        await stop(*(p for p in (arpc, arps) if p is not None))


async def test_tls_arps_and_arpc_load_openssl_and_relay_over_it(
    service: int,
    pki: Pki,
) -> None:
    control, proxy, public = free_port(), free_port(), free_port()
    arps = await start(
        *relay_args(control, proxy, public, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)),
        ready="arps listening",
    )
    arpc = None
    try:
        arpc = await start(
            *client_args(
                control, proxy, service, "--tls-ca", str(pki.ca), "--tls-server-name", SERVER_NAME
            ),
            ready="Public URL",
        )
        response = await fetch(public, "plain")
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello"), response
        assert openssl_mapped(arps.pid) == sorted(OPENSSL)
        assert openssl_mapped(arpc.pid) == sorted(OPENSSL)
    finally:
        await stop(*(p for p in (arpc, arps) if p is not None))


def test_forgo_tls_works_only_before_asyncio_and_makes_ssl_absent() -> None:
    code = (
        "from arp.runtime import forgo_tls, run\n"
        "assert forgo_tls()\n"
        "import asyncio\n"
        "try:\n    import ssl\nexcept ImportError:\n    print('no ssl')\n"
        "async def main() -> int:\n    await asyncio.sleep(0)\n    return 7\n"
        "print(run(main()), type(asyncio.get_event_loop_policy()).__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=units(30)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["no ssl", "7 asyncio.unix_events"], done.stdout
    late = "import asyncio\nfrom arp.runtime import forgo_tls\nprint(forgo_tls())"
    done = subprocess.run(
        [sys.executable, "-c", late], capture_output=True, text=True, timeout=units(30)
    )
    assert done.stdout.strip() == "False", done.stderr
