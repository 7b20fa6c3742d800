"""The agent list lives once, in the executors table; every other face reads or checks it."""

from __future__ import annotations

import argparse
from typing import get_args

from arp.agents import history
from arp.agents.executors import AGENTS, EXECUTORS, AgentName
from arp.command import remote_protocol
from arp.command.mcp import tools
from arp.command.remote import add_remote_arguments


def test_the_table_is_the_list() -> None:
    assert AGENTS == tuple(EXECUTORS) == ("claude", "codex", "gemini")
    assert get_args(AgentName) == AGENTS
    assert all(executor.display_name for executor in EXECUTORS.values())


def test_history_mcp_and_remote_read_it() -> None:
    assert history.AGENTS is AGENTS
    assert get_args(tools.Executor) == AGENTS
    assert get_args(tools.Agent) == AGENTS
    assert tuple(remote_protocol.UNHONOURED) == AGENTS
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "remote_executor")
    assert tuple(action.choices or ()) == AGENTS


def test_unhonoured_options_follow_the_table() -> None:
    assert remote_protocol.UNHONOURED == {
        "claude": ("max_context_num", "max_tokens"),
        "codex": ("max_tool_try", "max_context_num", "max_tokens"),
        "gemini": ("max_tool_try", "max_context_num", "max_tokens"),
    }
