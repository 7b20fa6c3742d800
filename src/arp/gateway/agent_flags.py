"""The gateway agent's flags (`arpc --gateway-url` and the `agent-server` command).

Apart from the agent loop (`arp.gateway.agent`) so arpc's parser lists them without loading the
loop, its session types or aiohttp: forward mode stays light (idle RSS, issue 18).
"""

from __future__ import annotations

import argparse

from arp.argtypes import DeprecatedAlias
from arp.config import AgentBounds


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """arpc's agent flags (env: ARP_GATEWAY, ARP_AGENT_ID, ARP_AGENT_TOKEN(_FILE))."""
    group = parser.add_argument_group("gateway agent")
    group.add_argument(
        "--gateway-url", dest="gateway", metavar="URL", help="run as an agent of ws://host:8080"
    )
    group.add_argument("--gateway", action=DeprecatedAlias, new="--gateway-url")
    group.add_argument("--agent-id", metavar="ID", help="this agent's registered id")
    group.add_argument(
        "--agent-token-file", metavar="FILE", help="file holding the agent token (or env)"
    )
    group.add_argument(
        "--agent-state-dir", metavar="DIR", help="where task state and sessions are kept"
    )
    group.add_argument(
        "--agent-heartbeat-interval",
        metavar="SECONDS",
        type=float,
        default=None,
        help=f"seconds between heartbeats (default {AgentBounds().heartbeat_interval:g}; keep it "
        "under the gateway's timeout)",
    )
