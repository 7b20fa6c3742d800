"""User-space instructions per request in arps and arpc, counted by callgrind.

Run by hand (`bash bench/run.sh instructions [--baseline REV]`). Wall-clock figures on a
shared 2-core box drift by tens of percent between runs; instruction counts do not depend on
what else the machine is doing, so they show what a change to the data path's code saves
(the kernel's share, 70-75 % of a relay's time here, is not counted: see `relay_bench.py`).
Both processes run under `valgrind --tool=callgrind`; after a warm-up their counters are
zeroed, wrk drives keep-alive requests (with `--close`, a new connection each) for
`--seconds`, and each process's count since the zero is divided by the requests wrk
completed. The count per request still moves a few percent from run to run (how many
events one epoll wake-up brings), so `--rounds` are taken and the median printed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from relay_bench import PY, TARGET, arpc_args, checkout, free_port, running, spawn


def count(out: Path, pid: int) -> int:
    """Instructions callgrind counted for `pid` since its last zero (its explicit dump)."""
    dumps = [f for f in glob.glob(f"{out}/cg.{pid}.*") if not f.endswith(f".{pid}")]
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for process {pid} in {out}")
    for line in Path(max(dumps, key=os.path.getmtime)).read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in callgrind's dump for process {pid}")


def measure(src: Path, seconds: int, tmp: Path, close: bool) -> tuple[float, float]:
    """(arps, arpc) instructions per request, running the code under `src`; with `close`,
    every request on a new connection (``Connection: close``)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    env = dict(os.environ, PYTHONPATH=str(src))
    grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
    control, proxy, public, target = free_port(), free_port(), free_port(), free_port()
    script = tmp / "target.py"
    script.write_text(TARGET)
    (tmp / "bulk").write_bytes(b"x")
    with ExitStack() as stack:
        stack.enter_context(running(PY, str(script), str(target), str(tmp / "bulk"), port=target))
        arps = stack.enter_context(
            spawn(
                *grind, PY, "-m", "arp.relay", "--bind", "127.0.0.1",
                "--control-port", str(control), "--proxy-port", str(proxy),
                "--public-port", str(public), "--log-level", "warning",
                ready="arps listening", env=env, timeout=120,
            )
        )  # fmt: skip
        arpc = stack.enter_context(
            spawn(
                *grind, *arpc_args(control, proxy, target, "bench"),
                ready="Public URL", env=env, timeout=120,
            )
        )  # fmt: skip
        url = f"http://127.0.0.1:{public}/?token=bench"
        wrk = ["wrk", "-t1", "-c20", "--timeout", "10s", url]
        if close:
            wrk[1:1] = ["-H", "Connection: close"]
        subprocess.run([*wrk, "-d3s"], capture_output=True, timeout=60)  # warm-up
        for proc in (arps, arpc):
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                           capture_output=True, timeout=60)  # fmt: skip
        done = subprocess.run(
            [*wrk, f"-d{seconds}s"], capture_output=True, text=True, timeout=seconds + 60
        ).stdout
        for proc in (arps, arpc):
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           capture_output=True, timeout=60)  # fmt: skip
        match = re.search(r"(\d+) requests in", done)
        if not match or not int(match.group(1)):
            raise RuntimeError(f"wrk completed no request:\n{done}")
        requests = int(match.group(1))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                return count(out, arps.pid) / requests, count(out, arpc.pid) / requests
            except RuntimeError:
                time.sleep(0.2)  # the dump is still being written
        return count(out, arps.pid) / requests, count(out, arpc.pid) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="of keep-alive load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--close", action="store_true", help="a new connection per request (Connection: close)"
    )
    parser.add_argument(
        "--baseline", action="append", default=[], help="also count ARP at this revision"
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            print(f"instructions: {tool} is not installed (bench/run.sh installs it)")
            return 2
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"this tree": here / "src"}
        for rev in args.baseline:
            trees[rev] = checkout(rev, tmp) / "src"
        counts: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for name, src in trees.items():
                counts[name].append(measure(src, args.seconds, tmp, args.close))
                arps, arpc = counts[name][-1]
                print(f"round {round_ + 1}, {name}: arps {arps:,.0f}, arpc {arpc:,.0f}")
                sys.stdout.flush()
    print(
        f"\nUser-space instructions per {'new connection' if args.close else 'keep-alive request'}"
        f" (callgrind, wrk -c20, "
        f"{args.seconds} s, median of {args.rounds} rounds)"
    )
    for name, runs in counts.items():
        arps = statistics.median(r[0] for r in runs)
        arpc = statistics.median(r[1] for r in runs)
        print(f"  {name:>12}: arps {arps:>8,.0f}   arpc {arpc:>8,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
