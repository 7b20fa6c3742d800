"""The remote TCP server's configuration: its bounds and deadlines, and arpc's ``--remote-*`` flags.

`RemoteConfig` holds every bound and deadline of `arp.command.remote` (documented once, here);
`add_remote_arguments` adds the flags to arpc's parser and `config_from_args` reads them back
(None without ``--remote``). Kept apart from the server so the flags and their defaults read in
one place.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from arp import argtypes
from arp.agents.executors import AGENTS
from arp.command.remote_protocol import Defaults

LOOPBACK: Final = "127.0.0.1"
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """Bounds and deadlines of the remote server (``--remote-*`` flags)."""

    host: str = LOOPBACK
    port: int = 0
    defaults: Defaults = field(default_factory=Defaults)
    max_line: int = 32 * MIB
    """The longest request line: a 20 MiB image is 26.7 MiB in base64, plus room for the rest."""
    max_attachment_bytes: int = 24 * MIB
    """Decoded images and files in one request, together."""
    max_concurrent: int = 4
    """Requests running at once on one connection (more wait: the server stops reading)."""
    max_connections: int = 64
    """Open connections (beyond: one ``connection_error`` line, then closed)."""
    request_timeout: float = 600.0
    """A request's whole deadline (``config.timeout`` may ask for less, never more)."""
    max_pending: int = 16
    """Request lines read ahead and waiting for a free slot (also bounded by ``max_line`` bytes)."""
    max_memory: int = 256 * MIB
    """Bytes of request lines and parsed requests held at once, all connections together: a
    partial line holds its bytes, a complete line twice its bytes (itself and its decoding)
    until parsed, a parsed request its attachments and texts until answered. What does not fit
    is answered with a ``connection_error`` at once (never waits)."""
    read_chunk: int = 256 * 1024
    write_timeout: float = 30.0
    """A client that takes no answer bytes for this long is disconnected."""
    stop_timeout: float = 15.0
    """How long stopping one agent (cancel) may take before it is left to the manager."""
    shutdown_timeout: float = 20.0
    """Closing waits this long for connections to stop their agents (longer than a stop)."""
    upload_dir: Path | None = None
    """Where the private temporary folders of attachments are made (None: the system's)."""
    parse_in_thread: int = 256 * 1024
    """Lines at least this long are decoded in a worker thread (keeps the loop responsive)."""
    token: str | None = None
    """The shared secret every request must carry as ``"token"`` (None: no check)."""


_DEFAULTS: Final = RemoteConfig()

# ---------------------------------------------------------------------------------------------
# arpc wiring


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
    group.add_argument("--remote-model", help="the model when a request names none")
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
        default=os.environ.get("ARPC_REMOTE_TOKEN"),
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
