"""Chaos bench: mixed traffic through a relay while arps, arpc and the local service are killed and
restarted at random (issue 14). Run by hand: `python bench/chaos.py [--seconds 60]`; never part
of the test suite.

It starts an arps, an arpc and a local service on free loopback ports; the service answers
HTTP (echo, deterministic bulk bodies, WebSocket echo) and raw TCP echo, which arpc exposes on
a dedicated relay port. Workers drive five kinds of traffic through the relay the whole time:
keep-alive requests, a new connection per request, bulk downloads, WebSocket echo and raw TCP
echo. Every answer is checked (the echo names its request, a bulk body is compared with the
bytes the service derives from its seed), so a mixed-up or damaged answer counts as corrupted.

Meanwhile every few seconds one of the three processes is killed (SIGKILL, as a crash) and
started again after a short pause. Each operation ends as:

- completed: answered and the answer checked out;
- corrupted: answered, but not with what was asked for (the target is 0);
- failed in flight: it failed, and a kill happened while it ran;
- failed while down: it started while a process was down or coming back (the kill, the pause,
  and `--recovery` seconds after the restart) and failed;
- failed otherwise: any other failure (the target is 0: nothing fails without a kill).

Every wait has a deadline; the run lasts `--seconds` (default 60) plus a bounded drain.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import scratch_env, wait_port
from relay_bench import free_port

PY = sys.executable
OP_TIMEOUT = 10.0
"""The deadline of one operation (a request, a download, an echo)."""

SERVICE = r"""
import asyncio, random, sys
from aiohttp import web, WSMsgType

async def echo(request):
    return web.Response(text="echo " + request.query.get("n", ""))

async def blob(request):
    size, seed = int(request.match_info["size"]), int(request.match_info["seed"])
    return web.Response(body=random.Random(seed).randbytes(size))

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for message in sock:
        if message.type is WSMsgType.TEXT:
            await sock.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sock.send_bytes(message.data)
    return sock

