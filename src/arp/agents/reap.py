"""Waiting for an agent and stopping it: the signal ladder, its process group, and leftovers.

`signal_ladder` stops a run (SIGINT, SIGTERM, SIGKILL, each after its grace) through anything
`Stoppable`: a run's supervisor (`arp.agents.reattach.SupervisedRun`), whose ``pid`` is its
agent's.

`kill_group` signals a run's whole process group (each agent runs in a process group of its
own, `arp.agents.supervisor`), so grandchildren go with it. An arpc from before supervised runs
that died without stopping its agents recorded each running child's identity
(`child_identity`: pid, start time in clock ticks since boot, and the boot id, read from Linux
/proc); at the next start `stop_leftover` kills that group only when all three still match, so a
reused pid is never mistaken for it. Anything less certain (no /proc, another boot, another
start time) is left alone rather than risk signalling a stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from arp.agents.supervisor import boot_id, start_ticks

log = logging.getLogger(__name__)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Sends ``sig`` to the process group; one that is gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def child_identity(pid: int) -> dict[str, Any]:
    """What is recorded of a running child, for `stop_leftover` after a crash."""
    return {"pid": pid, "start": start_ticks(pid), "boot": boot_id()}


def stop_leftover(child: dict[str, Any] | None, session_id: str) -> None:
    """Kills the process group of ``child`` (a recorded `child_identity`) if it is still there."""
    if not child or child.get("start") is None or child.get("boot") is None:
        return
    pid = child.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return
    if boot_id() != child["boot"] or start_ticks(pid) != child["start"]:
        return
    log.warning("session %s: stopping its agent (pid %d) left by an earlier arpc", session_id, pid)
    kill_group(pid, signal.SIGKILL)


async def wait_at_most(awaitable: Awaitable[Any], timeout: float) -> None:
    """Waits for ``awaitable`` (shielded: it goes on after a timeout) up to ``timeout`` seconds.

    asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands in the turn the
    awaited thing finishes, and the caller (a request whose client left) would carry on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.shield(awaitable)


class Stoppable(Protocol):
    """What the signal ladder needs of a run: its process group and its end."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


async def signal_ladder(process: Stoppable, steps: Sequence[tuple[signal.Signals, float]]) -> None:
    """Each signal in turn to the process group, until the child exits or its grace is over."""
    for sig, grace in steps:
        if process.returncode is not None:
            return
        kill_group(process.pid, sig)
        await wait_at_most(process.wait(), grace)
