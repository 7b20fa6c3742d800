"""The gateway's configuration: a YAML file, overridden by the environment, overridden by flags.

Every value has one home here. A bad value (a duration that is not `30s`/`5m`, a port that is not a
number) stops start-up with a `ConfigError` naming the key, so an operator fixes the right line.
Durations are kept in seconds (floats); the YAML file and flags accept `500ms`, `30s`, `5m`, `1h`
or a bare number of seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arp.config import GatewayBounds
from arp.errors import ConfigError

DEFAULT_GATEWAY_PORT = 8080

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object, key: str) -> float:
    """Seconds from `30s`, `5m`, `1h`, `250ms` or a bare number; `key` names it in the error."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a duration (use forms like 30s, 5m)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ConfigError(f"{key}: {value!r} is not a duration (use forms like 30s, 5m)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{key}: {value!r} must be longer than zero")
    return seconds


def _parse_int(value: object, key: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a whole number")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not a whole number") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{key}: {number} must be {bound}")
    return number


def _parse_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}: {value!r} is not true or false")


def _parse_str(value: object, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise ConfigError(f"{key}: expected a string, got {type(value).__name__}")
    return str(value)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_GATEWAY_PORT


@dataclass(frozen=True, slots=True)
class ControlPlaneConfig:
    url: str = ""
    """Where pending tasks are polled from; empty turns polling off."""
    token: str = ""
    """Bearer token the control plane presents to us, and we present when polling."""
    scope: str = "default"
    timeout: float = 30.0
    task_poll_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    max_connections: int = 1000
    heartbeat_timeout: float = 60.0
    cleanup_interval: float = 30.0
    max_message_size: int = 1024 * 1024
    """The largest WebSocket message accepted from an agent (beyond: close 1009)."""
    outbound_queue: int = 1024
    """Messages waiting to be written to one agent; a consumer beyond this is disconnected."""
    max_pending_tasks: int = 256
    """Tasks handed to one agent and not yet acknowledged (beyond: 429)."""
    dedup_window: int = 65536
    """Message ids remembered in memory per gateway to drop duplicates without asking Redis."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    shared_secret: str = ""
    require_signature: bool = False
    clock_skew: float = 300.0
    allow_open: bool = False
    """Serve the control API with neither `shared_secret` nor `control_plane.token` on a
    non-loopback address (anyone reaching the port may then run tasks on agents)."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = ""
    """Prepended to every key and stream name (for example `arp:`)."""
    logs_stream: str = "agent_logs"
    results_stream: str = "agent_results"
    status_stream: str = "agent_status"
    stream_maxlen: int = 1_000_000
    """Each stream is trimmed with `MAXLEN ~` to about this many entries."""
    dedup_ttl: float = 86400.0
    """How long a task's duplicate marks live in Redis after its last write (an agent's resend
    must come sooner), and how long a finished task id stays refused for its agent."""
    timeout: float = 5.0
    """Deadline of one Redis command or pipeline."""


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    file: str = "logs/agent-server.log"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole gateway configuration (see configs/config.yaml for a commented example)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    control_plane: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    bounds: GatewayBounds = field(default_factory=GatewayBounds)

    def replace(self, **sections: Any) -> GatewayConfig:
        """A copy with some fields changed: `replace(server={"port": 0})`."""
        changed: dict[str, Any] = {}
        for name, values in sections.items():
            changed[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changed)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "control_plane": ControlPlaneConfig,
    "agent": AgentConfig,
    "auth": AuthConfig,
    "redis": RedisConfig,
    "logging": LoggingConfig,
}

_DURATIONS = {
    "control_plane.timeout",
    "control_plane.task_poll_interval",
    "agent.heartbeat_timeout",
    "agent.cleanup_interval",
    "auth.clock_skew",
    "redis.dedup_ttl",
    "redis.timeout",
}
_PORTS = {"server.port"}
_BOOLS = {"auth.require_signature", "auth.allow_open"}
_INTS = {
    "agent.max_connections",
    "agent.max_message_size",
    "agent.outbound_queue",
    "agent.max_pending_tasks",
    "agent.dedup_window",
    "redis.stream_maxlen",
}

ENV_KEYS: dict[str, str] = {
    "AGENT_SERVER_HOST": "server.host",
    "AGENT_SERVER_PORT": "server.port",
    "CONTROL_PLANE_URL": "control_plane.url",
    "CONTROL_PLANE_TOKEN": "control_plane.token",
    "CONTROL_PLANE_SCOPE": "control_plane.scope",
    "AUTH_SHARED_SECRET": "auth.shared_secret",
    "AUTH_REQUIRE_SIGNATURE": "auth.require_signature",
    "AUTH_ALLOW_OPEN": "auth.allow_open",
    "REDIS_URL": "redis.url",
}
"""Environment variable → dotted key (the names the original agent-server used)."""


def _convert(key: str, value: object) -> object:
    if key in _DURATIONS:
        return parse_duration(value, key)
    if key in _PORTS:
        return _parse_int(value, key, low=0, high=65535)
    if key in _BOOLS:
        return _parse_bool(value, key)
    if key in _INTS:
        return _parse_int(value, key, low=1)
    if key == "logging.level":
        level = _parse_str(value, key).strip().lower()
        if level not in ("debug", "info", "warning", "warn", "error"):
            raise ConfigError(f"{key}: {value!r} is not one of debug, info, warning, error")
        return "warning" if level == "warn" else level
    return _parse_str(value, key)