async def raw(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/blob/{size}/{seed}", blob)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    server = await asyncio.start_server(raw, "127.0.0.1", int(sys.argv[2]))
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Child:
    """A process that can be killed and started again, its output appended to a log file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.args, self.log, self.env = name, args, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Tally:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    kills: list[float] = field(default_factory=list)
    """When each kill happened (monotonic)."""
    down: list[tuple[float, float]] = field(default_factory=list)
    """Windows when a process was down or coming back: (kill, restart + recovery)."""
    down_since: float | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)

    def record(self, kind: str, started: float, error: str | None, corrupted: bool) -> None:
        ended = time.monotonic()
        if corrupted:
            outcome = "corrupted"
        elif error is None:
            outcome = "completed"
        elif any(started <= k <= ended for k in self.kills):
            outcome = "failed in flight"
        elif self._while_down(started):
            outcome = "failed while down"
        else:
            outcome = "failed otherwise"
        self.outcomes[kind, outcome] += 1
        if outcome in ("corrupted", "failed otherwise"):
            self.examples.setdefault(f"{kind} {outcome}", []).append(error or "bad answer")

    def _while_down(self, moment: float) -> bool:
        if self.down_since is not None and moment >= self.down_since:
            return True
        return any(start <= moment <= end for start, end in self.down)


Op = Callable[[random.Random], Awaitable[bool]]
"""One operation: True when the answer checked out, False when it was wrong; raises on failure."""


async def worker(kind: str, op: Op, tally: Tally, until: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                good = await op(rng)
            tally.record(kind, started, None, corrupted=not good)
        except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            tally.record(kind, started, f"{type(exc).__name__}: {exc}"[:160], corrupted=False)
            await asyncio.sleep(0.05)  # a failing path is not hammered


def http_ops(
    base: str, keepalive: aiohttp.ClientSession, fresh: aiohttp.ClientSession
) -> dict[str, Op]:
    counter = iter(range(1 << 62))

    async def echo(session: aiohttp.ClientSession) -> bool:
        n = next(counter)
        async with session.get(f"{base}/echo", params={"n": str(n), "token": "chaos"}) as response:
            text = await response.text()
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=text[:80]
                )
            return text == f"echo {n}"

    async def keep_alive(rng: random.Random) -> bool:
        return await echo(keepalive)

    async def new_connection(rng: random.Random) -> bool:
        return await echo(fresh)

    async def bulk(rng: random.Random) -> bool:
        size, seed = rng.randrange(1 << 20, 4 << 20), rng.randrange(1 << 30)
        url = f"{base}/blob/{size}/{seed}?token=chaos"
        async with fresh.get(url) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
            body = await response.read()
        if len(body) != size:
            raise aiohttp.ClientPayloadError(f"{len(body)} of {size} bytes")
        expected = random.Random(seed).randbytes(size)
        return hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()

    async def websocket(rng: random.Random) -> bool:
        async with fresh.ws_connect(f"{base}/ws?token=chaos") as ws:
            for _ in range(rng.randrange(1, 20)):
                data = rng.randbytes(rng.randrange(1, 70_000))
                await ws.send_bytes(data)
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.BINARY:
                    raise aiohttp.ClientPayloadError(f"WebSocket ended: {message.type.name}")
                if message.data != data:
                    return False
        return True

    return {
        "keep-alive": keep_alive,
        "new conn": new_connection,
        "bulk": bulk,
        "websocket": websocket,
    }


def raw_op(port: int) -> Op:
    async def raw_tcp(rng: random.Random) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(rng.randrange(1, 10)):
                data = rng.randbytes(rng.randrange(1, 200_000))
                writer.write(struct.pack(">I", len(data)) + data)
                await writer.drain()
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                if length != len(data) or await reader.readexactly(length) != data:
                    return False
            return True
        finally:
            writer.close()

    return raw_tcp


async def chaos(children: dict[str, Child], tally: Tally, args: argparse.Namespace) -> None:
    """Kill one process at random every few seconds, start it again after a pause."""
    rng = random.Random(args.seed)
    until = time.monotonic() + args.seconds
    await asyncio.sleep(args.first_kill)
    while time.monotonic() < until - 2:
        child = children[rng.choice(args.victims)]
        now = time.monotonic()
        tally.kills.append(now)
        tally.down_since = now
        await asyncio.to_thread(child.kill)
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        child.start()
        tally.down.append((now, time.monotonic() + args.recovery))
        tally.down_since = None
        await asyncio.sleep(rng.uniform(args.min_gap, args.max_gap))


async def run(
    args: argparse.Namespace, base: str, raw_port: int, children: dict[str, Child]
) -> Tally:
    tally = Tally()
    until = time.monotonic() + args.seconds
    timeout = aiohttp.ClientTimeout(total=OP_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as keepalive,
        aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
        ) as fresh,
    ):
        ops = {**http_ops(base, keepalive, fresh), "raw tcp": raw_op(raw_port)}
        workers = [
            worker(kind, op, tally, until, seed=n * 100 + i)
            for n, (kind, op) in enumerate(ops.items())
            for i in range(args.workers)
        ]
        await asyncio.gather(chaos(children, tally, args), *workers)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long traffic runs")
    parser.add_argument("--workers", type=int, default=2, help="workers per kind of traffic")
    parser.add_argument("--first-kill", type=float, default=3.0)
    parser.add_argument("--min-gap", type=float, default=2.0, help="least time between kills")
    parser.add_argument("--max-gap", type=float, default=6.0, help="most time between kills")
    parser.add_argument(
        "--recovery", type=float, default=3.0, help="seconds after a restart that count as down"
    )
    parser.add_argument(
        "--victims", default="arps,arpc,service", help="which processes may be killed"
    )
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    args.victims = [v for v in args.victims.split(",") if v]

    tmp = Path(tempfile.mkdtemp(prefix="arp-chaos-"))
    env = scratch_env(tmp)
    (tmp / "service.py").write_text(SERVICE)
    control, proxy, public, raw_public = free_port(), free_port(), free_port(), free_port()
    http_port, raw_port = free_port(), free_port()
    children = {
        "service": Child(
            "service", [PY, str(tmp / "service.py"), str(http_port), str(raw_port)],
            tmp / "service.log", env,
        ),
        "arps": Child(
            "arps",
            [PY, "-m", "arp.relay", "--bind", "127.0.0.1", "--control-port", str(control),
             "--proxy-port", str(proxy), "--public-port", str(public), "--pool-size", "4",
             "--tcp-ports", f"{raw_public}-{raw_public}", "--heartbeat-interval", "1",
             "--heartbeat-timeout", "4", "--log-level", "warning"],
            tmp / "arps.log", env,
        ),
        "arpc": Child(
            "arpc",
            [PY, "-m", "arp.client", "--server-addr", "127.0.0.1", "--control-port", str(control),
             "--proxy-port", str(proxy), "--local-port", str(http_port), "--client-id", "chaos",
             "--remote-port", f"{raw_public}:{raw_port}", "--max-backoff", "0.5",
             "--heartbeat-interval", "1", "--heartbeat-timeout", "4", "--log-level", "warning"],
            tmp / "arpc.log", env,
        ),
    }  # fmt: skip
    try:
        for name in ("service", "arps", "arpc"):
            children[name].start()
        for port in (http_port, raw_port, control, proxy, public):
            wait_port(port, 20)
        wait_port(raw_public, 20)  # granted once arpc registered
        time.sleep(1)
        print(f"chaos for {args.seconds:.0f} s, killing {args.victims}; logs in {tmp}", flush=True)
        started = time.monotonic()
        tally = asyncio.run(run(args, f"http://127.0.0.1:{public}", raw_public, children))
        elapsed = time.monotonic() - started
    finally:
        for child in children.values():
            child.stop()

    kinds = sorted({kind for kind, _ in tally.outcomes})
    columns = [
        "completed",
        "corrupted",
        "failed in flight",
        "failed while down",
        "failed otherwise",
    ]
    print(
        f"\n{elapsed:.0f} s, kills: " + ", ".join(f"{c.name} {c.kills}" for c in children.values())
    )
    print(f"{'':12}" + "".join(f"{c:>19}" for c in columns))
    for kind in [*kinds, "total"]:
        counts = [
            sum(n for (k, o), n in tally.outcomes.items() if o == c and kind in (k, "total"))
            for c in columns
        ]
        print(f"{kind:12}" + "".join(f"{n:>19}" for n in counts))
    for what, errors in tally.examples.items():
        print(f"  {what}: {len(errors)}, e.g. {errors[:3]}")
    corrupted = sum(n for (_, o), n in tally.outcomes.items() if o == "corrupted")
    unexplained = sum(n for (_, o), n in tally.outcomes.items() if o == "failed otherwise")
    ok = corrupted == 0 and unexplained == 0
    print("PASS" if ok else f"FAIL (logs in {tmp})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
