"""The routing flags of arps and arpc: parsed from flags and the environment."""

from __future__ import annotations

import ipaddress

import pytest

from arp.client import cli as arpc_cli
from arp.client.config import Target
from arp.relay import cli as arps_cli


def test_trusted_proxies_come_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = arps_cli.build_parser()
    config = arps_cli.config_from_args(
        parser.parse_args(["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1"])
    )
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    monkeypatch.setenv("ARPS_TRUSTED_PROXIES", "192.0.2.0/24, 198.51.100.7")
    config = arps_cli.config_from_args(parser.parse_args([]))
    assert [str(n) for n in config.trusted_proxies] == ["192.0.2.0/24", "198.51.100.7/32"]
    assert arps_cli.config_from_args(parser.parse_args([])).timeouts.keepalive_idle == 75.0
    with pytest.raises(ValueError, match="not an address or CIDR"):
        arps_cli.config_from_args(parser.parse_args(["--trusted-proxy", "nope"]))


def test_arpc_asks_for_forwarded_headers_and_proxy_protocol_by_flag() -> None:
    parser = arpc_cli.build_parser()
    target = Target("127.0.0.1", 3000)
    plain = arpc_cli.config_from_args(parser.parse_args([]), target, "x")
    assert plain.forwarded_headers and not plain.proxy_protocol
    args = parser.parse_args(["--no-forwarded-headers", "--proxy-protocol"])
    changed = arpc_cli.config_from_args(args, target, "x")
    assert not changed.forwarded_headers and changed.proxy_protocol
