"""Relay benchmark: the same loads direct to a local HTTP target and through arps + arpc.

Run by hand (`bash bench/run.sh relay`); it prints a table of figures and their ratio
relay/direct, measured in the same run on this machine, plus the RSS of arps and arpc idle and
under load, and the memory arps holds per idle routed keep-alive connection (RSS growth with
`--idle-connections` of them open, each after one request). `--reference haproxy` and
`--reference ssh` add, for scale, the same loads through two chained haproxy (a C relay with the
same three TCP hops) and through an OpenSSH `ssh -R` tunnel; with haproxy, each ARP path's ratio
to it is printed too (issue 18's targets). Loads come from wrk and curl (C programs), so the
client is never the bottleneck. Everything runs on loopback and every load is bounded in time.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one given before in this run (the kernel may hand a
    just-closed port out again, and a relay given one port twice cannot start)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port not handed out before after 100 tries")


def compiled(pid: int) -> bool:
    """Whether the process runs ARP's data path compiled by mypyc (`arp.native`)."""
    return "arp_native__mypyc" in Path(f"/proc/{pid}/maps").read_text()


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
def spawn(
    *args: str, ready: str, env: dict[str, str] | None = None, timeout: float = 20
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        wait_line(proc, ready, timeout)
        # Keep draining output so the child never blocks on a full pipe.
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the child is still there after 10 s."""
    proc.terminate()
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
    requests: int = 0


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+(?:e[+-]?\d+)?)(us|ms|s|m)", text)
    if not match:
        print(f"bench: wrk printed a latency this cannot read: {text!r}", file=sys.stderr)
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, seconds: int, connections: int, close: bool) -> WrkResult:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    return parse_wrk(
        subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    )


def parse_wrk(out: str) -> WrkResult:
    """What a ``wrk --latency`` run printed: its rate, p50 and p99, errors and requests."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The distribution's own lines: a "+/- Stdev" figure such as 67.99% also ends in "99%".
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    done = re.search(r"(\d+) requests in", out)
    return WrkResult(
        rps,
        _ms(p50.group(1)) if p50 else 0,
        _ms(p99.group(1)) if p99 else 0,
        errors,
        int(done.group(1)) if done else 0,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _order(paths: dict[str, str], round_: int) -> list[str]:
    """Every other round runs the paths backwards: a run tends to be slower than the one
    before it on this host, and a fixed order would always favour the first path."""
    names = list(paths)
    return names if round_ % 2 == 0 else names[::-1]


def _median(runs: dict[str, list[WrkResult]], field: str) -> dict[str, float]:
    """Each path's median of `field` over its rounds; a round whose figure could not be read
    (nan, reported by `_ms`) is left out, and a path with none left reads nan."""
    medians = {}
    for path, rs in runs.items():
        values = [v for r in rs if not math.isnan(v := getattr(r, field))]
        medians[path] = statistics.median(values) if values else float("nan")
    return medians


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


HAPROXY = """global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend hop
    bind 127.0.0.1:{listen}
    default_backend next
backend next
    server next 127.0.0.1:{upstream}
"""

SSHD = """Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile {dir}/sshd.pid
AllowTcpForwarding remote
"""


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def running(*args: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A child that is ready once `port` accepts connections; stopped on the way out."""
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_port(port)
        yield proc
    finally:
        stop(proc)


@contextmanager
def haproxy_chain(tmp: Path, target_port: int) -> Iterator[str]:
    """Two haproxy processes in a row (mode tcp): a C relay with the same three TCP hops as
    public → arps → arpc → target, without a tunnel pool."""
    first, second = free_port(), free_port()
    configs = []
    for name, listen, upstream in (("a", first, second), ("b", second, target_port)):
        config = tmp / f"haproxy-{name}.cfg"
        config.write_text(HAPROXY.format(listen=listen, upstream=upstream))
        configs.append(config)
    with (
        running("haproxy", "-db", "-f", str(configs[1]), port=second),
        running("haproxy", "-db", "-f", str(configs[0]), port=first),
    ):
        yield f"http://127.0.0.1:{first}"


@contextmanager
def ssh_reverse(tmp: Path, target_port: int) -> Iterator[str]:
    """An OpenSSH reverse tunnel (``ssh -R``) to the target, through an sshd on loopback."""
    keys = tmp / "ssh"
    keys.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    (keys / "authorized_keys").write_bytes((keys / "client_key.pub").read_bytes())
    sshd_port, public = free_port(), free_port()
    config = keys / "sshd_config"
    config.write_text(SSHD.format(port=sshd_port, dir=keys))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    with (
        running(shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config),
                port=sshd_port),
        running(
            "ssh", "-N", "-i", str(keys / "client_key"), "-p", str(sshd_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-R", f"{public}:127.0.0.1:{target_port}",
            f"{getpass.getuser()}@127.0.0.1",
            port=public,
        ),
    ):  # fmt: skip
        yield f"http://127.0.0.1:{public}"


@dataclass
class ArpPath:
    """One arps and its forward-mode arpc in front of the target."""

    arps: subprocess.Popen[str]
    arpc: subprocess.Popen[str]
    url: str
    control: int
    proxy: int
    env: dict[str, str]


def arpc_args(path_control: int, proxy: int, target_port: int, client_id: str) -> list[str]:
    return [
        PY, "-m", "arp.client", "--control-port", str(path_control), "--proxy-port", str(proxy),
        "--local-port", str(target_port), "--client-id", client_id, "--log-level", "warning",
    ]  # fmt: skip


@contextmanager
def arp_relay(
    target_port: int, pool_size: int, client_id: str, src: Path | None = None
) -> Iterator[ArpPath]:
    """arps and a forward-mode arpc in front of the target. `src` runs another checkout's code
    (``--baseline``) instead of this one's."""
    control, proxy, public = free_port(), free_port(), free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with (
        spawn(
            PY, "-m", "arp.relay", "--bind", "127.0.0.1", "--control-port", str(control),
            "--proxy-port", str(proxy), "--public-port", str(public),
            "--pool-size", str(pool_size), "--log-level", "warning",
            ready="arps listening", env=env,
        ) as arps,
        spawn(
            *arpc_args(control, proxy, target_port, client_id), ready="Public URL", env=env
        ) as arpc,
    ):  # fmt: skip
        yield ArpPath(arps, arpc, f"http://127.0.0.1:{public}", control, proxy, env)


def hold_idle(
    url: str, query: str, count: int, deadline_s: float, first_source: int = 0
) -> list[socket.socket]:
    """`count` keep-alive connections to `url`, each through one complete request and left
    open (raw sockets, one at a time; bounded by `deadline_s` in all), from loopback source
    addresses numbered on from `first_source` (connections held already). Stops early at the
    deadline or the first failure and returns what it opened."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    held: list[socket.socket] = []
    deadline = time.monotonic() + deadline_s
    while len(held) < count and time.monotonic() < deadline:
        sock = socket.socket()
        try:
            sock.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            # From many loopback addresses: arps bounds connections per caller address
            # (--max-connections-per-ip, 256), and these stand for many callers.
            n = (first_source + len(held)) // IDLE_PER_SOURCE
            sock.bind((f"127.1.{n // 250}.{2 + n % 250}", 0))
            sock.connect((host, int(port)))
            sock.sendall(request)
            got = b""
            while not (b"\r\n\r\n" in got and got.endswith(b"ok")):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed before the response")
                got += chunk
        except OSError as exc:
            sock.close()
            print(f"idle connections: stopped at {len(held)}: {exc}")
            break
        held.append(sock)
    return held


IDLE_PER_SOURCE = 200
"""Idle connections from one source address, under arps's default per-address bound."""

IDLE_PER_CLIENT = 2500
"""Idle connections per client in the memory measure: each holds one of its client's tunnels,
and arpc bounds its tunnels (`Limits.max_client_tunnels`), so more connections take more
clients."""


def per_idle_connection(
    relays: dict[str, ArpPath], target_port: int, count: int
) -> dict[str, float]:
    """Bytes of arps RSS per idle routed connection, for each ARP path: RSS growth while
    `count` idle keep-alive connections (one request each, spread over enough clients) are
    open, over their number."""
    per: dict[str, float] = {}
    for name, path in relays.items():
        clients = [f"idle{i}" for i in range(-(-count // IDLE_PER_CLIENT))]
        with ExitStack() as stack:
            for client_id in clients:
                stack.enter_context(
                    spawn(
                        *arpc_args(path.control, path.proxy, target_port, client_id),
                        ready="Public URL",
                        env=path.env,
                    )
                )
            time.sleep(1)
            before = rss_mib(path.arps.pid)
            held: list[socket.socket] = []
            try:
                for i, client_id in enumerate(clients):
                    share = min(IDLE_PER_CLIENT, count - i * IDLE_PER_CLIENT)
                    held += hold_idle(
                        path.url, f"?token={client_id}", share, 60, first_source=len(held)
                    )
                time.sleep(1)
                after = rss_mib(path.arps.pid)
            finally:
                for sock in held:
                    sock.close()
        per[name] = (after - before) * (1 << 20) / len(held) if held else float("nan")
        if len(held) < count:
            print(f"{name}: only {len(held)} of {count} idle connections opened")
    return per


def raise_own_fd_limit(needed: int) -> None:
    """The idle-connection measure holds `needed` sockets in this process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def checkout(rev: str, tmp: Path) -> Path:
    """The tree of `rev` from this repository, unpacked under `tmp` (nothing of the working
    tree or its worktrees is touched)."""
    tree = tmp / f"tree-{rev.replace('/', '_')}"
    tree.mkdir()
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "src", "scripts"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    if (tree / "scripts" / "build_native.py").exists():
        # That revision's compiled data path, as its set-up would build it.
        subprocess.run([PY, str(tree / "scripts" / "build_native.py")], check=True)
    return tree


REFERENCES = {"haproxy": ("haproxy x2", haproxy_chain), "ssh": ("ssh -R", ssh_reverse)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--bulk-mib", type=int, default=1024, help="bulk download size")
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every measure; medians are reported"
    )
    parser.add_argument(
        "--reference",
        action="append",
        choices=sorted(REFERENCES),
        default=[],
        help="also measure this relay in the same run, for scale: haproxy (two chained "
        "haproxy in TCP mode) or ssh (an OpenSSH ssh -R tunnel); repeatable",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REV",
        help="also measure ARP as it was at this git revision (e.g. main), in the same run and "
        "alternating order, to compare a change before and after; repeatable",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=5000,
        help="idle keep-alive connections held open to measure arps' memory per connection "
        "(0: skip; default %(default)s)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if not 0 <= args.idle_connections <= 20_000:
        parser.error("--idle-connections must be 0..20000")
    raise_own_fd_limit(args.idle_connections + 256)
    tools = ["wrk", "curl"] + [
        tool
        for ref in args.reference
        for tool in ({"haproxy": ["haproxy"], "ssh": ["ssh", "ssh-keygen"]}[ref])
    ]
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: run bash bench/run.sh (it installs it)")
            return 2
    if "ssh" in args.reference and not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        print("sshd is not installed: run bash bench/run.sh (it installs it)")
        return 2

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bulk_file = tmp / "bulk.bin"
        with bulk_file.open("wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.bulk_mib):
                f.write(block)
        size = args.bulk_mib << 20
        target_script = tmp / "target.py"
        target_script.write_text(TARGET)
        target_port = free_port()
        env_home = tmp / "home"
        os.environ["XDG_DATA_HOME"] = str(env_home / "data")
        os.environ["XDG_CONFIG_HOME"] = str(env_home / "config")
        with ExitStack() as stack:
            stack.enter_context(
                spawn(
                    PY, str(target_script), str(target_port), str(bulk_file), ready="target ready"
                )
            )
            main_path = stack.enter_context(arp_relay(target_port, args.pool_size, "bench"))
            arps, arpc, relay_url = main_path.arps, main_path.arpc, main_path.url
            q = "?token=bench"
            paths = {"direct": f"http://127.0.0.1:{target_port}", "relay": relay_url}
            relays = {"relay": main_path}
            """Each ARP path's arps (this tree's and every --baseline's)."""
            for rev in args.baseline:
                tree = checkout(rev, tmp)
                name = f"arp@{rev}"[:10]
                relays[name] = stack.enter_context(
                    arp_relay(target_port, args.pool_size, "bench", src=tree / "src")
                )
                paths[name] = relays[name].url
            for ref in args.reference:
                name, start = REFERENCES[ref]
                paths[name] = stack.enter_context(start(tmp, target_port))
            time.sleep(1)
            idle = {"arps": rss_mib(arps.pid), "arpc": rss_mib(arpc.pid)}
            native = {
                name: compiled(path.arps.pid) and compiled(path.arpc.pid)
                for name, path in relays.items()
            }
            peak = dict(idle)
            per_conn = (
                per_idle_connection(relays, target_port, args.idle_connections)
                if args.idle_connections
                else {}
            )

            def sample() -> None:
                peak["arps"] = max(peak["arps"], rss_mib(arps.pid))
                peak["arpc"] = max(peak["arpc"], rss_mib(arpc.pid))

            rows: list[tuple[str, dict[str, float], str]] = []
            cpu: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
            """(measure, ARP path) → µs of CPU per request in arps and in arpc, per round."""
            for base in paths.values():
                wrk(f"{base}/{q}", 1, args.connections, False)  # warm-up
            for name, close in (("keep-alive req/s", False), ("connections/s", True)):
                # Rounds of every path in turn, medians kept: a host whose speed drifts during
                # the run then weighs on every path alike.
                runs: dict[str, list[WrkResult]] = {path: [] for path in paths}
                for round_ in range(args.rounds):
                    for path in _order(paths, round_):
                        relay = relays.get(path)
                        before = (
                            [cpu_seconds(relay.arps.pid), cpu_seconds(relay.arpc.pid)]
                            if relay is not None
                            else []
                        )
                        result = wrk(f"{paths[path]}/{q}", args.seconds, args.connections, close)
                        runs[path].append(result)
                        if relay is not None and result.requests:
                            spent = [
                                cpu_seconds(relay.arps.pid) - before[0],
                                cpu_seconds(relay.arpc.pid) - before[1],
                            ]
                            cpu[(name, path)].append(
                                (spent[0] * 1e6 / result.requests, spent[1] * 1e6 / result.requests)
                            )
                    sample()
                errors = ", ".join(f"{p} {sum(r.errors for r in rs)}" for p, rs in runs.items())
                rows.append((name, _median(runs, "rps"), f"errors: {errors}"))
                short = name.split()[0]
                rows.append((f"  p50 ms ({short})", _median(runs, "p50_ms"), ""))
                rows.append((f"  p99 ms ({short})", _median(runs, "p99_ms"), ""))
            speeds: dict[str, list[float]] = {path: [] for path in paths}
            for round_ in range(args.rounds):
                for path in _order(paths, round_):
                    speeds[path].append(bulk(f"{paths[path]}/bulk{q}", size))
                sample()
            rows.append(
                (
                    f"bulk MB/s ({args.bulk_mib} MiB)",
                    {p: statistics.median(v) for p, v in speeds.items()},
                    "",
                )
            )

    others = [p for p in paths if p != "direct"]
    reference = "haproxy x2" if "haproxy x2" in paths else None
    arp_paths = list(relays) if reference else []
    print(
        f"\nARP relay benchmark ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end, wrk -c{args.connections}, {args.seconds} s per run, "
        f"pool {args.pool_size}, medians of {args.rounds} rounds); ratios are to direct"
        + (f", and ARP's to {reference} (/hap)" if reference else "")
    )
    header = (
        f"{'measure':<26}{'direct':>11}"
        + "".join(f"{p:>11}{'ratio':>8}" for p in others)
        + "".join(f"{p[:6] + '/hap':>11}" for p in arp_paths)
    )
    print(header)
    for name, values, note in rows:
        line = f"{name:<26}{values['direct']:>11.1f}"
        for path in others:
            ratio = values[path] / values["direct"] if values["direct"] else float("nan")
            line += f"{values[path]:>11.1f}{ratio:>7.2f}x"
        for path in arp_paths:
            assert reference is not None
            ref = values[reference]
            line += f"{values[path] / ref if ref else float('nan'):>10.2f}x"
        print(f"{line}  {note}".rstrip())
    if reference:
        print(
            "/hap: ARP over haproxy x2; for the p50/p99 rows lower is better (issue 18: "
            "p99 of a new connection per request, the connections/s run, at most 2x)"
        )
    print(
        f"RSS MiB idle: arps {idle['arps']:.1f}, arpc {idle['arpc']:.1f}; "
        f"peak under load: arps {peak['arps']:.1f}, arpc {peak['arpc']:.1f}"
    )
    print(
        "Data path compiled by mypyc (arp.native): "
        + ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in native.items())
    )
    for (measure, path), samples in cpu.items():
        arps_us = statistics.median(a for a, _ in samples)
        arpc_us = statistics.median(c for _, c in samples)
        print(
            f"CPU per request, {measure} ({path}): arps {arps_us:.1f} us, arpc {arpc_us:.1f} us "
            "(user + system, median of the rounds)"
        )
    for path, value in per_conn.items():
        print(
            f"arps RSS per idle routed keep-alive connection ({path}, "
            f"{args.idle_connections} connections): {value:.0f} bytes"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "idle": idle, "peak": peak, "per_idle_connection": per_conn},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    # SIGTERM (a timeout, Ctrl-C's cousin) unwinds like an exception, so every child started
    # in its own session is stopped by its context manager instead of being left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