def build_config(layers: list[Mapping[str, object]]) -> GatewayConfig:
    """Apply flat `{"section.key": value}` layers in order over the defaults, converting each."""
    merged: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    for layer in layers:
        for key, value in layer.items():
            section, _, name = key.partition(".")
            if section not in _SECTIONS:
                raise ConfigError(f"{key}: unknown section {section!r}")
            known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
            if name not in known:
                raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
            merged[section][name] = _convert(key, value)
    sections = {name: cls(**merged[name]) for name, cls in _SECTIONS.items()}
    config = GatewayConfig(**sections)
    if config.redis.stream_maxlen < 100:
        raise ConfigError("redis.stream_maxlen: must be at least 100")
    problem = open_control_api(config)
    if problem is not None:
        raise ConfigError(problem)
    return config


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine ("" and 0.0.0.0 do not)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def control_api_open(config: GatewayConfig) -> bool:
    """No shared secret and no bearer token: every control-plane request is accepted."""
    return not config.auth.shared_secret and not config.control_plane.token


def open_control_api(config: GatewayConfig) -> str | None:
    """Why this configuration must not start (an unauthenticated control API reachable from
    other machines lets anyone register agents and run tasks on them), or None."""
    if not control_api_open(config) or is_loopback(config.server.host):
        return None
    if config.auth.allow_open:
        return None
    return (
        f"server.host: the control API on {config.server.host or 'all interfaces'} would accept "
        "requests from anyone (they can register agents and run tasks on them). Set "
        "auth.shared_secret (env AUTH_SHARED_SECRET, flag --auth-shared-secret) or "
        "control_plane.token (env CONTROL_PLANE_TOKEN, flag --control-plane-token), or bind "
        "loopback (server.host: 127.0.0.1, flag --gateway-host 127.0.0.1), or accept the risk "
        "with auth.allow_open: true (env AUTH_ALLOW_OPEN, flag --allow-open)"
    )


def flatten_yaml(text: str, source: str) -> dict[str, object]:
    """`{"server": {"port": 1}}` → `{"server.port": 1}`; anything else is a clear error."""
    # Imported here: `arps` builds its parser from this module, and a relay without a gateway
    # does without PyYAML.
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    flat: dict[str, object] = {}
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping in {source}")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def env_layer(environ: Mapping[str, str]) -> dict[str, object]:
    """The keys the environment sets (empty values count as unset)."""
    return {key: environ[name] for name, key in ENV_KEYS.items() if environ.get(name, "") != ""}


def load_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror}") from None
    return flatten_yaml(text, str(path))


# Flag name → dotted key; the flag's dest is the key with dots as double underscores.
_FLAGS: dict[str, tuple[str, str]] = {
    "--gateway-host": ("server.host", "address the gateway's HTTP port binds"),
    "--gateway-port": ("server.port", f"the gateway's HTTP port (default {DEFAULT_GATEWAY_PORT})"),
    "--control-plane-url": ("control_plane.url", "poll pending tasks from this control plane"),
    "--control-plane-token": ("control_plane.token", "bearer token of the control plane"),
    "--task-poll-interval": ("control_plane.task_poll_interval", "polling period, e.g. 5s"),
    "--max-agent-connections": ("agent.max_connections", "agents connected at once"),
    "--agent-heartbeat-timeout": ("agent.heartbeat_timeout", "silence before an agent is offline"),
    "--agent-cleanup-interval": ("agent.cleanup_interval", "period of the offline sweep"),
    "--auth-shared-secret": ("auth.shared_secret", "HMAC secret for control-plane requests"),
    "--require-signature": ("auth.require_signature", "control-plane requests must be signed"),
    "--clock-skew": ("auth.clock_skew", "allowed age of a signed request, e.g. 300s"),
    "--allow-open": (
        "auth.allow_open",
        "serve the control API without any authentication on a non-loopback address",
    ),
    "--redis-url": ("redis.url", "Redis for the streams and the agent registry"),
    "--redis-prefix": ("redis.prefix", "prefix of every Redis key and stream"),
}


def _dest(key: str) -> str:
    return "gateway__" + key.replace(".", "__")


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's flags (all optional; unset flags leave file and env values alone)."""
    group = parser.add_argument_group("agent gateway")
    group.add_argument(
        "--config", dest="gateway_config", metavar="FILE", help="gateway YAML configuration file"
    )
    for flag, (key, help_text) in _FLAGS.items():
        if key in _BOOLS:
            group.add_argument(
                flag, dest=_dest(key), action="store_const", const="true", help=help_text
            )
        else:
            group.add_argument(flag, dest=_dest(key), metavar="VALUE", help=help_text)


def load_gateway_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """File < env < flags. Raises `ConfigError` naming the key of a bad value."""
    environ = os.environ if environ is None else environ
    layers: list[Mapping[str, object]] = []
    path = getattr(args, "gateway_config", None)
    if path:
        layers.append(load_file(Path(path)))
    layers.append(env_layer(environ))
    flags: dict[str, object] = {}
    for key, _help in _FLAGS.values():
        value = getattr(args, _dest(key), None)
        if value is not None:
            flags[key] = value
    layers.append(flags)
    return build_config(layers)
