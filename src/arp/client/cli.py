"""`arpc`: the client's command line. Flags override environment, which overrides defaults."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from arp import __version__, logs
from arp.argtypes import (
    HelpFormatter,
    add_relay_ports,
    check_file,
    env_default,
    log_deprecations,
    port,
    positive_float,
)
from arp.client.config import ClientConfig, Target, parse_relays
from arp.client.identity import (
    check_access_token,
    load_access_token,
    load_or_create_client_id,
    save_new_access_token,
)
from arp.command.config import CommandConfig, add_command_arguments
from arp.command.mcp import add_mcp_arguments
from arp.command.notify_config import add_notify_arguments
from arp.command.remote_config import add_remote_arguments
from arp.config import SESSION_BOUNDS, Timeouts
from arp.errors import ArpError
from arp.gateway.agent_flags import add_agent_arguments
from arp.protocol import frames
from arp.runtime import forgo_tls, on_stop_signal, run, settle_heap

if TYPE_CHECKING:
    import ssl

    from arp.client.control import Client
    from arp.command.notify import Notifier
    from arp.command.server import CommandServer

# Command mode's server, MCP, the remote protocol and the gateway agent's loop are imported
# where they start: forward mode does without them (and aiohttp; idle RSS, issue 18).

log = logging.getLogger("arpc")
T = TypeVar("T")

EXIT_REFUSED = 2
"""A refusal, a bad value or a combination of flags, a port that is taken: as argparse exits."""


class CannotStart(Exception):
    """A listener arpc was asked for cannot be opened; said in one line, exit 2."""


async def _listen(
    stack: contextlib.AsyncExitStack, service: contextlib.AbstractAsyncContextManager[T], flag: str
) -> T:
    """Enters a service that listens on a port, naming the flag when the port is taken."""
    try:
        return await stack.enter_async_context(service)
    except OSError as exc:
        raise CannotStart(f"{flag}: cannot listen: {exc.strerror or exc}") from None


def remote_port(text: str) -> tuple[int, int | None]:
    """`25432` (exposes --local-port) or `25432:5432` (exposes local port 5432)."""
    remote, sep, local = text.partition(":")
    try:
        pair = (int(remote), int(local) if sep else None)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not REMOTE or REMOTE:LOCAL (e.g. 25432 or 25432:5432)"
        ) from None
    if not all(1 <= p <= 65535 for p in pair if p is not None):
        raise argparse.ArgumentTypeError(f"{text!r}: ports must be 1..65535")
    return pair


def build_parser() -> argparse.ArgumentParser:
    defaults = Timeouts()
    parser = argparse.ArgumentParser(
        prog="arpc",
        formatter_class=HelpFormatter,
        description="ARP client: connects out to an arps relay and exposes a local service "
        "(forward mode) or the built-in agent API (--command-mode).",
    )
    parser.add_argument("--version", action="version", version=f"arpc {__version__}")
    parser.add_argument(
        "--server-addr",
        default=env_default("ARPC_SERVER_ADDR", default="127.0.0.1"),
        help="relay host, or several relays (cluster nodes) as HOST[:CONTROL_PORT[:PROXY_PORT]] "
        "separated by commas, tried in turn (env ARPC_SERVER_ADDR; default %(default)s)",
    )
    add_relay_ports(parser, control="relay control port", proxy="relay proxy port")
    parser.add_argument(
        "--local-addr", default="127.0.0.1", help="local service host (default %(default)s)"
    )
    parser.add_argument(
        "--local-port",
        type=port,
        help="local service port (forward mode; required there, no default)",
    )
    parser.add_argument(
        "--client-id",
        default=env_default("ARPC_CLIENT_ID"),
        help="this client's id, also its token (env ARPC_CLIENT_ID; default: "
        "a stable id derived from this machine, kept in the config folder)",
    )
    parser.add_argument(
        "--remote-port",
        type=remote_port,
        action="append",
        default=[],
        metavar="REMOTE[:LOCAL]",
        help="ask the relay for dedicated public TCP port REMOTE, forwarded to "
        "LOCAL (default --local-port); repeatable",
    )
    parser.add_argument(
        "--auth-token",
        default=env_default("ARPC_AUTH_TOKEN", "ARPS_AUTH_TOKEN"),
        help="the relay's shared secret (env ARPC_AUTH_TOKEN or ARPS_AUTH_TOKEN; default none)",
    )
    parser.add_argument(
        "--access-token",
        action="append",
        default=None,
        metavar="SECRET",
        help="a token that opens this client on the relay, one per person (repeatable; env "
        "ARPC_ACCESS_TOKENS, comma-separated); when any is set the client_id opens nothing, and "
        "command mode and MCP accept these instead (default none: the client_id)",
    )
    parser.add_argument(
        "--generate-access-token",
        action="store_true",
        help="make a new random access token, save it (0600, replacing the last one) for this "
        "and every later start, and print it",
    )
    parser.add_argument(
        "--tls", action="store_true", help="use TLS on the control and proxy links (default: off)"
    )
    parser.add_argument(
        "--tls-ca",
        help="PEM CA bundle to verify the relay (implies --tls; default: the system's CAs)",
    )
    parser.add_argument(
        "--no-forwarded-headers",
        dest="forwarded_headers",
        action="store_false",
        help="ask the relay not to add X-Forwarded-For/-Proto/-Host and X-Real-IP to requests "
        "for this client's service (default: added, and forged ones removed)",
    )
    parser.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="ask the relay to start every connection to this client's --remote-port ports "
        "with a PROXY protocol v2 header carrying the real peer (default off)",
    )
    parser.add_argument(
        "--tls-server-name",
        help="name to verify in the relay's certificate (default --server-addr)",
    )
    parser.add_argument(
        "--public-host", help="host name shown in the public URL (default --server-addr)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_float,
        default=defaults.heartbeat_interval,
        help="seconds between heartbeats (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=positive_float,
        default=defaults.heartbeat_timeout,
        help="a silent relay is presumed gone after this (default %(default)s)",
    )
    parser.add_argument(
        "--max-backoff",
        type=positive_float,
        default=defaults.backoff_max,
        help="longest wait between reconnect attempts (default %(default)s)",
    )
    parser.add_argument(
        "--log-level", help="debug, info, warning or error (env ARP_LOG; default info)"
    )
    parser.add_argument(
        "--command-mode",
        action="store_true",
        help="serve the built-in agent API and web console instead of forwarding to "
        "--local-port (default: off, forward mode)",
    )
    add_command_arguments(parser)
    parser.add_argument(
        "--approval-timeout",
        type=positive_float,
        default=SESSION_BOUNDS.approval_timeout,
        metavar="SECONDS",
        help="ask mode: an approval no person decided is denied after this many seconds "
        "(reason 'timed out'; default %(default)s)",
    )
    parser.add_argument(
        "--keep-runs-on-stop",
        action="store_true",
        help="on SIGTERM/Ctrl-C leave running agents running (each has its own supervisor) "
        "for the next arpc on the same --data-dir to take over, as an upgrade wants "
        "(default: off, stopping arpc cancels its runs)",
    )
    add_notify_arguments(parser)
    add_mcp_arguments(parser)
    add_remote_arguments(parser)
    add_agent_arguments(parser)
    return parser


def _sessions(args: argparse.Namespace) -> dict[str, object]:
    """The session manager's settings whose flags arpc adds besides command mode's own."""
    return {"approval_timeout": args.approval_timeout, "keep_runs_on_stop": args.keep_runs_on_stop}


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.tls_ca):
        return None
    import ssl  # only with TLS: forward mode without it does without OpenSSL (arp.runtime)

    if args.tls_ca is not None:
        check_file("--tls-ca", args.tls_ca)
        try:
            return ssl.create_default_context(cafile=args.tls_ca)
        except ssl.SSLError as exc:
            raise ValueError(f"--tls-ca {args.tls_ca}: not a PEM CA bundle ({exc})") from None
    return ssl.create_default_context()


def config_from_args(args: argparse.Namespace, http_target: Target, client_id: str) -> ClientConfig:
    tcp_targets: dict[int, Target] = {}
    for remote, local in args.remote_port:
        if local is None:
            if args.local_port is None:
                raise ValueError(f"--remote-port {remote} needs --local-port (or REMOTE:LOCAL)")
            local = args.local_port
        tcp_targets[remote] = Target(args.local_addr, local)
    timeouts = Timeouts(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        backoff_max=args.max_backoff,
    )
    relays = parse_relays(args.server_addr, args.control_port, args.proxy_port)
    return ClientConfig(
        client_id=client_id,
        http_target=http_target,
        server_addr=relays[0].host,
        control_port=relays[0].control_port,
        proxy_port=relays[0].proxy_port,
        relays=relays if len(relays) > 1 else (),
        tcp_targets=tcp_targets,
        auth_token=args.auth_token or None,
        access_tokens=access_tokens(args),
        tls=tls_context(args),
        tls_server_name=args.tls_server_name,
        forwarded_headers=args.forwarded_headers,
        proxy_protocol=args.proxy_protocol,
        timeouts=timeouts,
    )


def access_tokens(args: argparse.Namespace) -> tuple[str, ...]:
    """The access tokens of this start: the flags' (or ARPC_ACCESS_TOKENS), then the one
    `--generate-access-token` saved; ValueError for one that cannot travel in a URL."""
    given = args.access_token
    if given is None:
        given = [t.strip() for t in os.environ.get("ARPC_ACCESS_TOKENS", "").split(",")]
    tokens = [check_access_token(t) for t in given if t]
    saved = load_access_token()
    if saved is not None:
        tokens.append(saved)
    return tuple(dict.fromkeys(tokens))


def announce(
    config: ClientConfig, public_host: str, notifier: Notifier | None = None
) -> Callable[[frames.RegisterResult], None]:
    """Print the public URL on the first registration, as the original did (and tell the
    notifier, whose notes link to runs in the console there)."""
    first = True

    def on_registered(result: frames.RegisterResult) -> None:
        nonlocal first
        log.info("registered with the relay as %s", config.client_id)
        if first:
            print(f"✅ client_id {config.client_id} registered", flush=True)
            port_text = f":{result.public_port}" if result.public_port else ""
            if notifier is not None:
                notifier.console_url = f"http://{public_host}{port_text}/"
            # The URL carries the first access token when there is one (printed, never logged).
            token = config.access_tokens[0] if config.access_tokens else config.client_id
            print(f"🌐 Public URL: http://{public_host}{port_text}/?token={token}", flush=True)
            if len(config.access_tokens) > 1:
                print(f"🔑 {len(config.access_tokens)} access tokens open this client", flush=True)
            for remote in result.tcp_ports:
                target = config.tcp_targets.get(remote)
                print(f"🔌 TCP: {public_host}:{remote} → {target}", flush=True)
            first = False
            settle_heap()  # up: what start-up loaded stays out of the collector's passes

    return on_registered


async def serve(args: argparse.Namespace) -> int:
    import asyncio

    from arp.client.control import Client, TlsSetupError

    for flag, given in (("--remote", args.remote is not None), ("--enable-mcp", args.enable_mcp)):
        if given and not args.command_mode:
            log.error("%s serves the agents: it needs --command-mode", flag)
            return EXIT_REFUSED
    agent = None
    if runs_gateway_agent(args):
        from arp.gateway.agent import agent_options_from_args

        agent = agent_options_from_args(args)
    if args.command_mode and args.local_port is not None:
        log.error(
            "--local-port is forward mode's service; with --command-mode the relay's public "
            "port reaches the agent API (use --remote-port REMOTE:LOCAL to expose a local TCP port)"
        )
        return EXIT_REFUSED
    relay_wanted = args.command_mode or args.local_port is not None
    if not relay_wanted and agent is None and args.generate_access_token:
        token, path = save_new_access_token()
        print(f"🔑 new access token (saved to {path}; the next start uses it): {token}", flush=True)
        return 0
    if not relay_wanted and agent is None:
        log.error("forward mode needs --local-port (the local service to expose)")
        return EXIT_REFUSED
    client_id = args.client_id or load_or_create_client_id()
    if args.generate_access_token:
        token, path = save_new_access_token()
        print(f"🔑 new access token (saved to {path}, used from now on): {token}", flush=True)
    tokens = access_tokens(args)
    stopped = asyncio.Event()
    client: Client | None = None
    notifier: Notifier | None = None
    async with contextlib.AsyncExitStack() as stack:
        command: CommandServer | None = None
        if args.command_mode:
            from arp.command.agents_check import startup_lines
            from arp.command.mcp import mcp_service
            from arp.command.notify import notifier_from_args
            from arp.command.remote import remote_service
            from arp.command.server import CommandServer

            # The API answers only requests that carry the client id, as the relay routes.
            command_config = dataclasses.replace(
                CommandConfig.from_args(args),
                token=tokens[0] if tokens else client_id,
                other_tokens=tokens[1:],
                session_overrides=_sessions(args),
            )
            command = CommandServer(command_config)
            await _listen(stack, command, f"--command-port {args.command_port}")
            http_target = Target(command.host, command.port)
            mode = f"command mode, API on {http_target}"
            for line in await startup_lines(command.manager):
                print(line, flush=True)
            # Faces over the same sessions; entered after the server, so they close first.
            mcp = mcp_service(args, command)
            if mcp is not None:
                service = await _listen(stack, mcp, f"--mcp-port {args.mcp_port}")
                print(
                    f"🧩 MCP: {service.url}?token=<client_id> (through the relay: the same path)",
                    flush=True,
                )
            notifier = notifier_from_args(args, command.manager)
            if notifier is not None:
                await stack.enter_async_context(notifier)
            remote = remote_service(args, command)
            if remote is not None:
                await _listen(stack, remote, f"--remote {':'.join(map(str, args.remote))}")
                mode += f", remote protocol on {args.remote[0]}:{remote.port}"
        else:
            http_target = Target(args.local_addr, args.local_port or 0)
            mode = f"forwarding to {http_target}"
        if agent is not None:
            from arp.agents.sessions import SessionManager
            from arp.gateway.agent import AgentLoop

            # The gateway's tasks run through the same session manager as command mode's.
            if command is not None:
                manager = command.manager
            else:
                sessions = dataclasses.replace(
                    CommandConfig.from_args(args), session_overrides=_sessions(args)
                ).session_config()
                if args.data_dir is None:
                    sessions = dataclasses.replace(sessions, data_dir=agent.state_dir / "sessions")
                manager = await stack.enter_async_context(SessionManager(sessions))
            await stack.enter_async_context(AgentLoop(agent, manager))
            print(f"🤖 agent {agent.agent_id} of gateway {agent.gateway}", flush=True)
        on_stop_signal(stopped.set)
        if relay_wanted:
            config = config_from_args(args, http_target, client_id)
            print(f"arpc {__version__}: client_id {config.client_id}, {mode}", flush=True)
            public_host = args.public_host or config.server_addr
            client = Client(config, on_registered=announce(config, public_host, notifier))
            await stack.enter_async_context(client)
            waiter = asyncio.ensure_future(client.wait_closed())
            stopper = asyncio.ensure_future(stopped.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            for future in (waiter, stopper):
                future.cancel()
        else:
            await stopped.wait()
    if client is not None and client.fatal_error is not None:
        error = client.fatal_error
        what = (
            "cannot connect to the relay"
            if isinstance(error, TlsSetupError)
            else "the relay refused this client"
        )
        print(f"❌ {what}: {error.message}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    return 0


def speaks_tls(args: argparse.Namespace) -> bool:
    """Whether this start may need the ssl module: TLS to the relay, command mode (aiohttp,
    Web Push) or the gateway agent (WebSockets). Forward mode without TLS leaves OpenSSL out
    (`arp.runtime.forgo_tls`)."""
    return bool(args.tls or args.tls_ca or args.command_mode or runs_gateway_agent(args))


def runs_gateway_agent(args: argparse.Namespace) -> bool:
    """Whether this start runs the gateway agent (`--gateway`, or ARP_GATEWAY set)."""
    return bool(args.gateway or os.environ.get("ARP_GATEWAY"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.setup(args.log_level, file_app="arpc")
        log_deprecations(args, log)
        # Checked before anything starts, so a wrong path is an argument error like any other.
        tls_context(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not speaks_tls(args):
        forgo_tls()
    from arp.net.selector import new_event_loop  # after forgo_tls: it loads asyncio

    try:
        return run(serve(args), plain_loop=new_event_loop)
    except CannotStart as exc:
        log.error("cannot start: %s", exc)
        return EXIT_REFUSED
    except ArpError as exc:
        log.error("%s", exc.message)
        return 1
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
