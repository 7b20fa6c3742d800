"""``agent-server start``: the gateway alone, configured as the Go original's users configure it.

Runs the console script as a child on a free loopback port, against the tests' private
redis-server, from a working folder holding ``configs/config.yaml`` (where the Go agent-server
reads it), and checks ``/healthz``; then that a missing or unknown command is a usage error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port, units
from tests.gateway.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def agent_server() -> list[str]:
    """The installed console script; before a re-install, the same entry point through python."""
    assert 'agent-server = "arp.gateway.cli:agent_server"' in (ROOT / "pyproject.toml").read_text()
    script = Path(sys.executable).parent / "agent-server"
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from arp.gateway.cli import agent_server; sys.exit(agent_server())",
    ]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the gateway's settings (they would override the file)."""
    settings = ("AUTH_", "CONTROL_PLANE_", "AGENT_SERVER_", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings)}
    env.update(extra)
    return env


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=units(2)) as reply:  # loopback only
        return reply.status, reply.read()


def test_start_serves_the_gateway_from_configs_config_yaml(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "config.yaml").write_text(
        f'server:\n  host: "127.0.0.1"\n  port: {port}\n'
        'control_plane:\n  token: "server-auth-token"\n  timeout: "30s"\n'
        'agent:\n  heartbeat_timeout: "60s"\n'
        f'redis:\n  url: "{redis_server.url}"\n  prefix: "t{uuid.uuid4().hex[:8]}:"\n'
        'logging:\n  level: "info"\n  file: "logs/agent-server.log"\n'
    )
    child = subprocess.Popen(
        [*agent_server(), "start"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + units(20)
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(child.communicate(timeout=units(5))) from None
                time.sleep(units(0.05))
        assert status == 200 and b"redis" in body
        # The environment overrides the file, as for the Go original's users: here it is unset,
        # so the token from the file guards the control API.
        try:
            get(f"http://127.0.0.1:{port}/api/agents/")
        except urllib.error.HTTPError as refused:
            assert refused.code == 401
        else:
            raise AssertionError("the control API answered without the file's token")
        assert (tmp_path / "logs" / "agent-server.log").exists()
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=units(20))
    assert child.returncode == 0, err
    assert f"gateway listening on port {port}" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "say what to do: agent-server start"),
        (["stop"], "invalid choice: 'stop' (choose from 'start')"),
        (["start", "--gateway-port", "many"], "server.port"),
    ],
)
def test_no_or_a_bad_command_is_a_usage_error(tmp_path: Path, argv: list[str], says: str) -> None:
    done = subprocess.run(
        [*agent_server(), *argv],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=units(30),
    )
    assert done.returncode == 2, done
    assert says in done.stderr
    if argv != ["start", "--gateway-port", "many"]:
        assert "usage: agent-server" in done.stderr
