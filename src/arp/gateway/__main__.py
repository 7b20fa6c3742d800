"""`python -m arp.gateway --config configs/config.yaml`: run the agent gateway on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from arp import logs
from arp.errors import ConfigError
from arp.gateway.config import add_gateway_arguments, load_gateway_config
from arp.gateway.server import Gateway


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arp.gateway",
        description="The ARP agent gateway: control plane → agents over WebSocket, Redis Streams.",
    )
    add_gateway_arguments(parser)
    parser.add_argument("--log-level", help="debug, info, warning or error")
    return parser


async def serve(gateway: Gateway) -> None:
    """Run until SIGINT/SIGTERM, then close gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with gateway:
        print(f"gateway listening on port {gateway.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_gateway_config(args)
        logs.setup(args.log_level or config.logging.level)
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"gateway: {exc}\n")
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - non-Linux
        pass
    asyncio.run(serve(Gateway(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
