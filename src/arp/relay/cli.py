"""`arps`: the relay's command line. Flags override environment, which overrides defaults."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import sys
from collections.abc import Sequence

from arp import __version__, logs
from arp.argtypes import (
    DeprecatedAlias,
    HelpFormatter,
    add_relay_ports,
    check_file,
    env_default,
    log_deprecations,
    port,
    port_range,
    positive_float,
)
from arp.config import (
    DEFAULT_POOL_SIZE,
    DEFAULT_PUBLIC_PORT,
    Limits,
    Timeouts,
)
from arp.errors import ArpError
from arp.gateway.config import (
    GatewayConfig,
    RedisConfig,
    add_gateway_arguments,
    load_gateway_config,
)
from arp.protocol.forwarded import parse_networks
from arp.relay.lease import DEFAULT_PREFIX
from arp.relay.settings import DEFAULT_PEER_PORT, AdminSettings, ClusterSettings, RelayConfig
from arp.runtime import forgo_tls, on_stop_signal, run, settle_heap

log = logging.getLogger("arps")

EXIT_CANNOT_START = 2
"""A bad value, a missing file, a port that is taken: the exit code argparse uses for bad flags."""


def build_parser() -> argparse.ArgumentParser:
    defaults = Timeouts()
    parser = argparse.ArgumentParser(
        prog="arps",
        formatter_class=HelpFormatter,
        description="ARP relay: exposes clients behind NAT on a public port, routed by token.",
    )
    parser.add_argument("--version", action="version", version=f"arps {__version__}")
    parser.add_argument(
        "--bind",
        default=env_default("ARPS_BIND", default="0.0.0.0"),
        help="address every listener binds (env ARPS_BIND; default 0.0.0.0)",
    )
    add_relay_ports(parser, control="client registration port", proxy="tunnel connection port")
    parser.add_argument(
        "--public-port",
        type=port,
        default=env_default("PUBLIC_PORT", default=DEFAULT_PUBLIC_PORT),
        help="public HTTP/WebSocket port (env PUBLIC_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=env_default("POOL_SIZE", default=DEFAULT_POOL_SIZE),
        help=f"pre-warmed tunnels per client, 0..{Limits().max_pool_size} "
        "(env POOL_SIZE; default %(default)s)",
    )
    parser.add_argument(
        "--max-tunnels-per-client",
        type=int,
        default=Limits().max_client_tunnels,
        help="tunnels one client may have (pooled, asked for, carrying), the bound arpc is "
        "told to keep; beyond it callers get 503 with Retry-After (default %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=Limits().max_connections_per_ip,
        help="public connections one caller address may hold at once (IPv6: per /64; a "
        "--trusted-proxy peer is not counted); beyond, 503 and a close (default %(default)s)",
    )
    parser.add_argument(
        "--max-tcp-ports-per-client",
        type=int,
        default=Limits().max_tcp_ports_per_client,
        help="dedicated public TCP ports one client may hold (default %(default)s)",
    )
    parser.add_argument(
        "--domain",
        default=env_default("ARPS_DOMAIN"),
        help="base domain for <client_id>.<domain> routing (env ARPS_DOMAIN; default none)",
    )
    parser.add_argument(
        "--auth-token",
        default=env_default("ARPS_AUTH_TOKEN"),
        help="shared secret every client must present (env ARPS_AUTH_TOKEN; default none)",
    )
    parser.add_argument(
        "--tcp-ports",
        type=port_range,
        default=env_default("ARPS_TCP_PORTS"),
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
    parser.add_argument(
        "--tls-cert", help="PEM certificate: TLS on the control and proxy ports (default: off)"
    )
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert (default: none)")
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
    parser.add_argument(
        "--log-level", help="debug, info, warning or error (env ARP_LOG; default info)"
    )
    parser.add_argument(
        "--admin-port",
        type=port,
        default=None,
        help="serve a dashboard, /api/clients and Prometheus /metrics on this port (default: off)",
    )
    parser.add_argument(
        "--admin-bind",
        default="127.0.0.1",
        help="address the admin port binds; off loopback it needs --admin-token "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--admin-token",
        default=env_default("ARPS_ADMIN_TOKEN"),
        help="secret the admin port wants as 'Authorization: Bearer' or ?token= "
        "(env ARPS_ADMIN_TOKEN; default none)",
    )
    parser.add_argument(
        "--with-gateway",
        dest="with_gateway",
        action="store_true",
        help="also run the agent gateway on its own HTTP port (docs/gateway.md); "
        "implied by --config (default: off)",
    )
    parser.add_argument(
        "--gateway",
        dest="with_gateway",
        action=DeprecatedAlias,
        nargs=0,
        const=True,
        new="--with-gateway",
    )
    cluster = parser.add_argument_group(
        "cluster (several relay nodes on one Redis; docs/cluster.md)"
    )
    cluster.add_argument(
        "--cluster",
        action="store_true",
        default=env_default("ARPS_CLUSTER", default=False),
        help="run as one node of a cluster sharing the Redis of --redis-url (env ARPS_CLUSTER; "
        "default: off, the relay keeps nothing in Redis)",
    )
    cluster.add_argument(
        "--node-id",
        default=env_default("ARPS_NODE_ID"),
        help="this node's name in the cluster (env ARPS_NODE_ID; default: host name and "
        "control port)",
    )
    cluster.add_argument(
        "--peer-port",
        type=port,
        default=env_default("ARPS_PEER_PORT", default=DEFAULT_PEER_PORT),
        help="port other nodes reach this one on (env ARPS_PEER_PORT; default %(default)s)",
    )
    cluster.add_argument(
        "--advertise-addr",
        default=env_default("ARPS_ADVERTISE_ADDR"),
        metavar="HOST:PORT",
        help="address other nodes dial for the peer port (env ARPS_ADVERTISE_ADDR; default: "
        "--bind, or the host name, and --peer-port)",
    )
    cluster.add_argument(
        "--cluster-secret",
        default=env_default("ARPS_CLUSTER_SECRET"),
        help="secret the nodes prove themselves with, at least 16 characters; required with "
        "--cluster (env ARPS_CLUSTER_SECRET)",
    )
    cluster.add_argument(
        "--cluster-prefix",
        default=env_default("ARPS_CLUSTER_PREFIX", default=DEFAULT_PREFIX),
        help="prefix of the cluster's Redis keys (env ARPS_CLUSTER_PREFIX; default %(default)s)",
    )
    add_gateway_arguments(parser)
    return parser


def cluster_from_args(args: argparse.Namespace, control_port: int) -> ClusterSettings | None:
    """The node's cluster settings, or None without --cluster (ValueError for bad values)."""
    if not args.cluster or str(args.cluster).lower() in ("0", "false", "no", "off"):
        return None
    redis_url = (
        getattr(args, "gateway__redis__url", None)
        or os.environ.get("REDIS_URL")
        or RedisConfig().url
    )
    if args.advertise_addr:
        host, sep, port_text = str(args.advertise_addr).rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"--advertise-addr {args.advertise_addr!r} is not HOST:PORT")
    return ClusterSettings(
        redis_url=redis_url,
        node_id=args.node_id or f"{socket.gethostname()}:{control_port}",
        secret=args.cluster_secret or "",
        peer_port=int(args.peer_port),
        advertise=args.advertise_addr or None,
        prefix=args.cluster_prefix or DEFAULT_PREFIX,
    )


