"""Children started off the event loop: output, exit codes, signals, no zombies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from arp.agents.spawn import spawn
from tests.conftest import units


async def test_output_and_exit_code() -> None:
    child = await spawn(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); exit(3)"],
        cwd=None, env=None, limit=1 << 16,
    )  # fmt: skip
    async with asyncio.timeout(units(10)):
        assert await child.stdout.read() == b"out\n"
        assert await child.stderr.read() == b"err\n"
        assert await child.wait() == 3
    assert child.returncode == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # already reaped: no zombie


async def test_own_process_group_and_signal() -> None:
    child = await spawn(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        cwd=None, env=None, limit=1 << 16,
    )  # fmt: skip
    async with asyncio.timeout(units(10)):
        assert await child.stdout.readline() == b"up\n"
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    os.killpg(child.pid, signal.SIGTERM)
    async with asyncio.timeout(units(10)):
        assert await child.wait() == -signal.SIGTERM


async def test_missing_program_raises() -> None:
    with pytest.raises(FileNotFoundError):
        await spawn(["/nonexistent/agent-cli"], cwd=None, env=None, limit=1 << 16)


async def test_many_children_at_once() -> None:
    """Spawns run in worker threads; many at once all start, exit and are reaped."""
    children = await asyncio.gather(
        *(
            spawn([sys.executable, "-c", "pass"], cwd=None, env=None, limit=1 << 16)
            for _ in range(20)
        )
    )
    async with asyncio.timeout(units(20)):
        assert [await child.wait() for child in children] == [0] * 20
    for child in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)


async def test_finished_children_leave_no_open_fds() -> None:
    """Each pipe is closed once its child is done (the reader owns a duplicate of it)."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for _ in range(30):
        child = await spawn([sys.executable, "-c", "print('x')"], cwd=None, env=None, limit=1 << 16)
        async with asyncio.timeout(units(10)):
            assert await child.stdout.read() == b"x\n"
            assert await child.stderr.read() == b""
            assert await child.wait() == 0
    await asyncio.sleep(units(0.1))  # transports close on the loop's next turns
    assert open_fds() <= before + 2  # not 60 pipes (or 60 duplicates) more
