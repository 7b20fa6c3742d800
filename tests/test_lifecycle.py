"""`lifecycle.Service`: one idempotent close, a wait_closed that really waits, the context."""

from __future__ import annotations

import asyncio

import pytest

from arp.lifecycle import Service
from tests.conftest import units


class Probe(Service):
    """Counts its shutdowns; the shutdown waits for `release` so tests can hold it open."""

    def __init__(self) -> None:
        self.started = 0
        self.shutdowns = 0
        self.release = asyncio.Event()
        self.release.set()

    async def start(self) -> None:
        self.started += 1

    async def _shutdown(self) -> None:
        self.shutdowns += 1
        await self.release.wait()


async def test_close_twice_runs_the_shutdown_once() -> None:
    probe = Probe()
    await probe.start()
    assert not probe.closing
    await probe.close()
    await probe.close()
    assert probe.shutdowns == 1 and probe.closing


async def test_concurrent_closers_share_one_shutdown_and_all_wait_for_it() -> None:
    probe = Probe()
    probe.release.clear()
    closers = [asyncio.create_task(probe.close()) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert probe.shutdowns == 1 and not any(closer.done() for closer in closers)
    probe.release.set()
    await asyncio.wait_for(asyncio.gather(*closers), units(1))
    assert probe.shutdowns == 1


async def test_wait_closed_blocks_until_close_ran() -> None:
    probe = Probe()
    await probe.start()
    waiter = asyncio.create_task(probe.wait_closed())
    await asyncio.sleep(units(0.05))
    assert not waiter.done()  # close() never ran: nothing has ended
    probe.release.clear()
    closer = asyncio.create_task(probe.close())
    await asyncio.sleep(units(0.05))
    assert not waiter.done()  # the shutdown is still running
    probe.release.set()
    await asyncio.wait_for(asyncio.gather(waiter, closer), units(1))
    await asyncio.wait_for(probe.wait_closed(), units(1))  # and after it, at once


async def test_a_cancelled_closer_does_not_cut_the_shutdown_short() -> None:
    probe = Probe()
    probe.release.clear()
    closer = asyncio.create_task(probe.close())
    await asyncio.sleep(0)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    probe.release.set()
    await asyncio.wait_for(probe.wait_closed(), units(1))
    assert probe.shutdowns == 1


async def test_a_failed_shutdown_reaches_every_closer_and_still_ends_the_service() -> None:
    class Broken(Service):
        async def start(self) -> None:
            pass

        async def _shutdown(self) -> None:
            raise RuntimeError("could not stop")

    broken = Broken()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="could not stop"):
            await broken.close()
    await asyncio.wait_for(broken.wait_closed(), units(1))


async def test_a_service_that_ends_by_itself_releases_its_waiters() -> None:
    probe = Probe()
    waiter = asyncio.create_task(probe.wait_closed())
    await asyncio.sleep(0)
    probe._set_closed()
    await asyncio.wait_for(waiter, units(1))
    assert probe.shutdowns == 0
    await probe.close()  # still cleans up, once
    assert probe.shutdowns == 1


async def test_context_manager_starts_then_closes_and_waits() -> None:
    async with Probe() as probe:
        assert probe.started == 1 and not probe.closing
    assert probe.shutdowns == 1 and probe.closing
    await asyncio.wait_for(probe.wait_closed(), units(1))
