"""The executors table: command lines exactly as the CLIs document them, and binary lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arp.agents.argv import RunSpec
from arp.agents.errors import BadRequest
from arp.agents.executors import EXECUTORS, get_executor


def test_claude_command_line() -> None:
    claude = EXECUTORS["claude"]
    assert claude.build("claude", RunSpec(prompt="hi")) == [
        "claude",
        "-p",
        "hi",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    spec = RunSpec(
        prompt="hi",
        model="opus",
        resume_id="abc",
        permission_mode="plan",
        allowed_tools=("Read", "Bash(git:*)"),
        disallowed_tools=("Write",),
        no_tools=True,
        max_turns=3,
        append_system_prompt="be brief",
    )
    assert claude.build("/bin/claude", spec) == [
        "/bin/claude",
        "-p",
        "hi",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "opus",
        "--resume",
        "abc",
        "--permission-mode",
        "plan",
        "--tools",
        "",
        "--max-turns",
        "3",
        "--append-system-prompt",
        "be brief",
        "--disallowedTools",
        "Write",
        "--allowedTools",
        "Read",
        "Bash(git:*)",
    ]


def test_codex_command_lines() -> None:
    codex = EXECUTORS["codex"]
    spec = RunSpec(prompt="fix it", model="o4", project_path="/p", permission_mode="read-only")
    assert codex.build("codex", spec) == [
        "codex",
        "exec",
        "--json",
        "-m",
        "o4",
        "-C",
        "/p",
        "--skip-git-repo-check",
        "-s",
        "read-only",
        "fix it",
    ]
    assert codex.build("codex", RunSpec(prompt="more", resume_id="th-1")) == [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "resume",
        "th-1",
        "more",
    ]
    follow_up = RunSpec(prompt="more", resume_id="th-1", model="o4", permission_mode="w")
    assert codex.build("codex", follow_up) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-s", "w",
        "resume", "-m", "o4", "th-1", "more",
    ]  # fmt: skip


def test_gemini_command_line() -> None:
    gemini = EXECUTORS["gemini"]
    spec = RunSpec(prompt="q", model="flash", permission_mode="yolo", resume_id="g-1")
    assert gemini.build("gemini", spec) == [
        "gemini",
        "-p",
        "q",
        "--output-format",
        "stream-json",
        "-m",
        "flash",
        "--approval-mode",
        "yolo",
        "--resume",
        "g-1",
    ]


def test_names_and_permission_modes() -> None:
    assert get_executor("Claude").name == "claude"
    assert get_executor(" GEMINI ").name == "gemini"
    with pytest.raises(BadRequest, match="unknown executor 'cursor'; use one of: claude"):
        get_executor("cursor")
    assert EXECUTORS["codex"].permission_value("acceptEdits") == "workspace-write"
    assert EXECUTORS["codex"].permission_value("default") is None
    assert EXECUTORS["gemini"].permission_value("bypassPermissions") == "yolo"
    assert EXECUTORS["claude"].permission_value("ACCEPTEDITS") == "acceptEdits"
    with pytest.raises(BadRequest, match="not known to claude"):
        EXECUTORS["claude"].permission_value("yolo")


def test_options_table() -> None:
    assert "max_turns" in EXECUTORS["claude"].options
    assert "max_turns" not in EXECUTORS["codex"].options
    assert "allowed_tools" in EXECUTORS["gemini"].options
    assert [e.path_flag for e in EXECUTORS.values()] == [
        "--command-path",
        "--codex-path",
        "--gemini-path",
    ]


def test_find_binary_order_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".claude" / "local").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("NPM_CONFIG_PREFIX", raising=False)
    claude = EXECUTORS["claude"]
    local = home / ".claude" / "local" / "claude"
    system_wide = [
        p for p in claude.install_places if not p.startswith(("~", "$")) and os.path.exists(p)
    ]
    if not system_wide:  # a machine with a global claude install finds that one instead
        with pytest.raises(BadRequest) as caught:
            claude.find_binary(None)
        message = caught.value.message
        assert "claude on PATH" in message and "~/.claude/local/claude" in message
        assert "--command-path" in message
    local.write_text("#!/bin/sh\n")
    local.chmod(0o755)
    if not system_wide:
        assert claude.find_binary(None) == str(local)
    on_path = tmp_path / "empty"
    on_path.mkdir()
    (on_path / "claude").write_text("#!/bin/sh\n")
    (on_path / "claude").chmod(0o755)
    assert claude.find_binary(None) == str(on_path / "claude")
    assert claude.find_binary(str(local)) == str(local)
    with pytest.raises(BadRequest, match="--command-path /nope is not an executable file"):
        claude.find_binary("/nope")
    assert os.access(local, os.X_OK)


def test_a_prompt_is_never_read_as_an_option() -> None:
    for name in ("claude", "gemini"):
        argv = EXECUTORS[name].build(name, RunSpec(prompt="--help me"))
        assert argv[1:3] == ["-p", " --help me"]
    assert EXECUTORS["codex"].build("codex", RunSpec(prompt="-x"))[-1] == " -x"
    assert EXECUTORS["codex"].build("codex", RunSpec(prompt="-x", resume_id="t"))[-1] == " -x"
