"""Gateway bench: 1,000 simulated agents in this process against one gateway process.

    .venv/bin/python bench/gateway_bench.py [--agents 1000] [--seconds 10] [--lines 200000]

Starts a private redis-server and `python -m arp.gateway` (uvloop) on free loopback ports, then:

1. heartbeats: every agent heartbeats once a second for `--seconds`; the gateway process's CPU
   (from /proc/<pid>/stat) over that time, as % of one core (target ≤ 50 %);
2. dispatch: `--tasks` POSTs of a task to a random agent, one after another; latency from the POST
   to the agent receiving the task, p50/p99 (target p99 ≤ 50 ms);
3. logs: `--log-agents` agents each send their share of `--lines` log lines with a window of
   unacked lines; lines per second until the last ack, and XLEN (target ≥ 20,000 lines/s).

Every phase is bounded in time; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis

REPO = Path(__file__).resolve().parents[1]
PHASE_DEADLINE = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def wait_port(port: int, deadline: float) -> None:
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class SimAgent:
    """A bare agent: acks tasks, notes when each arrived, counts acks of its own lines."""

    def __init__(self, agent_id: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.agent_id = agent_id
        self.ws = ws
        self.task_arrivals: dict[str, float] = {}
        self.acked = 0
        self.ack_event = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            if message["type"] == "task":
                self.task_arrivals[message["task_id"]] = time.perf_counter()
                await self.send(
                    {
                        "type": "ack",
                        "message_id": os.urandom(8).hex(),
                        "ack_ids": [message["message_id"]],
                    }
                )
            elif message["type"] == "ack":
                self.acked += len(message["ack_ids"])
                self.ack_event.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message, separators=(",", ":")))

    async def send_lines(self, task_id: str, count: int, window: int) -> None:
        sent = 0
        payload = "x" * 80
        while sent < count:
            while sent - self.acked >= window:
                self.ack_event.clear()
                await self.ack_event.wait()
            burst = min(count - sent, window - (sent - self.acked))
            for _ in range(burst):
                # Pre-shaped JSON: the bench's own encoding must not be what is measured.
                await self.ws.send_str(
                    f'{{"type":"log","message_id":"{task_id}:log:{sent}","task_id":"{task_id}",'
                    f'"seq":{sent},"stream":"stdout","data":"{payload}"}}'
                )
                sent += 1
        while self.acked < count:
            self.ack_event.clear()
            await self.ack_event.wait()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="arp-gw-bench-"))
    redis_port, gateway_port = free_port(), free_port()
    redis_proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    gateway_proc = subprocess.Popen(
        [
            sys.executable,
            *profile,
            "-m",
            "arp.gateway",
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            str(gateway_port),
            "--redis-url",
            f"redis://127.0.0.1:{redis_port}/0",
            "--max-agent-connections",
            str(args.agents + 10),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=folder,  # its logging.file (logs/agent-server.log) lands in the temp folder
        stdout=subprocess.DEVNULL,
    )
    results: dict[str, Any] = {"agents": args.agents}
    agents: list[SimAgent] = []
    try:
        deadline = time.monotonic() + 20
        await wait_port(redis_port, deadline)
        await wait_port(gateway_port, deadline)
        base = f"http://127.0.0.1:{gateway_port}"
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            # Register and connect every agent (bounded concurrency).
            limit = asyncio.Semaphore(50)

            async def join(index: int) -> SimAgent:
                agent_id = f"bench-{index}"
                async with limit:
                    async with http.post(
                        base + "/api/agents/register/", json={"agent_id": agent_id}
                    ) as reply:
                        token = (await reply.json())["token"]
                    ws = await http.ws_connect(
                        f"ws://127.0.0.1:{gateway_port}/ws/agent/{agent_id}",
                        protocols=("agent-token", token),
                        max_msg_size=0,
                    )
                return SimAgent(agent_id, ws)

            started = time.perf_counter()
            agents = await asyncio.wait_for(
                asyncio.gather(*(join(i) for i in range(args.agents))), PHASE_DEADLINE
            )
            results["connect_seconds"] = round(time.perf_counter() - started, 2)

            # 1. Heartbeats, one a second per agent, spread over the second.
            async def beat(agent: SimAgent, stop: float, period: float = 1.0) -> None:
                await asyncio.sleep(random.random() * period)
                while time.monotonic() < stop:
                    await agent.send(
                        {
                            "type": "heartbeat",
                            "message_id": os.urandom(8).hex(),
                            "ts": time.time(),
                            "running": [],
                        }
                    )
                    await asyncio.sleep(period)

            cpu_before, wall_before = cpu_seconds(gateway_proc.pid), time.monotonic()
            stop = wall_before + args.seconds
            await asyncio.gather(*(beat(agent, stop) for agent in agents))
            cpu = cpu_seconds(gateway_proc.pid) - cpu_before
            wall = time.monotonic() - wall_before
            results["heartbeats_per_second"] = args.agents
            results["heartbeat_gateway_cpu_percent_of_core"] = round(100 * cpu / wall, 1)
            # From here on a slower beat, as real agents keep (well inside heartbeat_timeout).
            keepalive = asyncio.gather(
                *(beat(agent, time.monotonic() + 3 * PHASE_DEADLINE, 10.0) for agent in agents)
            )

            # 2. Dispatch latency.
            latencies = []
            for number in range(args.tasks):
                agent = random.choice(agents)
                task_id = f"d{number}"
                body = {"task_id": task_id, "executor": "claude", "prompt": "bench"}
                posted = time.perf_counter()
                async with http.post(
                    f"{base}/api/agents/{agent.agent_id}/tasks/", json=body
                ) as reply:
                    assert reply.status == 202, await reply.text()
                async with asyncio.timeout(10):
                    while task_id not in agent.task_arrivals:
                        await asyncio.sleep(0.0005)
                latencies.append((agent.task_arrivals[task_id] - posted) * 1000)
            latencies.sort()
            results["dispatch_tasks"] = args.tasks
            results["dispatch_p50_ms"] = round(statistics.median(latencies), 2)
            results["dispatch_p99_ms"] = round(latencies[int(0.99 * (len(latencies) - 1))], 2)
            results["dispatch_max_ms"] = round(latencies[-1], 2)

            # 3. Log throughput into Redis. The gateway writes output only for tasks it handed
            # to that agent, so each sender is given its task first.
            senders = agents[: args.log_agents]
            per_agent = args.lines // len(senders)
            for i, agent in enumerate(senders):
                agent.acked = 0
                body = {"task_id": f"L{i}", "executor": "claude", "prompt": "bench"}
                async with http.post(
                    f"{base}/api/agents/{agent.agent_id}/tasks/", json=body
                ) as reply:
                    assert reply.status == 202, await reply.text()
            async with asyncio.timeout(10):
                while not all(f"L{i}" in a.task_arrivals for i, a in enumerate(senders)):
                    await asyncio.sleep(0.001)
            cpu_before = cpu_seconds(gateway_proc.pid)
            redis_before, self_before = cpu_seconds(redis_proc.pid), time.process_time()
            started = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(
                    *(a.send_lines(f"L{i}", per_agent, args.window) for i, a in enumerate(senders))
                ),
                PHASE_DEADLINE,
            )
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(gateway_proc.pid) - cpu_before
            client = redis.Redis(port=redis_port)
            xlen = int(client.xlen("agent_logs"))
            client.close()
            total = per_agent * len(senders)
            results["log_lines"] = total
            results["log_lines_in_stream"] = xlen
            results["log_lines_per_second"] = round(total / elapsed)
            results["log_gateway_cpu_percent_of_core"] = round(100 * cpu / elapsed, 1)
            redis_cpu = cpu_seconds(redis_proc.pid) - redis_before
            results["log_redis_cpu_percent_of_core"] = round(100 * redis_cpu / elapsed, 1)
            bench_cpu = time.process_time() - self_before
            results["log_bench_agents_cpu_percent_of_core"] = round(100 * bench_cpu / elapsed, 1)
            async with http.get(base + "/metrics") as reply:
                metrics = await reply.text()
            for line in metrics.splitlines():
                if line.startswith("arp_gateway_redis_write_seconds_count"):
                    results["redis_batched_writes"] = int(line.split()[-1])
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
    finally:
        for agent in agents:
            agent.reader.cancel()
            with contextlib.suppress(Exception):
                await agent.ws.close()
        for proc in (gateway_proc, redis_proc):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--log-agents", type=int, default=50)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--profile", help="write a cProfile of the gateway process here")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(asyncio.wait_for(bench(args), 6 * PHASE_DEADLINE))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
