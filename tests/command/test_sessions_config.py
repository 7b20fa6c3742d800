"""arpc's command-mode flags become a `CommandConfig` and a `SessionConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from arp.command.config import CommandConfig, add_command_arguments, default_data_dir


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arpc")
    add_command_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    config = CommandConfig.from_args(parse())
    assert config.data_dir == default_data_dir()
    assert config.binaries() == {"claude": None, "codex": None, "gemini": None}
    assert config.max_sessions >= 1 and config.command_port == 0
    sessions = config.session_config()
    assert sessions.data_dir == config.data_dir
    assert sessions.max_prompt_bytes == config.max_prompt_bytes


def test_every_flag(tmp_path: Path) -> None:
    config = CommandConfig.from_args(
        parse(
            "--data-dir",
            str(tmp_path / "d"),
            "--command-path",
            "/opt/claude",
            "--codex-path",
            "/opt/codex",
            "--gemini-path",
            "/opt/gemini",
            "--max-sessions",
            "3",
            "--allowed-root",
            str(tmp_path),
            "--max-prompt-bytes",
            "1000",
            "--command-port",
            "18080",
        )
    )
    assert config == CommandConfig(
        data_dir=tmp_path / "d",
        command_path="/opt/claude",
        codex_path="/opt/codex",
        gemini_path="/opt/gemini",
        max_sessions=3,
        allowed_root=tmp_path,
        max_prompt_bytes=1000,
        command_port=18080,
    )
    sessions = config.session_config()
    assert sessions.binaries == {
        "claude": "/opt/claude",
        "codex": "/opt/codex",
        "gemini": "/opt/gemini",
    }
    assert sessions.max_sessions == 3 and sessions.allowed_root == tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ("--max-sessions", "0"),
        ("--max-sessions", "many"),
        ("--allowed-root", "/no/such/folder"),
        ("--command-port", "70000"),
    ],
)
def test_bad_flags_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