def check_tls(cert: str | None, key: str | None) -> None:
    """Both files or neither, each there, and together a certificate and its key."""
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return
    check_file("--tls-cert", cert)
    check_file("--tls-key", key)
    import ssl  # only with --tls-cert: a relay without TLS does without OpenSSL (arp.runtime)

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its key ({exc})"
        ) from None


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    limits = Limits()
    if not 0 <= args.pool_size <= limits.max_pool_size:
        raise ValueError(f"--pool-size {args.pool_size} is outside 0..{limits.max_pool_size}")
    check_tls(args.tls_cert, args.tls_key)
    for flag in ("max_tunnels_per_client", "max_connections_per_ip"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_tcp_ports_per_client < 0:
        raise ValueError("--max-tcp-ports-per-client must be at least 0")
    limits = dataclasses.replace(
        limits,
        max_client_tunnels=args.max_tunnels_per_client,
        max_connections_per_ip=args.max_connections_per_ip,
        max_tcp_ports_per_client=args.max_tcp_ports_per_client,
    )
    tcp_ports = args.tcp_ports
    if isinstance(tcp_ports, str):  # came from the environment, unparsed
        tcp_ports = port_range(tcp_ports)
    timeouts = Timeouts(
        tunnel_wait=args.tunnel_wait,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        retention=args.retention,
    )
    trusted = args.trusted_proxy or [env_default("ARPS_TRUSTED_PROXIES", default="")]
    return RelayConfig(
        cluster=cluster_from_args(args, args.control_port),
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
        limits=limits,
    )


def admin_from_args(args: argparse.Namespace) -> AdminSettings | None:
    """The admin port's settings, or None without --admin-port (ValueError off loopback
    without a token)."""
    if args.admin_port is None:
        return None
    return AdminSettings(port=args.admin_port, bind=args.admin_bind, token=args.admin_token)


async def serve(
    config: RelayConfig,
    gateway_config: GatewayConfig | None,
    admin_settings: AdminSettings | None = None,
) -> int:
    import asyncio

    from arp.relay.server import Relay

    try:
        relay = Relay(config)
        await relay.start()
    except (OSError, ValueError, ArpError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    admin = None
    if admin_settings is not None:
        # Imported here: without --admin-port the relay never loads prometheus_client.
        from arp.relay.admin import AdminServer

        admin = AdminServer(relay, admin_settings)
        try:
            await admin.start()
        except OSError as exc:
            log.error("cannot start: --admin-port %d: %s", admin_settings.port, exc)
            await relay.close()
            return EXIT_CANNOT_START
    gateway = None
    if gateway_config is not None:
        # Imported here: the plain relay does without aiohttp and redis (idle RSS).
        from arp.gateway.server import Gateway

        gateway = Gateway(gateway_config, node_id=relay.node_id)
        try:
            await gateway.start()
        except (OSError, ArpError) as exc:
            log.error("cannot start the gateway: %s", exc)
            if admin is not None:
                await admin.close()
            await relay.close()
            return EXIT_CANNOT_START

    async def stop() -> None:
        if gateway is not None:
            await gateway.close()
        if admin is not None:
            await admin.close()
        await relay.close()

    on_stop_signal(lambda: asyncio.ensure_future(stop()))
    print(
        f"arps listening: control {config.bind}:{relay.control_port}, "
        f"proxy {config.bind}:{relay.proxy_port}, public {config.bind}:{relay.public_port}",
        flush=True,
    )
    if gateway is not None:
        print(f"gateway listening on port {gateway.port}", flush=True)
    if admin is not None:
        print(f"admin port: http://{admin.bind}:{admin.port}/ (dashboard, /metrics)", flush=True)
    settle_heap()
    await relay.wait_closed()
    log.info("arps stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        admin_settings = admin_from_args(args)
        gateway_config = None
        if args.with_gateway or args.gateway_config:
            gateway_config = load_gateway_config(args)
        logs.setup(args.log_level)
        log_deprecations(args, log)
    except (ValueError, argparse.ArgumentTypeError, ArpError) as exc:
        parser.error(str(exc))
    if not speaks_tls(config, gateway_config, admin_settings):
        forgo_tls()
    from arp.net.selector import new_event_loop  # after forgo_tls: it loads asyncio

    return run(serve(config, gateway_config, admin_settings), plain_loop=new_event_loop)


def speaks_tls(
    config: RelayConfig, gateway: GatewayConfig | None, admin: AdminSettings | None
) -> bool:
    """Whether this relay may need the ssl module: TLS on its ports, a cluster (its peer links
    and Redis may be TLS), the gateway (aiohttp, Redis) or the admin port (prometheus_client
    imports ssl). A relay without any of them leaves OpenSSL out (`arp.runtime.forgo_tls`)."""
    return bool(config.tls_cert or config.cluster is not None or gateway or admin)


if __name__ == "__main__":
    sys.exit(main())
