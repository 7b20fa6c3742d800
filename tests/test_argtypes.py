"""`arp.argtypes`: flags override the environment, which overrides defaults; both are checked."""

from __future__ import annotations

import argparse

import pytest

from arp.argtypes import env_default, port
from arp.client.cli import build_parser as arpc_parser
from arp.relay.cli import build_parser as arps_parser


def test_env_default_takes_the_first_set_non_empty_variable() -> None:
    env = {"A": "", "B": "  ", "C": "from-c", "D": "from-d"}
    assert env_default("A", "B", "C", "D", environ=env) == "from-c"
    assert env_default("A", "B", environ=env) is None
    assert env_default("A", default=7, environ=env) == 7
    assert env_default("NOT_SET", default="x", environ={}) == "x"


def parser_with(env_value: str | None) -> argparse.ArgumentParser:
    environ = {} if env_value is None else {"SOME_PORT": env_value}
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    parser.add_argument(
        "--some-port", type=port, default=env_default("SOME_PORT", default=9, environ=environ)
    )
    return parser


def test_flag_over_env_over_default_and_env_values_are_checked_like_flags() -> None:
    assert parser_with(None).parse_args([]).some_port == 9
    assert parser_with("1234").parse_args([]).some_port == 1234  # converted by the flag's type
    assert parser_with("1234").parse_args(["--some-port", "80"]).some_port == 80
    with pytest.raises(argparse.ArgumentError, match=r"a port is 0\.\.65535"):
        parser_with("70000").parse_args([])


def test_the_relay_and_the_client_read_their_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONTROL_PORT", "18001")
    monkeypatch.setenv("ARPS_BIND", "")  # empty counts as unset
    monkeypatch.setenv("ARPC_AUTH_TOKEN", "")
    monkeypatch.setenv("ARPS_AUTH_TOKEN", "shared")
    relay = arps_parser().parse_args([])
    assert (relay.control_port, relay.bind, relay.auth_token) == (18001, "0.0.0.0", "shared")
    client = arpc_parser().parse_args(["--control-port", "18002"])
    assert (client.control_port, client.auth_token) == (18002, "shared")
    monkeypatch.setenv("PUBLIC_PORT", "many")
    with pytest.raises(SystemExit) as exit_info:
        arps_parser().parse_args([])
    assert exit_info.value.code == 2
    assert "--public-port: 'many' is not a port number" in capsys.readouterr().err
