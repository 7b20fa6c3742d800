"""Fuzz bench: generated and mutated inputs at an arps's control, proxy and public ports while a
canary client keeps being served (issue 14). Run by hand: `python bench/fuzz.py [--count N]
[--seconds S]`; never part of the test suite.

It starts its own arps, a canary arpc and the canary's local HTTP service on free loopback ports,
then sends inputs, one connection each, with bounded concurrency: valid control frames and HTTP
heads mutated by bit flips, truncation, splicing, inserted and repeated bytes and lying length
fields; nesting bombs; random bytes; random heads. Each connection reads the answer for a few
milliseconds and is then reset (SO_LINGER 0: no TIME_WAIT pile-up, and the relay's reset paths
get exercised too). Meanwhile the canary sends a request through the relay every
`--canary-interval` and must get its answer every time.

It prints the inputs sent per port and what became of them, the canary's successes and
failures, tracebacks in arps's log, and arps's RSS and open file descriptors: idle, after a
warm-up (the allocator's arenas grow to the working set once), and at the end after the
relay's retention has let go of the clients the fuzz registered. The RSS at the end must be
within 10% of the warm-up figure. Exit status 0 when arps lived, the canary never failed, no
traceback was logged and the RSS held; 1 otherwise. Every wait and count is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_bench import TARGET, free_port, rss_mib, stop

PY = sys.executable
_RESET = struct.pack("ii", 1, 0)
RETENTION = 5
"""arps --retention for the run: fuzzed registrations are forgotten this soon after."""


# -- inputs ------------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def tagged(tag: str, fields: object) -> bytes:
    return frame(json.dumps({tag: fields}, separators=(",", ":")).encode())


class Inputs:
    """Generates one input per call for each port, from `rng` (reproducible by seed)."""

    CLIENT_IDS = ("canary", "fuzz", "a" * 64, "é-ünïcode", "", "x" * 300, "../etc", "a b")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # Valid material, the base of mutations.

    def _text(self) -> str:
        r = self.rng
        choice = r.random()
        if choice < 0.5:
            return r.choice(self.CLIENT_IDS) if r.random() < 0.3 else f"fuzz-{r.randrange(500)}"
        if choice < 0.8:
            return "".join(chr(r.randrange(32, 0x2FFF)) for _ in range(r.randrange(0, 40)))
        return r.choice(["", "\x00", "\ud7ff", "\\", '"', "null"]) * r.randrange(1, 5)

    def _value(self, depth: int = 0) -> object:
        r = self.rng
        kind = r.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return self._text()
        if kind == 1:
            return r.choice([0, -1, 1, 2**31, 2**63, -(2**70), 65535, 17001])
        if kind == 2:
            return r.choice([True, False, None, 1.5e308, -0.0])
        if kind in (3, 4):
            return self._text()
        if kind in (5, 6):
            return [self._value(depth + 1) for _ in range(r.randrange(4))]
        return {self._text(): self._value(depth + 1) for _ in range(r.randrange(4))}

    def control_frame(self) -> bytes:
        r = self.rng
        kind = r.randrange(10)
        if kind == 0:
            return tagged(
                "Register",
                {"client_id": self._text(), "tunnel_protocol": r.choice([1, 2, 3]),
                 "tcp_ports": [r.randrange(70000) for _ in range(r.randrange(3))],
                 "resume_key": r.choice([None, self._text()]),
                 "auth_token": r.choice([None, self._text()]), "version": "0.1.0"},
            )  # fmt: skip
        if kind == 1:
            return tagged(
                "Register", {"client_id": f"fuzz-{r.randrange(200)}", "tunnel_protocol": 2}
            )
        if kind == 2:
            return tagged("Heartbeat", {"seq": self._value()})
        if kind == 3:
            return frame(b'"Heartbeat"')
        if kind == 4:
            return tagged(
                "NewProxyConn", {"proxy_conn_id": self._text(), "client_id": self._text()}
            )
        if kind == 5:
            return tagged("RequestNewProxyConn", {"proxy_conn_id": self._text()})
        if kind == 6:
            return tagged("StartProxy", {"tcp_port": self._value()})
        if kind == 7:
            return tagged("Error", {"message": self._text()})
        if kind == 8:
            return tagged(self._text(), self._value())
        return tagged(
            r.choice(["Register", "NewProxyConn", "Heartbeat", "RegisterResult"]),
            {self._text(): self._value() for _ in range(r.randrange(5))},
        )

    def http_head(self) -> bytes:
        r = self.rng
        method = r.choice(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "GE T"])
        token = r.choice(["canary", "nobody", "fuzz-1", "", "canary%00", "c" * 200])
        target = r.choice(
            [f"/?token={token}", f"/a/b?x=1&token={token}", "/", "*", "http://h/p?token=canary",
             "/" + "a" * r.randrange(5000), f"/?token={token}&token=canary", "/%zz?token=canary"]
        )  # fmt: skip
        version = r.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""])
        headers = [f"Host: {r.choice(['relay', 'canary.relay.test', '', 'h' * 300])}"]
        for _ in range(r.randrange(6)):
            headers.append(
                r.choice(
                    [f"X-ARP-Token: {token}", f"Cookie: arp_token={token}; a=b",
                     f"Content-Length: {r.choice([0, 5, -1, 2**64, '1,1', ' 3'])}",
                     "Transfer-Encoding: chunked", "Connection: close", "Connection: Upgrade",
                     "Upgrade: websocket", "X-Forwarded-For: 10.0.0.1", "Expect: 100-continue",
                     f"{self._text()}: {self._text()}", "X" * r.randrange(40000) + ": y",
                     " folded: line", "NoColon"]
                )
            )  # fmt: skip
        body = b""
        if r.random() < 0.3:
            body = r.choice([b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", os.urandom(64)])
        head = f"{method} {target} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n"
        return head.encode("utf-8", "surrogatepass") + body

    # Mutations.

    def mutate(self, data: bytes, other: bytes) -> bytes:
        r = self.rng
        buf = bytearray(data)
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(7)
            if op == 0 and buf:  # bit flips
                for _ in range(r.randrange(1, 8)):
                    buf[r.randrange(len(buf))] ^= 1 << r.randrange(8)
            elif op == 1 and buf:  # truncation
                del buf[r.randrange(len(buf)) :]
            elif op == 2:  # splice with another input
                cut = r.randrange(len(buf) + 1)
                buf = buf[:cut] + other[r.randrange(len(other) + 1) :]
            elif op == 3:  # inserted bytes
                pos = r.randrange(len(buf) + 1)
                buf[pos:pos] = r.choice([os.urandom(r.randrange(1, 16)), b"\r\n", b"\x00", b"{"])
            elif op == 4 and buf:  # a repeated chunk
                a = r.randrange(len(buf))
                b = min(len(buf), a + r.randrange(1, 64))
                buf[a:a] = buf[a:b] * r.randrange(2, 50)
            elif op == 5 and len(buf) >= 4:  # a length field that lies
                lie = r.choice([0, 1, len(buf) + 100, 65536, 65537, 2**31, 2**32 - 1])
                buf[0:4] = struct.pack(">I", lie)
            elif op == 6 and buf:  # a deleted chunk
                a = r.randrange(len(buf))
                del buf[a : a + r.randrange(1, 32)]
        return bytes(buf[: 256 * 1024])

    def nesting_bomb(self) -> bytes:
        r = self.rng
        depth = r.choice([65, 100, 1000, 2000, 20000])
        opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + "1" + closer * depth * r.randrange(2)
        body = r.choice(['{"Register":{"client_id":%s}}', "%s", '{"Heartbeat":{"seq":%s}}'])
        return frame((body % inner).encode())

    def control(self) -> bytes:
        r = self.rng
        kind = r.random()
        if kind < 0.05:
            return self.nesting_bomb()
        if kind < 0.10:
            return os.urandom(r.randrange(1, 2048))
        if kind < 0.25:
            return b"".join(self.control_frame() for _ in range(r.randrange(1, 5)))
        if kind < 0.30:
            return self.http_head()  # the wrong protocol
        return self.mutate(self.control_frame(), self.control_frame())

    proxy = control

    def public(self) -> bytes:
        r = self.rng
        kind = r.random()
        if kind < 0.05:
            return os.urandom(r.randrange(1, 4096))
        if kind < 0.10:
            return self.control_frame()  # the wrong protocol
        if kind < 0.35:
            return self.http_head()
        if kind < 0.40:  # pipelined heads
            return b"".join(self.http_head() for _ in range(r.randrange(2, 5)))
        return self.mutate(self.http_head(), self.http_head())


# -- processes ---------------------------------------------------------------------------------


@contextmanager
def spawn(
    args: list[str], log: IO[bytes], env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A child whose output goes to `log` (a file: a pipe nobody reads would block it)."""
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        yield proc
    finally:
        stop(proc)


