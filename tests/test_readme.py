"""The README's option tables name every flag of arps and arpc (their own groups; command mode,
MCP, the remote protocol and the gateway have their own docs)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from arp.client.cli import build_parser as arpc_parser
from arp.relay.cli import build_parser as arps_parser

ROOT = Path(__file__).resolve().parent.parent


def own_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The long flags of the parser's main group (not of its named argument groups), less the
    hidden deprecated spellings (`--help` does not show them either)."""
    main = parser._action_groups[1]  # "options"; the rest are named groups
    return [
        option
        for action in main._group_actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--version")
    ]


@pytest.mark.parametrize(
    ("program", "parser", "extra"),
    [("arps", arps_parser(), ["--config"]), ("arpc", arpc_parser(), [])],
)
def test_the_option_table_names_every_flag(
    program: str, parser: argparse.ArgumentParser, extra: list[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split(f"### `{program}`", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    missing = [
        flag
        for flag in own_flags(parser) + extra
        if not re.search(rf"`{re.escape(flag)}[` ]", table)
    ]
    assert not missing, f"README's {program} table lacks {missing}"
