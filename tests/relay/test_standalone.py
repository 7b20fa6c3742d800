"""A plain relay stands alone: `arps` without --with-gateway or --admin-port imports neither
aiohttp, PyYAML nor prometheus_client; the admin port brings prometheus_client, never aiohttp;
without --cluster neither redis nor the cluster's modules are loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import units

# Builds and starts the relay the way `arps` does (its parser, its config, `Relay.start`) on
# free ports, then lists the heavy modules that were imported along the way.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from arp.relay import cli
    from arp.relay.server import Relay

    async def main() -> None:
        args = cli.build_parser().parse_args(
            ["--bind", "127.0.0.1", "--control-port", "0", "--proxy-port", "0",
             "--public-port", "0"]
        )
        assert not (args.with_gateway or args.gateway_config)
        relay = Relay(cli.config_from_args(args))
        await relay.start()
        await relay.close()

    asyncio.run(main())
    heavy = ("aiohttp", "yaml", "redis", "arp.command", "arp.gateway.server",
             "prometheus_client", "arp.relay.admin", "arp.relay.cluster", "arp.relay.peer")
    print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy
                 or any(m.startswith(h + ".") for h in heavy)))
    """
)


def test_arps_without_gateway_imports_neither_aiohttp_nor_yaml() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=units(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_arps_help_imports_neither() -> None:
    code = (
        "import sys\nfrom arp.relay import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('aiohttp' in sys.modules or 'yaml' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=units(30)
    )
    assert result.stderr.strip().endswith("False"), result.stderr
    assert "--with-gateway" in result.stdout


ADMIN_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from arp.relay import cli
    from arp.relay.admin import AdminServer
    from arp.relay.server import Relay

    async def main() -> None:
        args = cli.build_parser().parse_args(
            ["--bind", "127.0.0.1", "--control-port", "0", "--proxy-port", "0",
             "--public-port", "0", "--admin-port", "0"]
        )
        relay = Relay(cli.config_from_args(args))
        await relay.start()
        admin = AdminServer(relay, cli.admin_from_args(args))
        await admin.start()
        await admin.close()
        await relay.close()

    asyncio.run(main())
    print("prometheus_client" in sys.modules,
          sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "yaml", "redis")))
    """
)


def test_the_admin_port_loads_prometheus_client_but_not_aiohttp() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ADMIN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=units(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True []", result.stdout


# arpc in forward mode: its parser (every flag, command mode's and the agent's included) and the
# relay link, without command mode's server, MCP, the remote protocol or the gateway agent's loop.
ARPC_SCRIPT = textwrap.dedent(
    """
    import sys
    from arp.client import cli

    args = cli.build_parser().parse_args(["--local-port", "8080", "--client-id", "probe"])
    assert not args.command_mode and args.gateway is None
    config = cli.config_from_args(args, cli.Target("127.0.0.1", 8080), "probe")
    heavy = ("aiohttp", "yaml", "redis", "mcp", "prometheus_client", "arp.command.server",
             "arp.command.remote", "arp.command.remote_protocol", "arp.command.mcp.service",
             "arp.command.notify", "arp.agents.sessions", "arp.agents.session_types",
             "arp.agents.executors", "arp.agents.history", "arp.gateway.agent")
    print(sorted(m for m in sys.modules if m in heavy or m.split(".")[0] in heavy
                 or any(m.startswith(h + ".") for h in heavy)))
    """
)


def test_arpc_forward_mode_imports_no_command_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ARPC_SCRIPT],
        capture_output=True,
        text=True,
        timeout=units(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_arpc_help_lists_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arp.client", "--help"],
        capture_output=True,
        text=True,
        timeout=units(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--local-port", "--command-mode", "--enable-mcp", "--remote", "--notify-url",
                 "--gateway-url", "--data-dir", "--approval-timeout"):  # fmt: skip
        assert flag in result.stdout, flag
