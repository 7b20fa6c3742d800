"""Why sessions start children off the loop: the longest event-loop stall while 100 children
start, in a process holding 200 MB (as arpc does with many sessions' output in memory), with
uvloop's own spawn (a fork in the loop thread) and with arp.agents.spawn (Popen in a thread).

Run: .venv/bin/python bench/spawn_bench.py
"""

import asyncio
import time

import uvloop

from arp.agents.spawn import spawn

BALLAST = [bytearray(b"x") * (1 << 20) for _ in range(200)]  # 200 MB, touched


async def measure(name, start_one):
    stalls = []
    stop = False

    async def ticker():
        last = time.monotonic()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            stalls.append(now - last)
            last = now

    t = asyncio.create_task(ticker())
    t0 = time.monotonic()
    procs = await asyncio.gather(*(start_one() for _ in range(100)))
    elapsed = time.monotonic() - t0
    for p in procs:
        await p.wait()
    stop = True
    await t
    stalls.sort()
    worst, p99 = stalls[-1] * 1000, stalls[int(len(stalls) * 0.99)] * 1000
    total = elapsed * 1000
    print(f"{name}: 100 spawns in {total:.0f} ms; loop stall max {worst:.1f} ms, p99 {p99:.1f} ms")


async def main():
    argv = ["/bin/true"]
    await measure(
        "uvloop create_subprocess_exec",
        lambda: asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        ),
    )
    await measure("spawn (Popen in thread)", lambda: spawn(argv, cwd=None, env=None, limit=1 << 16))


uvloop.run(main())
