"""The gateway's and the agent's flags fit into arps's and arpc's parsers without clashes."""

from __future__ import annotations

from arp.client.cli import build_parser as arpc_parser
from arp.gateway.agent import add_agent_arguments
from arp.gateway.config import add_gateway_arguments
from arp.relay.cli import build_parser as arps_parser


def test_gateway_flags_fit_arps() -> None:
    parser = arps_parser()
    add_gateway_arguments(parser)
    args = parser.parse_args(["--gateway-port", "0", "--agent-heartbeat-timeout", "5s"])
    assert args.gateway__server__port == "0"


def test_agent_flags_fit_arpc() -> None:
    parser = arpc_parser()
    add_agent_arguments(parser)
    args = parser.parse_args(["--gateway", "ws://h:8080", "--agent-id", "a1"])
    assert (args.gateway, args.agent_id) == ("ws://h:8080", "a1")
