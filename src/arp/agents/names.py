"""The names of the agents ARP runs, for the parts that only name them (flags' choices, MCP's
tool schemas).

The executor table (`arp.agents.executors`) stays the one list: it is checked against these names
when it loads. They live apart so arpc's parser lists them without loading the table's parsers
and protocols (forward mode's idle RSS, issue 18).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

AgentName = Literal["claude", "codex", "gemini"]
"""The table's keys as a type (MCP's tool schemas need a Literal)."""

AGENTS: Final[tuple[str, ...]] = get_args(AgentName)
"""The agents ARP knows, in the order they are listed everywhere."""
