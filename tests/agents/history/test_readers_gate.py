"""Every face shares one bound on concurrent history work: HistoryReaders.run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.conftest import units

from arp.agents.history import HistoryReaders
from arp.config import HistoryLimits


async def test_run_bounds_concurrent_calls_across_callers(tmp_path: Path) -> None:
    readers = HistoryReaders(
        claude_dir=tmp_path / "claude", limits=HistoryLimits(max_concurrency=2)
    )
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()

    def work() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(units(10))
        with lock:
            running -= 1
        return 7

    calls = [asyncio.ensure_future(readers.run(work)) for _ in range(6)]
    await asyncio.sleep(units(0.2))
    assert running == 2  # the other four wait their turn
    release.set()
    async with asyncio.timeout(units(10)):
        assert await asyncio.gather(*calls) == [7] * 6
    assert peak == 2
