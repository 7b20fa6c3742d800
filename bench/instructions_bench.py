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
`--haproxy` counts the two chained haproxy of `relay_bench.py` the same way, for scale.
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
from typing import Any

from relay_bench import HAPROXY, PY, TARGET, arpc_args, checkout, free_port, running, spawn


def count(out: Path, pid: int) -> int:
    """Instructions callgrind counted for `pid` since its last zero (its explicit dump)."""
    dumps = [f for f in glob.glob(f"{out}/cg.{pid}.*") if not f.endswith(f".{pid}")]
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for process {pid} in {out}")
    for line in Path(max(dumps, key=os.path.getmtime)).read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in callgrind's dump for process {pid}")


def _grind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]


def _per_request(
    procs: list[Any], url: str, seconds: int, close: bool, out: Path
) -> tuple[float, float]:
    """Warm up, zero both processes' counters, drive `url` for `seconds`, and divide each
    one's count since the zero by the requests wrk completed."""
    wrk = ["wrk", "-t1", "-c20", "--timeout", "10s", url]
    if close:
        wrk[1:1] = ["-H", "Connection: close"]
    subprocess.run([*wrk, "-d3s"], capture_output=True, timeout=60)  # warm-up
    for proc in procs:
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
    done = subprocess.run(
        [*wrk, f"-d{seconds}s"], capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    for proc in procs:
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
    match = re.search(r"(\d+) requests in", done)
    if not match or not int(match.group(1)):
        raise RuntimeError(f"wrk completed no request:\n{done}")
    requests = int(match.group(1))
    deadline = time.monotonic() + 30
    while True:
        try:
            first, second = (count(out, proc.pid) / requests for proc in procs)
            return first, second
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the dump is still being written


def _target(stack: ExitStack, tmp: Path) -> int:
    script, target = tmp / "target.py", free_port()
    script.write_text(TARGET)
    (tmp / "bulk").write_bytes(b"x")
    stack.enter_context(running(PY, str(script), str(target), str(tmp / "bulk"), port=target))
    return target


def measure(src: Path, seconds: int, tmp: Path, close: bool) -> tuple[float, float]:
    """(arps, arpc) instructions per request, running the code under `src`; with `close`,
    every request on a new connection (``Connection: close``)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    env = dict(os.environ, PYTHONPATH=str(src))
    control, proxy, public = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        target = _target(stack, tmp)
        arps = stack.enter_context(
            spawn(
                *_grind(out), PY, "-m", "arp.relay", "--bind", "127.0.0.1",
                "--control-port", str(control), "--proxy-port", str(proxy),
                "--public-port", str(public), "--log-level", "warning",
                ready="arps listening", env=env, timeout=120,
            )
        )  # fmt: skip
        arpc = stack.enter_context(
            spawn(
                *_grind(out), *arpc_args(control, proxy, target, "bench"),
                ready="Public URL", env=env, timeout=120,
            )
        )  # fmt: skip
        url = f"http://127.0.0.1:{public}/?token=bench"
        return _per_request([arps, arpc], url, seconds, close, out)


def measure_haproxy(seconds: int, tmp: Path, close: bool) -> tuple[float, float]:
    """The same count for two chained haproxy in TCP mode (`relay_bench.HAPROXY`): the
    first hop, then the second."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    first, second = free_port(), free_port()
    with ExitStack() as stack:
        target = _target(stack, tmp)
        procs = []
        for name, listen, upstream in (("b", second, target), ("a", first, second)):
            config = out / f"haproxy-{name}.cfg"
            config.write_text(HAPROXY.format(listen=listen, upstream=upstream))
            procs.append(
                stack.enter_context(
                    running(*_grind(out), "haproxy", "-db", "-f", str(config), port=listen)
                )
            )
        hop_b, hop_a = procs
        return _per_request([hop_a, hop_b], f"http://127.0.0.1:{first}/", seconds, close, out)


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
    parser.add_argument(
        "--haproxy",
        action="store_true",
        help="also count two chained haproxy (relay_bench's reference) the same way",
    )
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk", *(["haproxy"] if args.haproxy else [])):
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
        if args.haproxy:
            counts["haproxy x2"] = []
        for round_ in range(args.rounds):
            for name in counts:
                if name == "haproxy x2":
                    counts[name].append(measure_haproxy(args.seconds, tmp, args.close))
                else:
                    counts[name].append(measure(trees[name], args.seconds, tmp, args.close))
                first, second = counts[name][-1]
                print(f"round {round_ + 1}, {name}: {_pair(name, first, second)}")
                sys.stdout.flush()
    print(
        f"\nUser-space instructions per {'new connection' if args.close else 'keep-alive request'}"
        f" (callgrind, wrk -c20, "
        f"{args.seconds} s, median of {args.rounds} rounds)"
    )
    for name, runs in counts.items():
        first = statistics.median(r[0] for r in runs)
        second = statistics.median(r[1] for r in runs)
        print(f"  {name:>12}: {_pair(name, first, second)}")
    return 0


def _pair(name: str, first: float, second: float) -> str:
    """arps and arpc, or haproxy's first and second hop (arps' and arpc's places)."""
    labels = ("hop 1", "hop 2") if name == "haproxy x2" else ("arps", "arpc")
    return f"{labels[0]} {first:>8,.0f}   {labels[1]} {second:>8,.0f}"


if __name__ == "__main__":
    sys.exit(main())
