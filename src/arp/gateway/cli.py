"""The gateway's command lines: ``agent-server start``, ``python -m arp.gateway [agent]``.

``agent-server start`` is what the Go original's users run (its Dockerfile and systemd unit call
``./agent-server start``): it reads the same ``configs/config.yaml`` (from the working folder,
unless ``--config`` names another file) and the same environment (``AGENT_SERVER_HOST``,
``AGENT_SERVER_PORT``, ``CONTROL_PLANE_*``, ``AUTH_*``, plus ``REDIS_URL``); flags override
both. ``python -m arp.gateway`` starts the same gateway without the subcommand, and
``python -m arp.gateway agent`` runs an agent of it::

    agent-server start [--config configs/config.yaml] [--gateway-port 8080] ...
    python -m arp.gateway --config configs/config.yaml           # the gateway
    python -m arp.gateway agent --gateway-url ws://127.0.0.1:8080 \\
        --agent-id ID --agent-token-file FILE [--binary claude=/path/to/claude]

Both run on `arp.runtime` (uvloop where installed) and stop cleanly on SIGINT/SIGTERM. A bad
configuration exits 2 naming the key; a gateway that cannot start (port taken, Redis URL
unusable) exits 1 saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from arp import __version__, logs, runtime
from arp.agents.sessions import SessionConfig
from arp.argtypes import log_deprecations
from arp.errors import ArpError, ConfigError
from arp.gateway.agent import add_agent_arguments, agent_options_from_args, run_agent
from arp.gateway.config import GatewayConfig, add_gateway_arguments, load_gateway_config
from arp.gateway.server import Gateway

log = logging.getLogger("arp.gateway")

GO_CONFIG_FILE: Final = Path("configs") / "config.yaml"
"""Where the Go agent-server reads its configuration, relative to the working folder."""


def gateway_parser(prog: str = "python -m arp.gateway") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
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


def agent_server_parser() -> argparse.ArgumentParser:
    """``agent-server``: one subcommand, ``start``, as the Go original has."""
    parser = argparse.ArgumentParser(
        prog="agent-server",
        description="The ARP agent gateway, started as the Go agent-server was: "
        "agent-server start.",
    )
    parser.add_argument("--version", action="version", version=f"agent-server (arp) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = commands.add_parser(
        "start",
        help="start the gateway",
        description=f"Start the gateway. Reads {GO_CONFIG_FILE} when it exists (or --config), "
        "then the environment (AGENT_SERVER_HOST, AGENT_SERVER_PORT, CONTROL_PLANE_URL, "
        "CONTROL_PLANE_TOKEN, AUTH_SHARED_SECRET, AUTH_REQUIRE_SIGNATURE, REDIS_URL, ...); "
        "flags override both.",
    )
    add_gateway_arguments(start)
    start.add_argument("--log-level", help="debug, info, warning or error")
    return parser


def add_log_file(path: Path) -> None:
    """Also log to `logging.file` (the original's agent-server.log); a failure only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        log.warning("logging.file %s not used: %s", path, exc)
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


async def serve_gateway(config: GatewayConfig) -> int:
    """Serve until SIGINT/SIGTERM; 1 when the gateway cannot start."""
    stop = asyncio.Event()
    runtime.on_stop_signal(stop.set)
    gateway = Gateway(config)
    try:
        await gateway.start()
    except (OSError, ArpError) as exc:
        log.error("cannot start the gateway: %s", exc)
        return 1
    try:
        print(f"gateway listening on port {gateway.port}", flush=True)
        await stop.wait()
    finally:
        await gateway.close()
    return 0


def _start_gateway(args: argparse.Namespace, name: str) -> int:
    try:
        config = load_gateway_config(args)
        logs.setup(args.log_level or config.logging.level)
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return 2
    if config.logging.file:
        add_log_file(Path(config.logging.file))
    return runtime.run(serve_gateway(config))


def gateway_main(argv: Sequence[str]) -> int:
    return _start_gateway(gateway_parser().parse_args(argv), "gateway")


def agent_main(argv: Sequence[str]) -> int:
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

    async def serve() -> int:
        stop = asyncio.Event()
        runtime.on_stop_signal(stop.set)
        await run_agent(options, SessionConfig(binaries=binaries), stop=stop)
        return 0

    return runtime.run(serve())


def agent_server(argv: Sequence[str] | None = None) -> int:
    """The ``agent-server`` console script."""
    parser = agent_server_parser()
    args = parser.parse_args(argv)  # an unknown command: usage and "invalid choice", exit 2
    if args.command is None:
        parser.error("say what to do: agent-server start")
    if args.gateway_config is None and GO_CONFIG_FILE.is_file():
        args.gateway_config = str(GO_CONFIG_FILE)
    return _start_gateway(args, "agent-server")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m arp.gateway``: the gateway, or ``agent ...`` for an agent of it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["agent"]:
        return agent_main(argv[1:])
    return gateway_main(argv)
