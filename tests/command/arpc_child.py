"""A command server in a process of its own, for the tests that kill arpc mid-run.

``python -m tests.command.arpc_child TMP_PATH [--keep-runs-on-stop] [--approval-timeout S]
[--config-json FILE]`` serves the sessions API over the fake CLIs with `fake_config(TMP_PATH)`
(so two of them in turn share one data dir), prints its URL, and on SIGTERM closes as arpc does.
``--config-json`` names a JSON object of further `CommandConfig` fields (the real-CLI tier gives
the real binaries and the agents' environment: ``session_overrides.extra_env``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tmp_path", type=Path)
    parser.add_argument("--keep-runs-on-stop", action="store_true")
    parser.add_argument("--approval-timeout", type=float, default=900.0)
    parser.add_argument("--config-json", type=Path)
    args = parser.parse_args()
    more = json.loads(args.config_json.read_text()) if args.config_json else {}
    overrides: dict[str, object] = {"approval_timeout": args.approval_timeout}
    if args.keep_runs_on_stop:  # named only when asked: an arpc without the option still runs
        overrides["keep_runs_on_stop"] = True
    overrides.update(more.pop("session_overrides", {}))
    config = fake_config(args.tmp_path, session_overrides=overrides, **more)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with CommandServer(config) as server:
        print(server.url, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
