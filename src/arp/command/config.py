"""Command mode's configuration: `CommandConfig`, the flags that fill it, and the data folder.

It lives apart from the app so that arpc's CLI, the server and the HTTP handlers all read it
without importing one another. arpc adds the flags in one line and builds the config from them::

    add_command_arguments(parser)            # --data-dir, --command-path, --codex-path, ...
    config = CommandConfig.from_args(args)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from arp.argtypes import port, positive_int
from arp.config import SESSION_BOUNDS, ApiBounds

if TYPE_CHECKING:
    from arp.agents.session_types import SessionConfig


def default_data_dir() -> Path:
    """arpc's data folder (sessions live in its ``sessions/``)."""
    return Path(platformdirs.user_data_dir("arpc", appauthor=False))


@dataclass(frozen=True, slots=True)
class CommandConfig(ApiBounds):
    """What arpc's command-mode flags say; the API's own bounds and deadlines are
    `arp.config.ApiBounds` (inherited)."""

    data_dir: Path | None = None
    """Where sessions are stored; None keeps them in memory only (tests)."""
    command_path: str | None = None
    """The claude binary (``--command-path``, as in the original)."""
    codex_path: str | None = None
    gemini_path: str | None = None
    max_sessions: int = SESSION_BOUNDS.max_sessions
    """`SessionBounds.max_sessions`, as ``--max-sessions`` sets it."""
    allowed_root: Path | None = None
    max_prompt_bytes: int = SESSION_BOUNDS.max_prompt_bytes
    """`SessionBounds.max_prompt_bytes`, as ``--max-prompt-bytes`` sets it."""
    command_port: int = 0
    """The loopback port of the API (0: any free port)."""
    token: str | None = None
    """When set (arpc sets its client id), every request must carry it: as the relay routes,
    in ``?token=``, ``X-ARP-Token``, the ``arp_token`` cookie or the Host's first label. The
    API then answers no other local user and no DNS-rebinding page (401 otherwise)."""
    other_tokens: tuple[str, ...] = ()
    """Further tokens accepted like `token` (arpc's access tokens after the first)."""
    session_overrides: dict[str, Any] = field(default_factory=dict)
    """Further `SessionConfig` fields (tests shorten the cancel grace periods with it)."""

    def binaries(self) -> dict[str, str | None]:
        return {"claude": self.command_path, "codex": self.codex_path, "gemini": self.gemini_path}

    def session_config(self) -> SessionConfig:
        # Here, not at the top: arpc's flags (`add_command_arguments`) load without it.
        from arp.agents.session_types import SessionConfig

        return SessionConfig(
            data_dir=self.data_dir,
            binaries=self.binaries(),
            max_sessions=self.max_sessions,
            allowed_root=self.allowed_root,
            max_prompt_bytes=self.max_prompt_bytes,
            **self.session_overrides,
        )

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> CommandConfig:
        """From the namespace `add_command_arguments` filled."""
        data_dir = ns.data_dir if ns.data_dir is not None else default_data_dir()
        return cls(
            data_dir=Path(data_dir).expanduser(),
            command_path=ns.command_path,
            codex_path=ns.codex_path,
            gemini_path=ns.gemini_path,
            max_sessions=ns.max_sessions,
            allowed_root=Path(ns.allowed_root).expanduser() if ns.allowed_root else None,
            max_prompt_bytes=ns.max_prompt_bytes,
            command_port=ns.command_port,
        )


def _folder(text: str) -> str:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return str(path)


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds command mode's flags to arpc's parser (a group of its own)."""
    group = parser.add_argument_group("command mode")
    group.add_argument(
        "--data-dir",
        help="where sessions and their output are kept (default: the platform's data "
        f"folder, {default_data_dir()})",
    )
    group.add_argument(
        "--command-path",
        help="the claude binary (default: claude on PATH, ~/.claude/local/claude, npm's bin)",
    )
    group.add_argument("--codex-path", help="the codex binary (default: codex on PATH, npm's bin)")
    group.add_argument(
        "--gemini-path", help="the gemini binary (default: gemini on PATH, npm's bin)"
    )
    group.add_argument(
        "--max-sessions",
        type=positive_int,
        default=SESSION_BOUNDS.max_sessions,
        help="agent runs at once; more get 429 (default %(default)s)",
    )
    group.add_argument(
        "--allowed-root",
        type=_folder,
        help="project paths must lie under this folder (403 otherwise; default: any)",
    )
    group.add_argument(
        "--max-prompt-bytes",
        type=positive_int,
        default=SESSION_BOUNDS.max_prompt_bytes,
        help="the largest prompt, in bytes; larger gets 413 (default %(default)s)",
    )
    group.add_argument(
        "--command-port",
        type=port,
        default=0,
        help="also serve the API on this loopback port for local use (default: any free port)",
    )


__all__ = [
    "CommandConfig",
    "add_command_arguments",
    "default_data_dir",
]
