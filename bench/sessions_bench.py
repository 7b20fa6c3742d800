"""Command mode under load (issue 3, Performance).

1. 100 concurrent sessions of the fake claude printing 10,000 events each: the p99 latency of
   ``GET /api/sessions/{id}`` while they run (goal ≤ 50 ms) and the server's RSS growth
   (goal ≤ 200 MiB).
2. An SSE reader replaying a 100,000-event session from the start (goal ≥ 50,000 events/s).

The server runs in a child process (as arpc would), the client here, both on loopback.
Run: ``.venv/bin/python bench/sessions_bench.py [--sessions 100] [--events 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.fakes.install import install_fakes  # noqa: E402

from arp.command.config import CommandConfig  # noqa: E402
from arp.command.server import CommandServer  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def serve(data_dir: Path, max_sessions: int) -> None:
    """The server side: prints its port, runs until stdin closes."""
    fakes = install_fakes(data_dir / "bin")
    config = CommandConfig(
        data_dir=data_dir / "data",
        command_path=fakes["claude"],
        max_sessions=max_sessions,
    )
    async with CommandServer(config) as server:
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


async def wait_done(http: aiohttp.ClientSession, ids: list[str], deadline: float) -> None:
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for sid in list(pending):
            async with http.get(f"/api/sessions/{sid}", params={"limit": 1}) as resp:
                state = await resp.json()
            if state["status"] != "running":
                if state["status"] != "completed":
                    raise RuntimeError(f"session {sid} ended {state['status']}: {state['error']}")
                pending.discard(sid)
        await asyncio.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} sessions still running at the deadline")


async def load_phase(
    http: aiohttp.ClientSession, server_pid: int, sessions: int, events: int, timeout: float
) -> dict[str, float]:
    base_rss = rss_mib(server_pid)
    peak = base_rss
    ids: list[str] = []
    latencies: list[float] = []
    small: list[float] = []
    steady: list[float] = []
    deadline = time.monotonic() + timeout
    began = time.monotonic()

    async def create() -> None:
        for _ in range(sessions):
            async with http.post(
                "/api/sessions", json={"executor": "claude", "prompt": f"fast={events}"}
            ) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(body)
                ids.append(body["session_id"])

    # GETs are measured from the first session on, while the rest are being started.
    creating = asyncio.ensure_future(create())
    i = 0
    running = True
    while running and time.monotonic() < deadline:
        if not ids:
            await asyncio.sleep(0.01)
            continue
        sid = ids[i % len(ids)]
        i += 1
        t0 = time.perf_counter()
        async with http.get(f"/api/sessions/{sid}") as resp:
            await resp.read()
        latencies.append(time.perf_counter() - t0)
        if creating.done():
            steady.append(latencies[-1])
        # The same state without the events (a polling client's request), for comparison.
        t0 = time.perf_counter()
        async with http.get(f"/api/sessions/{sid}", params={"limit": 1}) as resp:
            await resp.read()
        small.append(time.perf_counter() - t0)
        peak = max(peak, rss_mib(server_pid))
        if i % 50 == 0 and creating.done():
            async with http.get("/api/sessions", params={"limit": sessions}) as resp:
                listing = await resp.json()
            running = any(s["status"] == "running" for s in listing["sessions"])
        await asyncio.sleep(0.01)
    await creating
    await wait_done(http, ids, deadline)
    took = time.monotonic() - began
    latencies.sort()
    small.sort()
    steady.sort()

    def p(q: float, values: list[float] = latencies) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    return {
        "sessions": sessions,
        "events_each": events,
        "seconds_to_finish": round(took, 1),
        "events_per_s_ingested": round(sessions * events / took),
        "gets_measured": len(latencies),
        "get_p50_ms": round(p(0.50), 2),
        "get_p99_ms": round(p(0.99), 2),
        "get_max_ms": round(latencies[-1] * 1000, 2),
        "get_after_all_started_p99_ms": round(p(0.99, steady), 2) if steady else None,
        "get_limit1_p50_ms": round(p(0.50, small), 2),
        "get_limit1_p99_ms": round(p(0.99, small), 2),
        "get_mean_ms": round(statistics.mean(latencies) * 1000, 2),
        "rss_base_mib": round(base_rss, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_growth_mib": round(peak - base_rss, 1),
    }


async def replay_phase(
    http: aiohttp.ClientSession, events: int, timeout: float
) -> dict[str, float]:
    async with http.post(
        "/api/sessions", json={"executor": "claude", "prompt": f"fast={events}"}
    ) as resp:
        sid = (await resp.json())["session_id"]
    await wait_done(http, [sid], time.monotonic() + timeout)
    async with http.get(f"/api/sessions/{sid}", params={"limit": 1}) as resp:
        last_seq = (await resp.json())["last_seq"]
    count = 0
    began = time.perf_counter()
    pending = b""
    async with http.get(f"/api/sessions/{sid}/events", params={"after": 0}) as resp:
        async for chunk in resp.content.iter_chunked(1 << 16):
            blocks = (pending + chunk).split(b"\n\n")
            pending = blocks.pop()  # an event not complete yet
            count += sum(1 for block in blocks if block.startswith(b"id: "))
    took = time.perf_counter() - began
    return {
        "replayed_events": count,
        "session_events": last_seq,
        "replay_seconds": round(took, 2),
        "replay_events_per_s": round(count / took),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(Path(args.serve), args.sessions + 1)
        return
    with tempfile.TemporaryDirectory(prefix="arp-bench-") as tmp:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            tmp,
            "--sessions",
            str(args.sessions),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            port = int(await asyncio.wait_for(child.stdout.readline(), 30))
            timeout = aiohttp.ClientTimeout(total=args.timeout)
            async with aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}", timeout=timeout
            ) as http:
                figures = await load_phase(
                    http, child.pid, args.sessions, args.events, args.timeout
                )
                figures.update(await replay_phase(http, args.replay_events, args.timeout))
            figures["goals_met"] = (
                figures["get_p99_ms"] <= 50
                and figures["rss_growth_mib"] <= 200
                and figures["replay_events_per_s"] >= 50_000
            )
            print(json.dumps(figures, indent=2))
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 30)
            except TimeoutError:
                child.kill()
                await child.wait()


if __name__ == "__main__":
    if os.name != "posix":
        raise SystemExit("the bench reads /proc; run it on Linux")
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
