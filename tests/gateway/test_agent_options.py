"""arpc's agent flags and environment."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from arp.errors import ConfigError
from arp.gateway.agent import AgentOptions, add_agent_arguments, agent_options_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = parse(
        [
            "--gateway-url",
            "ws://h:8080/",
            "--agent-id",
            "a1",
            "--agent-token-file",
            str(token),
            "--agent-state-dir",
            str(tmp_path),
            "--agent-heartbeat-interval",
            "3",
        ]
    )
    options = agent_options_from_args(args, environ={"ARP_AGENT_ID": "other"})
    assert (options.agent_id, options.token, options.heartbeat_interval) == ("a1", "s3cret", 3.0)
    assert options.url == "ws://h:8080/ws/agent/a1"


def test_environment_fills_in() -> None:
    env = {"ARP_GATEWAY": "http://h:8080", "ARP_AGENT_ID": "a2", "ARP_AGENT_TOKEN": "t"}
    options = agent_options_from_args(parse([]), environ=env)
    assert options.url == "ws://h:8080/ws/agent/a2" and options.token == "t"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--gateway", "h:8080", "--agent-id", "a"], {"ARP_AGENT_TOKEN": "t"}, "--gateway"),
        (["--gateway", "ws://h"], {"ARP_AGENT_TOKEN": "t"}, "--agent-id"),
        (["--gateway", "ws://h", "--agent-id", "a"], {}, "token"),
        (
            ["--gateway", "ws://h", "--agent-id", "a", "--agent-token-file", "/nonexistent/x"],
            {},
            "--agent-token-file",
        ),
    ],
)
def test_missing_or_bad_values_say_what_to_pass(
    argv: list[str], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        agent_options_from_args(parse(argv), environ=env)


def test_wss_url_kept() -> None:
    options = AgentOptions(gateway="wss://gw.example", agent_id="a", token="t", state_dir=Path())
    assert options.url == "wss://gw.example/ws/agent/a"


def test_an_oversize_event_stays_valid_json() -> None:
    import json

    from arp.agents.events import Event
    from arp.gateway.agent import _event_data

    event = Event(seq=3, ts=1.0, run=0, kind="text", text="y" * 5000, raw="y" * 5000)
    data = json.loads(_event_data(event, 1000))
    assert data["truncated"] is True and data["seq"] == 3 and len(data["text"]) == 500
    small = Event(seq=4, ts=1.0, run=0, kind="text", text="hi")
    assert json.loads(_event_data(small, 1000))["text"] == "hi"
