"""Run the gateway, or an agent of it, on its own.

    python -m arp.gateway --config configs/config.yaml           # the gateway
    python -m arp.gateway agent --gateway-url ws://127.0.0.1:8080 \\
        --agent-id ID --agent-token-file FILE [--binary claude=/path/to/claude]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from arp import logs
from arp.agents.sessions import SessionConfig
from arp.argtypes import log_deprecations
from arp.errors import ConfigError
from arp.gateway.agent import add_agent_arguments, agent_options_from_args, run_agent
from arp.gateway.config import add_gateway_arguments, load_gateway_config
from arp.gateway.server import Gateway


def gateway_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arp.gateway",
        description="The ARP agent gateway: control plane → agents over WebSocket, Redis Streams.",
    )
    add_gateway_arguments(parser)
    parser.add_argument("--log-level", help="debug, info, warning or error")
    return parser


def agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arp.gateway agent", description="Run as an agent of an ARP gateway."
    )
    add_agent_arguments(parser)
    parser.add_argument(
        "--binary",
        action="append",
        default=[],
        metavar="EXECUTOR=PATH",
        help="the CLI binary of an executor (claude, codex, gemini); repeatable",
    )
    parser.add_argument("--log-level", help="debug, info, warning or error")
    return parser


async def until_signalled(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `body(stop)`; SIGINT/SIGTERM set `stop`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await body(stop)


def _run(main: Awaitable[None]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - non-Linux
        pass
    asyncio.run(main)  # type: ignore[arg-type]


def add_log_file(path: Path) -> None:
    """Also log to `logging.file` (the original's agent-server.log); a failure only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("logging.file %s not used: %s", path, exc)
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def gateway_main(argv: list[str]) -> int:
    args = gateway_parser().parse_args(argv)
    try:
        config = load_gateway_config(args)
        logs.setup(args.log_level or config.logging.level)
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"gateway: {exc}\n")
        return 2
    if config.logging.file:
        add_log_file(Path(config.logging.file))

    async def body(stop: asyncio.Event) -> None:
        async with Gateway(config) as gateway:
            print(f"gateway listening on port {gateway.port}", flush=True)
            await stop.wait()

    _run(until_signalled(body))
    return 0


def agent_main(argv: list[str]) -> int:
    args = agent_parser().parse_args(argv)
    try:
        options = agent_options_from_args(args)
        logs.setup(args.log_level)
        log_deprecations(args, logging.getLogger("arp.gateway"))
        binaries: dict[str, str | None] = {}
        for item in args.binary:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--binary {item!r}: use EXECUTOR=PATH")
            binaries[name] = path
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"agent: {exc}\n")
        return 2
    config = SessionConfig(binaries=binaries)
    _run(until_signalled(lambda stop: run_agent(options, config, stop=stop)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        return agent_main(argv[1:])
    return gateway_main(argv)


if __name__ == "__main__":
    sys.exit(main())
