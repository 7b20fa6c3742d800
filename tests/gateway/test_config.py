"""Configuration layering (file < env < flags) and clear errors naming the bad key."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arp.errors import ConfigError
from arp.gateway.config import (
    GatewayConfig,
    add_gateway_arguments,
    load_gateway_config,
    parse_duration,
)
from arp.gateway.server import Gateway
from tests.conftest import units

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_gateway_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), (7, 7.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "k") == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "-1s", "0s", True])
def test_bad_duration_names_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"agent\.heartbeat_timeout"):
        parse_duration(bad, "agent.heartbeat_timeout")


def test_defaults_without_anything() -> None:
    config = load_gateway_config(parse(["--allow-open"]), environ={})
    assert config == GatewayConfig().replace(auth={"allow_open": True})


def test_an_open_control_api_on_all_interfaces_does_not_start() -> None:
    """0.0.0.0 with neither secret nor token: anyone could run tasks on the agents."""
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(parse([]), environ={})
    text = str(caught.value)
    for key in ("auth.shared_secret", "control_plane.token", "auth.allow_open", "--allow-open"):
        assert key in text
    for args, env in [
        (["--gateway-host", "127.0.0.1"], {}),
        (["--gateway-host", "::1"], {}),
        (["--gateway-host", "localhost"], {}),
        ([], {"AUTH_SHARED_SECRET": "s"}),
        (["--control-plane-token", "t"], {}),
        ([], {"AUTH_ALLOW_OPEN": "true"}),
    ]:
        load_gateway_config(parse(args), environ=env)
    for host in ("", "10.0.0.1", "gateway.example", "::"):
        with pytest.raises(ConfigError, match="allow_open"):
            load_gateway_config(parse(["--gateway-host", host]), environ={})


async def test_gateway_refuses_to_start_open_before_binding() -> None:
    gateway = Gateway(GatewayConfig())
    with pytest.raises(ConfigError, match="allow_open"):
        await gateway.start()
    assert gateway.port is None


def test_python_m_gateway_says_what_to_set() -> None:
    settings = ("AUTH_", "CONTROL_", "AGENT_SERVER_")  # the environment must not open it
    done = subprocess.run(
        [sys.executable, "-m", "arp.gateway"],
        capture_output=True,
        text=True,
        timeout=units(30),
        env={k: v for k, v in os.environ.items() if not k.startswith(settings)},
    )
    assert done.returncode == 2
    assert "auth.allow_open: true" in done.stderr and "AUTH_SHARED_SECRET" in done.stderr


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "server: {host: 10.0.0.1, port: 9000}\n"
        "agent: {heartbeat_timeout: 2m, max_connections: 5}\n"
        "auth: {shared_secret: from-file, require_signature: true}\n"
        "redis: {url: 'redis://file:1/0', prefix: 'x:'}\n"
    )
    env = {"AGENT_SERVER_PORT": "9100", "AUTH_SHARED_SECRET": "from-env", "REDIS_URL": ""}
    config = load_gateway_config(
        parse(["--config", str(path), "--gateway-port", "9200", "--agent-cleanup-interval", "10s"]),
        environ=env,
    )
    assert config.server.host == "10.0.0.1"
    assert config.server.port == 9200
    assert config.agent.heartbeat_timeout == 120.0
    assert config.agent.cleanup_interval == 10.0
    assert config.agent.max_connections == 5
    assert config.auth.shared_secret == "from-env"
    assert config.auth.require_signature is True
    assert config.redis.url == "redis://file:1/0", "an empty env value counts as unset"
    assert config.redis.prefix == "x:"


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        ("agent: {heartbeat_timeout: soon}\n", {}, "agent.heartbeat_timeout"),
        ("server: {port: 70000}\n", {}, "server.port"),
        ("server: {prot: 1}\n", {}, "server.prot"),
        ("auth: {require_signature: maybe}\n", {}, "auth.require_signature"),
        ("", {"AGENT_SERVER_PORT": "eighty"}, "server.port"),
        ("server: [1, 2]\n", {}, "server"),
    ],
)
def test_bad_values_stop_with_the_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], key: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(parse(["--config", str(path)]), environ=env)
    assert key in str(caught.value)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(parse(["--config", str(tmp_path / "nope.yaml")]), environ={})


def test_the_example_config_loads() -> None:
    example = parse(["--config", str(REPO / "configs/config.yaml")])
    with pytest.raises(ConfigError, match="allow_open"):
        load_gateway_config(example, {})  # 0.0.0.0 and no secret yet: refused, saying why
    config = load_gateway_config(example, {"AUTH_SHARED_SECRET": "s"})
    assert config.server.port == 8080
    assert config.control_plane.task_poll_interval == 5.0
    assert config.auth.clock_skew == 300.0
