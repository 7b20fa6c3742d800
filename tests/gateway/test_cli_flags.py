"""The gateway's and the agent's flags fit into arps's and arpc's parsers without clashes."""

from __future__ import annotations

from arp.client.cli import build_parser as arpc_parser
from arp.gateway.agent import add_agent_arguments
from arp.gateway.config import load_gateway_config
from arp.relay.cli import build_parser as arps_parser


def test_arps_takes_the_gateway_flags() -> None:
    args = arps_parser().parse_args(
        ["--gateway-port", "0", "--agent-heartbeat-timeout", "5s", "--gateway-host", "127.0.0.1"]
    )
    config = load_gateway_config(args, environ={})
    assert config.server.port == 0 and config.agent.heartbeat_timeout == 5.0


def test_agent_flags_fit_arpc() -> None:
    parser = arpc_parser()
    if not any("--agent-id" in action.option_strings for action in parser._actions):
        add_agent_arguments(parser)
    args = parser.parse_args(["--gateway-url", "ws://h:8080", "--agent-id", "a1"])
    assert (args.gateway, args.agent_id) == ("ws://h:8080", "a1")
