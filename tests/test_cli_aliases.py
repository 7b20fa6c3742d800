"""Flags say what they are (`arps --with-gateway` is a switch, `arpc --gateway-url` takes a URL);
the old spellings still work, hidden from `--help`, with one deprecation warning each."""

from __future__ import annotations

import logging

import pytest

from arp.argtypes import log_deprecations
from arp.client.cli import build_parser as arpc_parser
from arp.relay.cli import build_parser as arps_parser


def test_arps_with_gateway_is_the_switch_and_the_old_spelling_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parser = arps_parser()
    new = parser.parse_args(["--with-gateway"])
    assert new.with_gateway and not getattr(new, "deprecations", None)
    assert not parser.parse_args([]).with_gateway
    old = parser.parse_args(["--gateway"])
    assert old.with_gateway
    with caplog.at_level(logging.WARNING):
        log_deprecations(old, logging.getLogger("arps"))
    assert [r.getMessage() for r in caplog.records] == [
        "--gateway is deprecated and will go: use --with-gateway"
    ]
    help_text = parser.format_help()
    assert "--with-gateway" in help_text
    assert "--gateway " not in help_text and "--gateway\n" not in help_text


def test_arpc_gateway_url_takes_the_url_and_the_old_spelling_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parser = arpc_parser()
    assert parser.parse_args(["--gateway-url", "ws://h:1"]).gateway == "ws://h:1"
    old = parser.parse_args(["--gateway", "ws://h:2"])
    assert old.gateway == "ws://h:2"
    with caplog.at_level(logging.WARNING):
        log_deprecations(old, logging.getLogger("arpc"))
    assert "use --gateway-url" in caplog.text
    help_text = parser.format_help()
    assert "--gateway-url URL" in help_text and "--gateway URL" not in help_text


def test_arps_main_logs_the_deprecation_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `main`, after logging is set up: one line on stderr."""
    from arp.relay import cli

    async def fake_serve(*_: object) -> int:
        return 0

    monkeypatch.setattr(cli, "serve", fake_serve)
    monkeypatch.setattr(cli, "load_gateway_config", lambda args: object())
    assert cli.main(["--gateway"]) == 0
    err = capsys.readouterr().err
    assert err.count("--gateway is deprecated") == 1, err
