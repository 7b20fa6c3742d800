"""How the programs run: on uvloop where it is installed, stopping cleanly on SIGINT/SIGTERM.

A process that will speak no TLS (plain `arps`, forward-mode `arpc` without --tls) can leave
OpenSSL out: asyncio imports ssl as it loads, and ssl with libssl and libcrypto is about
4.5 MiB of a 25 MiB process. `forgo_tls`, called before asyncio is imported, makes ``import
ssl`` fail the way it does on a Python built without it, a case asyncio handles. uvloop needs
ssl, so such a process runs on asyncio's own loop, made by the caller's `plain_loop`
(`arp.net.selector.new_event_loop`: the loop's selector is the data path's epoll, which
under uvloop is nested in the loop's; docs/performance.md).
This module imports asyncio only inside its functions, so the programs can import it first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


def forgo_tls() -> bool:
    """Keep ssl (OpenSSL) out of this process for good; only before asyncio is imported.
    Returns whether it took effect."""
    if "ssl" in sys.modules or "asyncio" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]  # how importlib spells "absent"
    return True


def tls_forgone() -> bool:
    """Whether `forgo_tls` took effect in this process."""
    return "ssl" in sys.modules and sys.modules["ssl"] is None


def run(
    main: Coroutine[Any, Any, int],
    plain_loop: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run `main` to completion on the fastest loop available; returns its exit code.
    `plain_loop` makes the loop where uvloop cannot run (a process without TLS: uvloop needs
    ssl; a platform without uvloop), `arp.net.selector.new_event_loop` for the data path."""
    import asyncio

    if not tls_forgone():
        try:
            import uvloop
        except ImportError:  # pragma: no cover - platforms without uvloop
            pass
        else:
            return uvloop.run(main)
    with asyncio.Runner(loop_factory=plain_loop) as runner:
        return runner.run(main)


def on_stop_signal(callback: Callable[[], object]) -> None:
    """Call `callback` on SIGINT or SIGTERM (once each), from the running loop."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))


def settle_heap() -> None:
    """Once a server is up: collect what starting left behind, then leave every object alive
    now out of the cyclic collector's passes for good (`gc.freeze`).

    Why: the modules, classes and functions loaded at start-up are most of a process's
    objects, and without this every full collection walks all of them again; relayed
    connections allocate enough container objects that full collections keep coming. Frozen
    objects are still freed by reference counting; only a cycle among them would outlive its
    last reference.
    """
    import gc

    gc.collect()
    gc.freeze()
