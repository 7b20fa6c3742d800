"""`arps`: the relay's command line. Flags override environment, which overrides defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from arp import __version__, logs
from arp.argtypes import port, port_range, positive_float
from arp.config import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_POOL_SIZE,
    DEFAULT_PROXY_PORT,
    DEFAULT_PUBLIC_PORT,
    Timeouts,
    env_int,
)
from arp.errors import ArpError
from arp.gateway.config import GatewayConfig, add_gateway_arguments, load_gateway_config
from arp.protocol.forwarded import parse_networks
from arp.relay.server import Relay, RelayConfig
from arp.runtime import on_stop_signal, run

log = logging.getLogger("arps")


def build_parser() -> argparse.ArgumentParser:
    defaults = Timeouts()
    parser = argparse.ArgumentParser(
        prog="arps",
        description="ARP relay: exposes clients behind NAT on a public port, routed by token.",
    )
    parser.add_argument("--version", action="version", version=f"arps {__version__}")
    parser.add_argument(
        "--bind",
        default=os.environ.get("ARPS_BIND", "0.0.0.0"),
        help="address every listener binds (env ARPS_BIND; default 0.0.0.0)",
    )
    parser.add_argument(
        "--control-port",
        type=port,
        default=env_int("CONTROL_PORT", DEFAULT_CONTROL_PORT),
        help="client registration port (env CONTROL_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--proxy-port",
        type=port,
        default=env_int("PROXY_PORT", DEFAULT_PROXY_PORT),
        help="tunnel connection port (env PROXY_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--public-port",
        type=port,
        default=env_int("PUBLIC_PORT", DEFAULT_PUBLIC_PORT),
        help="public HTTP/WebSocket port (env PUBLIC_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=env_int("POOL_SIZE", DEFAULT_POOL_SIZE),
        help="pre-warmed tunnels per client (env POOL_SIZE; default %(default)s)",
    )
    parser.add_argument(
        "--domain",
        default=os.environ.get("ARPS_DOMAIN"),
        help="base domain for <client_id>.<domain> routing (env ARPS_DOMAIN)",
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("ARPS_AUTH_TOKEN"),
        help="shared secret every client must present (env ARPS_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--tcp-ports",
        type=port_range,
        default=os.environ.get("ARPS_TCP_PORTS"),
        help="range of dedicated public TCP ports clients may ask for, "
        "e.g. 20000-20999 (env ARPS_TCP_PORTS; default none)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a front proxy (address or CIDR) whose X-Forwarded-* headers are kept and appended "
        "to; repeatable (env ARPS_TRUSTED_PROXIES, comma-separated; default none)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate: TLS on the control and proxy ports")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--tunnel-wait",
        type=positive_float,
        default=defaults.tunnel_wait,
        help="seconds a request waits for a fresh tunnel before 504 (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_float,
        default=defaults.heartbeat_interval,
        help="seconds between heartbeats on control links (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=positive_float,
        default=defaults.heartbeat_timeout,
        help="a control link silent this long is dead (default %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=positive_float,
        default=defaults.retention,
        help="seconds a disconnected client's id and TCP ports are kept (default %(default)s)",
    )
    parser.add_argument("--log-level", help="debug, info, warning or error (env ARP_LOG)")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="also run the agent gateway on its own HTTP port (docs/gateway.md); "
        "implied by --config",
    )
    add_gateway_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    tcp_ports = args.tcp_ports
    if isinstance(tcp_ports, str):  # came from the environment, unparsed
        tcp_ports = port_range(tcp_ports)
    timeouts = Timeouts(
        tunnel_wait=args.tunnel_wait,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        retention=args.retention,
    )
    trusted = args.trusted_proxy or [os.environ.get("ARPS_TRUSTED_PROXIES", "")]
    return RelayConfig(
        trusted_proxies=parse_networks(trusted),
        bind=args.bind,
        control_port=args.control_port,
        proxy_port=args.proxy_port,
        public_port=args.public_port,
        pool_size=args.pool_size,
        domain=args.domain,
        auth_token=args.auth_token or None,
        tcp_ports=tcp_ports,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        timeouts=timeouts,
    )


async def serve(config: RelayConfig, gateway_config: GatewayConfig | None) -> int:
    try:
        relay = Relay(config)
        await relay.start()
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    gateway = None
    if gateway_config is not None:
        # Imported here: the plain relay does without aiohttp and redis (idle RSS).
        from arp.gateway.server import Gateway

        gateway = Gateway(gateway_config)
        try:
            await gateway.start()
        except (OSError, ArpError) as exc:
            log.error("cannot start the gateway: %s", exc)
            await relay.close()
            return 1

    async def stop() -> None:
        if gateway is not None:
            await gateway.close()
        await relay.close()

    on_stop_signal(lambda: asyncio.ensure_future(stop()))
    print(
        f"arps listening: control {config.bind}:{relay.control_port}, "
        f"proxy {config.bind}:{relay.proxy_port}, public {config.bind}:{relay.public_port}",
        flush=True,
    )
    if gateway is not None:
        print(f"gateway listening on port {gateway.port}", flush=True)
    await relay.wait_closed()
    log.info("arps stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        gateway_config = None
        if args.gateway or args.gateway_config:
            gateway_config = load_gateway_config(args)
        logs.setup(args.log_level)
    except (ValueError, argparse.ArgumentTypeError, ArpError) as exc:
        parser.error(str(exc))
    return run(serve(config, gateway_config))


if __name__ == "__main__":
    sys.exit(main())
