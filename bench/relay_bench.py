"""Relay benchmark: the same loads direct to a local HTTP target and through arps + arpc.

Run by hand (`bash bench/run.sh relay`); it prints a table of figures and their ratio
relay/direct, measured in the same run on this machine, plus the RSS of arps and arpc idle and
under load. Loads come from wrk and curl (C programs), so the client is never the bottleneck.
Everything runs on loopback and every load is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
GIB = 1 << 30

TARGET = r'''
import asyncio, os, sys
import uvloop

BULK = sys.argv[2]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Http(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 responder; /bulk streams the file with write flow control."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        self.can_write = asyncio.Event()
        self.can_write.set()

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) != -1:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            if head.startswith(b"GET /bulk"):
                asyncio.ensure_future(self.bulk())
                return
            if b"onnection: close" in head or b"onnection: Close" in head:
                self.transport.write(OK_CLOSE)
                self.transport.close()
                return
            self.transport.write(OK)

    async def bulk(self):
        size = os.path.getsize(BULK)
        self.transport.set_write_buffer_limits(high=4 << 20)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        self.transport.write(head % size)
        with open(BULK, "rb") as f:
            while chunk := f.read(1 << 20):
                await self.can_write.wait()
                self.transport.write(chunk)
        self.transport.close()


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    print("target ready", flush=True)
    await server.serve_forever()

uvloop.run(main())
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), True)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited before printing {needle!r}")
        if needle in line:
            return
    raise TimeoutError(f"no {needle!r} within {timeout} s")


@contextmanager
def spawn(*args: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        wait_line(proc, ready)
        # Keep draining output so the child never blocks on a full pipe.
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, seconds: int, connections: int, close: bool) -> WrkResult:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(rps, _ms(p50.group(1)) if p50 else 0, _ms(p99.group(1)) if p99 else 0, errors)


def bulk(url: str, size: int) -> float:
    """MB/s of one download of `size` bytes with curl."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    got, seconds = out.split()
    if int(float(got)) != size:
        raise RuntimeError(f"bulk download got {got} bytes of {size}")
    return size / float(seconds) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--bulk-mib", type=int, default=1024, help="bulk download size")
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: run bash bench/run.sh (it installs it)")
            return 2

    with tempfile.TemporaryDirectory() as tmp:
        bulk_file = Path(tmp, "bulk.bin")
        with bulk_file.open("wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.bulk_mib):
                f.write(block)
        size = args.bulk_mib << 20
        target_script = Path(tmp, "target.py")
        target_script.write_text(TARGET)
        target_port = free_port()
        control, proxy, public = free_port(), free_port(), free_port()
        env_home = Path(tmp, "home")
        os.environ["XDG_DATA_HOME"] = str(env_home / "data")
        os.environ["XDG_CONFIG_HOME"] = str(env_home / "config")
        with (
            spawn(PY, str(target_script), str(target_port), str(bulk_file), ready="target ready"),
            spawn(
                PY, "-m", "arp.relay", "--bind", "127.0.0.1",
                "--control-port", str(control), "--proxy-port", str(proxy),
                "--public-port", str(public), "--pool-size", str(args.pool_size),
                "--log-level", "warning",
                ready="arps listening",
            ) as arps,
            spawn(
                PY, "-m", "arp.client", "--control-port", str(control),
                "--proxy-port", str(proxy), "--local-port", str(target_port),
                "--client-id", "bench", "--log-level", "warning",
                ready="Public URL",
            ) as arpc,
        ):  # fmt: skip
            time.sleep(1)
            idle = {"arps": rss_mib(arps.pid), "arpc": rss_mib(arpc.pid)}
            direct = f"http://127.0.0.1:{target_port}"
            relay = f"http://127.0.0.1:{public}"
            q = "?token=bench"
            rows: list[tuple[str, float, float, str]] = []
            peak = dict(idle)

            def sample() -> None:
                peak["arps"] = max(peak["arps"], rss_mib(arps.pid))
                peak["arpc"] = max(peak["arpc"], rss_mib(arpc.pid))

            wrk(f"{relay}/{q}", 1, args.connections, False)  # warm-up
            for name, close in (("keep-alive req/s", False), ("connections/s", True)):
                d = wrk(f"{direct}/{q}", args.seconds, args.connections, close)
                r = wrk(f"{relay}/{q}", args.seconds, args.connections, close)
                sample()
                rows.append((name, d.rps, r.rps, f"errors direct {d.errors}, relay {r.errors}"))
                rows.append((f"  p50 ms ({name.split()[0]})", d.p50_ms, r.p50_ms, ""))
                rows.append((f"  p99 ms ({name.split()[0]})", d.p99_ms, r.p99_ms, ""))
            d_bulk = bulk(f"{direct}/bulk", size)
            r_bulk = bulk(f"{relay}/bulk{q}", size)
            sample()
            rows.append((f"bulk MB/s ({args.bulk_mib} MiB)", d_bulk, r_bulk, ""))

    print(
        f"\nARP relay benchmark ({os.cpu_count()} cores, wrk -c{args.connections}, "
        f"{args.seconds} s per run, pool {args.pool_size})"
    )
    print(f"{'measure':<28}{'direct':>12}{'relay':>12}{'relay/direct':>14}")
    for name, d, r, note in rows:
        ratio = r / d if d else float("nan")
        print(f"{name:<28}{d:>12.1f}{r:>12.1f}{ratio:>13.2f}x  {note}")
    print(
        f"RSS MiB idle: arps {idle['arps']:.1f}, arpc {idle['arpc']:.1f}; "
        f"peak under load: arps {peak['arps']:.1f}, arpc {peak['arpc']:.1f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "idle": idle, "peak": peak}, indent=1))
    return 0


if __name__ == "__main__":
    # SIGTERM (a timeout, Ctrl-C's cousin) unwinds like an exception, so every child started
    # in its own session is stopped by its context manager instead of being left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
