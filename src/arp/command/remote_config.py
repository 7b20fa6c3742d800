"""The remote server's configuration and arpc's ``--remote*`` flags that fill it.

Kept apart from the server (`arp.command.remote`) so the flags, their defaults and the config
read as one page, and the server module holds only serving. Every bound and deadline is a field of
`arp.config.RemoteBounds`, which `RemoteConfig` inherits; the flags take their defaults from it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from arp import argtypes
from arp.agents.names import AGENTS
from arp.config import RemoteBounds

LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Defaults:
    """The server's defaults (``--remote-executor`` and friends); here, not in
    `arp.command.remote_protocol`, so arpc's flags load without the protocol (idle RSS)."""

    executor: str = "claude"
    model: str | None = None
    project_path: str | None = None
    permission_mode: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteConfig(RemoteBounds):
    """Where the remote server listens and what a request defaults to (``--remote-*`` flags);
    its bounds and deadlines are `arp.config.RemoteBounds` (inherited)."""

    host: str = LOOPBACK
    port: int = 0
    defaults: Defaults = field(default_factory=Defaults)
    upload_dir: Path | None = None
    """Where the private temporary folders of attachments are made (None: the system's)."""
    token: str | None = None
    """The shared secret every request must carry as ``"token"`` (None: no check)."""


_DEFAULTS: Final = RemoteConfig()


def _address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = LOOPBACK, text
    host = host.strip("[]") or LOOPBACK
    if not port_text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT or PORT")
    return host, argtypes.port(port_text)


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the remote TCP protocol's flags to arpc's parser (a group of its own)."""
    group = parser.add_argument_group("remote TCP protocol (docs/remote-protocol.md)")
    group.add_argument(
        "--remote",
        type=_address,
        metavar="HOST:PORT",
        help="serve the remote protocol (newline-delimited JSON) on this address; a bare PORT "
        "binds 127.0.0.1. Off by default",
    )
    group.add_argument(
        "--remote-executor",
        default="claude",
        choices=AGENTS,
        help="the agent a request runs when its config names none (default %(default)s)",
    )
    group.add_argument(
        "--remote-model", help="the model when a request names none (default: the CLI's own)"
    )
    group.add_argument(
        "--remote-project",
        help="the project folder agents run in when a request names none "
        "(default: command mode's default)",
    )
    group.add_argument(
        "--remote-permission-mode",
        help="permission mode when a request says nothing about it (default: the CLI's own)",
    )
    group.add_argument(
        "--remote-token",
        metavar="TOKEN",
        default=argtypes.env_default("ARPC_REMOTE_TOKEN"),
        help='a shared secret every request must carry as "token" (env ARPC_REMOTE_TOKEN; '
        "default: none, the protocol is then open to whoever reaches the port)",
    )
    group.add_argument(
        "--remote-timeout",
        type=argtypes.positive_float,
        default=_DEFAULTS.request_timeout,
        help="seconds one request may take; then its agent is stopped (default %(default)s)",
    )
    group.add_argument(
        "--remote-max-line",
        type=argtypes.positive_int,
        default=_DEFAULTS.max_line,
        help="the longest request line in bytes (default %(default)s: a 20 MiB image in base64)",
    )
    group.add_argument(
        "--remote-max-concurrent",
        type=argtypes.positive_int,
        default=_DEFAULTS.max_concurrent,
        help="requests running at once per connection (default %(default)s)",
    )
    group.add_argument(
        "--remote-max-connections",
        type=argtypes.positive_int,
        default=_DEFAULTS.max_connections,
        help="open connections at once (default %(default)s)",
    )
    group.add_argument(
        "--remote-max-memory",
        type=argtypes.positive_int,
        default=_DEFAULTS.max_memory,
        help="bytes of request lines and attachments held at once, all connections together; "
        "beyond, a request is answered with connection_error (default %(default)s: 256 MiB)",
    )


def config_from_args(args: argparse.Namespace) -> RemoteConfig | None:
    if getattr(args, "remote", None) is None:
        return None
    host, port = args.remote
    return RemoteConfig(
        host=host,
        port=port,
        defaults=Defaults(
            executor=args.remote_executor,
            model=args.remote_model,
            project_path=args.remote_project,
            permission_mode=args.remote_permission_mode,
        ),
        request_timeout=args.remote_timeout,
        max_line=args.remote_max_line,
        max_attachment_bytes=min(_DEFAULTS.max_attachment_bytes, args.remote_max_line),
        max_concurrent=args.remote_max_concurrent,
        max_connections=args.remote_max_connections,
        max_memory=getattr(args, "remote_max_memory", _DEFAULTS.max_memory),
        token=getattr(args, "remote_token", None) or None,
    )


__all__ = ["LOOPBACK", "Defaults", "RemoteConfig", "add_remote_arguments", "config_from_args"]