def scratch_env(folder: Path) -> dict[str, str]:
    """The environment for children whose ids, configs and logs belong in `folder`."""
    return {
        **os.environ,
        "HOME": str(folder / "home"),
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_STATE_HOME": str(folder / "state"),
    }


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Stats:
    sent: Counter[str] = field(default_factory=Counter)
    outcome: Counter[tuple[str, str]] = field(default_factory=Counter)
    canary_ok: int = 0
    canary_failed: int = 0
    canary_worst: float = 0.0
    canary_errors: list[str] = field(default_factory=list)


async def send_one(stats: Stats, name: str, port: int, data: bytes, read_for: float) -> None:
    """One input on its own connection; records what became of it; resets the connection."""
    try:
        async with asyncio.timeout(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        stats.outcome[name, "connect failed"] += 1
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    outcome = "held open"
    try:
        writer.write(data)
        async with asyncio.timeout(read_for):
            await writer.drain()
            got = 0
            while got < 1 << 20:
                chunk = await reader.read(65536)
                if not chunk:
                    outcome = "answered, closed" if got else "closed silently"
                    break
                got += len(chunk)
                outcome = "answered"
    except TimeoutError:
        pass
    except ConnectionResetError:
        outcome = "reset by relay"
    except OSError:
        outcome = "other error"
    finally:
        writer.transport.abort()
    stats.outcome[name, outcome] += 1


async def canary(stats: Stats, public: int, interval: float, stop_event: asyncio.Event) -> None:
    """A request through the relay every `interval`; every one must be answered 200 "ok"."""
    request = (
        b"GET /canary HTTP/1.1\r\nHost: relay\r\nX-ARP-Token: canary\r\nConnection: close\r\n\r\n"
    )
    while not stop_event.is_set():
        started = time.monotonic()
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", public)
                try:
                    writer.write(request)
                    answer = await reader.read(-1)
                finally:
                    writer.close()
            if answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok"):
                stats.canary_ok += 1
            else:
                stats.canary_failed += 1
                stats.canary_errors.append(answer[:120].decode(errors="replace"))
        except (OSError, TimeoutError) as exc:
            stats.canary_failed += 1
            stats.canary_errors.append(repr(exc))
        stats.canary_worst = max(stats.canary_worst, time.monotonic() - started)
        await asyncio.sleep(interval)


async def fuzz(
    args: argparse.Namespace,
    ports: dict[str, int],
    stats: Stats,
    alive: Callable[[], str | None],
    on_warm: Callable[[], None],
) -> str | None:
    """Send the inputs; returns why it stopped early (a process died), else None."""
    inputs = Inputs(random.Random(args.seed))
    makers = {"control": inputs.control, "proxy": inputs.proxy, "public": inputs.public}
    weights = {"control": 0.35, "proxy": 0.25, "public": 0.40}
    names = list(makers)
    pick = random.Random(args.seed + 1)
    stop_event = asyncio.Event()
    canary_task = asyncio.create_task(
        canary(stats, ports["public"], args.canary_interval, stop_event)
    )
    slots = asyncio.Semaphore(args.concurrency)
    pending: set[asyncio.Task[None]] = set()
    deadline = time.monotonic() + args.seconds
    warmup = min(args.count // 20, 20_000)
    why: str | None = None
    last_report = time.monotonic()
    read_for = args.read_ms / 1000
    for n in range(args.count):
        if n == warmup:
            on_warm()
        if time.monotonic() > deadline:
            break
        if n % 500 == 0 and (why := alive()) is not None:
            break
        name = pick.choices(names, [weights[x] for x in names])[0]
        data = makers[name]()
        stats.sent[name] += 1
        await slots.acquire()
        task = asyncio.create_task(send_one(stats, name, ports[name], data, read_for))
        pending.add(task)
        task.add_done_callback(lambda t: (pending.discard(t), slots.release()))
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(
                f"  {sum(stats.sent.values()):>9} inputs, canary {stats.canary_ok} ok / "
                f"{stats.canary_failed} failed",
                flush=True,
            )
    if pending:
        await asyncio.wait(pending, timeout=10)
    # Let the relay forget the fuzz's registrations, with the canary still asking.
    await asyncio.sleep(RETENTION + 4)
    stop_event.set()
    await asyncio.wait([canary_task], timeout=10)
    return why or alive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to send in all")
    parser.add_argument("--seconds", type=float, default=1800, help="stop sending after this")
    parser.add_argument("--concurrency", type=int, default=128, help="connections at once")
    parser.add_argument("--read-ms", type=float, default=30, help="how long to read each answer")
    parser.add_argument("--canary-interval", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="arp-fuzz-"))
    env = scratch_env(tmp)
    (tmp / "target.py").write_text(TARGET)
    ports = {"control": free_port(), "proxy": free_port(), "public": free_port()}
    target_port = free_port()
    logs = {name: (tmp / f"{name}.log").open("wb") for name in ("target", "arps", "arpc")}
    with ExitStack() as stack:
        stack.enter_context(
            spawn([PY, str(tmp / "target.py"), str(target_port), "/dev/null"], logs["target"], env)
        )
        arps = stack.enter_context(
            spawn(
                [PY, "-m", "arp.relay", "--bind", "127.0.0.1",
                 "--control-port", str(ports["control"]), "--proxy-port", str(ports["proxy"]),
                 "--public-port", str(ports["public"]), "--pool-size", "4",
                 "--retention", str(RETENTION), "--log-level", "error"],
                logs["arps"], env,
            )
        )  # fmt: skip
        wait_port(target_port, 20)
        for port in ports.values():
            wait_port(port, 20)
        arpc = stack.enter_context(
            spawn(
                [PY, "-m", "arp.client", "--server-addr", "127.0.0.1",
                 "--control-port", str(ports["control"]), "--proxy-port", str(ports["proxy"]),
                 "--local-port", str(target_port), "--client-id", "canary",
                 "--log-level", "warning"],
                logs["arpc"], env,
            )
        )  # fmt: skip
        time.sleep(2)  # registration and the first pooled tunnels
        figures: dict[str, tuple[float, int]] = {"idle": (rss_mib(arps.pid), open_fds(arps.pid))}

        def alive() -> str | None:
            for name, proc in (("arps", arps), ("arpc", arpc)):
                if proc.poll() is not None:
                    return f"{name} exited with status {proc.returncode}"
            return None

        def on_warm() -> None:
            figures["warm"] = (rss_mib(arps.pid), open_fds(arps.pid))

        stats = Stats()
        started = time.monotonic()
        print(f"fuzzing arps (pid {arps.pid}) on {ports}; logs in {tmp}", flush=True)
        why = asyncio.run(fuzz(args, ports, stats, alive, on_warm))
        elapsed = time.monotonic() - started
        if why is None:
            figures["end"] = (rss_mib(arps.pid), open_fds(arps.pid))
    for log in logs.values():
        log.close()
    arps_log = (tmp / "arps.log").read_text(errors="replace")
    tracebacks = arps_log.count("Traceback (most recent call last)")

    total = sum(stats.sent.values())
    rate = total / max(elapsed, 1e-9)
    print(f"\n{total} inputs in {elapsed:.0f} s ({rate:.0f}/s), seed {args.seed}")
    for name in ("control", "proxy", "public"):
        outcomes = ", ".join(
            f"{what} {count}"
            for (port, what), count in sorted(stats.outcome.items())
            if port == name
        )
        print(f"  {name:8} {stats.sent[name]:>9}: {outcomes}")
    print(
        f"canary: {stats.canary_ok} ok, {stats.canary_failed} failed, "
        f"slowest {stats.canary_worst * 1000:.0f} ms"
    )
    for error in stats.canary_errors[:5]:
        print(f"  canary failure: {error}")
    print(f"arps tracebacks logged: {tracebacks}")
    for stage, (rss, fds) in figures.items():
        print(f"arps {stage:5}: RSS {rss:7.1f} MiB, {fds} open fds")
    ok = why is None and stats.canary_failed == 0 and tracebacks == 0
    if why is not None:
        print(f"STOPPED EARLY: {why}; see {tmp}")
    elif "warm" in figures:
        growth = figures["end"][0] / figures["warm"][0] - 1
        print(f"RSS end vs warm-up: {growth:+.1%} (bound +10%)")
        ok = ok and growth <= 0.10
    if ok and not args.keep_logs:
        for path in tmp.glob("*.log"):
            path.unlink()
    else:
        print(f"logs kept in {tmp}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
