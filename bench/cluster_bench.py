"""Cluster benchmark: the cost of the extra hop, through the node that holds the client vs
through a peer node, in one run.

Run by hand (`bash bench/run.sh cluster`): a private redis-server, two `arps --cluster` nodes
(127.0.0.1 holds the client, 127.0.0.2 is its peer), one forward-mode arpc registered with the
first, and the relay benchmark's target behind it. wrk measures keep-alive and
`Connection: close` requests through each node, alternating the order every round (medians
reported), plus the target direct for scale. Everything runs on loopback and every load is
bounded in time (`--seconds` per run, `--rounds` runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from relay_bench import PY, TARGET, WrkResult, free_port, spawn, stop, wrk

SECRET = "cluster-bench-secret-0123456789"


def free_port_on(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if ping.stdout.strip() == "PONG":
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("redis-server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--pool-size", type=int, default=16)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1 or args.seconds > 60 or args.rounds > 20:
        parser.error("--rounds in 1..20 and --seconds in 1..60")
    for tool in ("wrk", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed")
            return 2
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        (tmp / "bulk.bin").write_bytes(b"x")
        (tmp / "target.py").write_text(TARGET)
        target_port = free_port()
        os.environ["XDG_DATA_HOME"] = str(tmp / "data")
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        redis_proc, redis_url = start_redis(tmp)
        stack.callback(stop, redis_proc)
        stack.enter_context(
            spawn(PY, str(tmp / "target.py"), str(target_port), str(tmp / "bulk.bin"),
                  ready="target ready")
        )  # fmt: skip
        env = dict(os.environ, ARPS_CLUSTER_SECRET=SECRET)
        publics: dict[str, str] = {}
        controls: dict[str, tuple[int, int]] = {}
        for name, host in (("holder", "127.0.0.1"), ("peer", "127.0.0.2")):
            control, proxy, public, peer = (free_port_on(host) for _ in range(4))
            stack.enter_context(
                spawn(
                    PY, "-m", "arp.relay", "--bind", host, "--control-port", str(control),
                    "--proxy-port", str(proxy), "--public-port", str(public),
                    "--pool-size", str(args.pool_size), "--log-level", "warning",
                    "--cluster", "--node-id", name, "--peer-port", str(peer),
                    "--redis-url", redis_url, "--cluster-prefix", "bench:",
                    ready="arps listening", env=env,
                )
            )  # fmt: skip
            publics[name] = f"http://{host}:{public}"
            controls[name] = (control, proxy)
        control, proxy = controls["holder"]
        stack.enter_context(
            spawn(
                PY, "-m", "arp.client", "--server-addr", f"127.0.0.1:{control}:{proxy}",
                "--local-port", str(target_port), "--client-id", "bench",
                "--log-level", "warning", ready="Public URL", env=env,
            )
        )  # fmt: skip
        q = "?token=bench"
        paths = {
            "direct": f"http://127.0.0.1:{target_port}/{q}",
            "holding node": publics["holder"] + "/" + q,
            "peer node": publics["peer"] + "/" + q,
        }
        for url in paths.values():  # warm-up: pools, shadows, peer tunnels
            for _ in range(20):
                if wrk(url, 1, 4, False).errors == 0:
                    break
                time.sleep(0.5)
        rows: dict[tuple[str, str], list[WrkResult]] = {}
        for round_ in range(args.rounds):
            order = list(paths) if round_ % 2 == 0 else list(paths)[::-1]
            for close in (False, True):
                for path in order:
                    result = wrk(paths[path], args.seconds, args.connections, close)
                    rows.setdefault((path, "close" if close else "keep-alive"), []).append(result)
        print(
            f"\nARP cluster benchmark ({os.cpu_count()} cores, wrk -c{args.connections}, "
            f"{args.seconds} s x {args.rounds} rounds, medians)\n"
        )
        print(f"{'path':<14}{'mode':<12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for (path, mode), results in rows.items():
            rps = statistics.median(r.rps for r in results)
            p50 = statistics.median(r.p50_ms for r in results)
            p99 = statistics.median(r.p99_ms for r in results)
            errors = sum(r.errors for r in results)
            print(f"{path:<14}{mode:<12}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}")
        for mode in ("keep-alive", "close"):
            hold = statistics.median(r.rps for r in rows[("holding node", mode)])
            peer = statistics.median(r.rps for r in rows[("peer node", mode)])
            print(f"peer/holding req/s, {mode}: {peer / hold:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
