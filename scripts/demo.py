"""The main job, on loopback: a relay, a demo service behind a client, and the public URL.

Starts `arps` (ports 17001-17003, or free ones if those are taken), a tiny web service on a
local port, and `arpc` in forward mode exposing it; fetches the public URL once to prove the
path works, prints it, and runs until Ctrl-C (or exits at once with --once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import urllib.request

PY = sys.executable
DEMO_PAGE = b"""<!doctype html><meta charset=utf-8><title>ARP demo</title>
<h1>Hello from behind NAT</h1><p>This page is served by a local service on the client's
machine and reached through the ARP relay.</p>"""


def port_free(port: int) -> bool:
    """Whether arps could listen on `port`: it binds with SO_REUSEADDR, as every server does,
    so a port that only TIME-WAIT sockets of an earlier run still hold counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def demo_service() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(DEMO_PAGE), DEMO_PAGE)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def wait_for_line(proc: asyncio.subprocess.Process, needle: str, timeout: float) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while line := (await proc.stdout.readline()).decode():
            print(f"  | {line.rstrip()}")
            if needle in line:
                return line
    raise RuntimeError(f"the process ended before printing {needle!r}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="check the URL works, then stop")
    args = parser.parse_args()
    wanted = (17001, 17002, 17003)
    ports = wanted if all(map(port_free, wanted)) else (free_port(), free_port(), free_port())
    if ports != wanted:
        print(f"ports 17001-17003 are taken; using {ports[0]}, {ports[1]}, {ports[2]}")
    server, service_port = await demo_service()
    home = tempfile.mkdtemp(prefix="arp-demo-")  # keeps the demo's client id and logs apart
    try:
        return await run_demo(args.once, ports, service_port, home)
    finally:
        server.close()
        shutil.rmtree(home, ignore_errors=True)


async def run_demo(once: bool, ports: tuple[int, ...], service_port: int, home: str) -> int:
    """The relay and the client, until Ctrl-C (or at once with `once`); stops both after."""
    env = {**os.environ, "XDG_DATA_HOME": f"{home}/data", "XDG_CONFIG_HOME": f"{home}/config"}
    common = ["--control-port", str(ports[0]), "--proxy-port", str(ports[1])]
    relay = await asyncio.create_subprocess_exec(
        PY, "-m", "arp.relay", "--bind", "127.0.0.1", *common, "--public-port", str(ports[2]),
        "--pool-size", "2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    client: asyncio.subprocess.Process | None = None
    try:
        print("starting arps (the relay)")
        await wait_for_line(relay, "arps listening", 20)
        print(f"starting arpc (forward mode) for the demo service on 127.0.0.1:{service_port}")
        client = await asyncio.create_subprocess_exec(
            PY, "-m", "arp.client", *common, "--local-port", str(service_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        line = await wait_for_line(client, "Public URL:", 20)
        url = line.split("Public URL:", 1)[1].strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"unexpected public URL {url!r}")
        opener = urllib.request.urlopen
        body = await asyncio.to_thread(lambda: opener(url, timeout=10).read())
        if b"Hello from behind NAT" not in body:
            print("the public URL did not return the demo page", file=sys.stderr)
            return 1
        print(f"\n🌐 Public URL (works; open it in a browser): {url}\n")
        if once:
            return 0
        print("Ctrl-C stops the demo.")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        for proc in (client, relay):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
