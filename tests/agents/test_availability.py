"""Which agent CLIs arpc can run: found or not (with the install command), and their version."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from arp.agents.availability import INSTALL, AgentCatalog, login_advice, needs_login
from tests.conftest import units
from tests.fakes.install import install_fakes


@pytest.fixture
def only_claude_and_gemini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding the fake claude and gemini, no codex; no install place holds one either."""
    fakes = install_fakes(tmp_path / "all")
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("claude", "gemini"):
        shutil.copy2(fakes[name], folder / name)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NPM_CONFIG_PREFIX", str(tmp_path / "npm"))
    return folder


async def test_found_with_path_and_version_or_not_found_with_the_install_command(
    only_claude_and_gemini: Path,
) -> None:
    if any(Path(p).exists() for p in ("/usr/local/bin/codex", "/opt/homebrew/bin/codex")):
        pytest.skip("a real codex is installed in a system place")
    infos = {i.name: i for i in await AgentCatalog({}, units(10)).describe()}
    assert list(infos) == ["claude", "codex", "gemini"]
    claude = infos["claude"]
    assert claude.found and claude.path == str(only_claude_and_gemini / "claude")
    assert claude.version == "2.1.197 (Claude Code)"
    assert infos["gemini"].version == "0.61.0"
    codex = infos["codex"]
    assert not codex.found and codex.path is None and codex.version is None
    assert codex.install == INSTALL["codex"] == "npm install -g @openai/codex"
    assert "codex on PATH" in (codex.problem or "")
    assert codex.to_json()["found"] is False
    assert "not found; install it with `npm install -g @openai/codex`" in codex.line()
    assert claude.line() == f"🧰 claude: {claude.path} (2.1.197 (Claude Code))"


async def test_a_version_that_does_not_answer_in_time_is_unknown_not_a_hang(
    tmp_path: Path,
) -> None:
    slow = tmp_path / "claude"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(slow.stat().st_mode | stat.S_IXUSR)
    catalog = AgentCatalog({"claude": str(slow)}, 0.3)
    (claude, *_) = await catalog.describe()
    assert claude.found and claude.version is None
    assert "did not answer within 0.3 s" in (claude.problem or "")


async def test_a_flag_naming_a_missing_file_is_not_found(tmp_path: Path) -> None:
    catalog = AgentCatalog({"gemini": str(tmp_path / "nope")}, units(10))
    gemini = (await catalog.describe())[2]
    assert not gemini.found and "--gemini-path" in (gemini.problem or "")


def test_login_advice_is_said_once_and_only_for_login_failures() -> None:
    said = login_advice("claude", "Not logged in · Please run /login")
    assert said is not None and said.startswith("Claude is not logged in on this computer")
    assert login_advice("claude", said) == said  # a second pass adds nothing
    assert login_advice("claude", "claude exited with code 3") == "claude exited with code 3"
    assert login_advice("codex", None) is None
    assert needs_login("gemini", "Please set an Auth method in your ~/.gemini/settings.json")
    assert not needs_login("gemini", None)
