"""Stopping what is left of an agent: its process group, and one an earlier arpc left behind.

`kill_group` signals a run's whole process group (each child runs in a session of its own,
`arp.agents.spawn`), so grandchildren go with it. An arpc that died without stopping its agents
recorded each running child's identity (`child_identity`: pid, start time in clock ticks since
boot, and the boot id, read from Linux /proc); at the next start `stop_leftover` kills that
group only when all three still match, so a reused pid is never mistaken for it. Anything less
certain (no /proc, another boot, another start time) is left alone rather than risk signalling
a stranger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

log = logging.getLogger(__name__)


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Sends ``sig`` to the process group; one that is gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), so a reused pid is never mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


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
