"""A private HOME where the three real CLIs find their configuration, pointed at the mock API."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PREFIX = Path(os.environ.get("ARP_AGENT_CLIS_PREFIX", str(REPO / ".cache" / "agent-clis")))
BIN = PREFIX / "node_modules" / ".bin"
CLIS = ("claude", "codex", "gemini")

# What each CLI is given as its API key; the mock checks it comes back in the right header.
KEYS: Mapping[str, str] = {
    "claude": "mock-anthropic-key",
    "codex": "mock-openai-key",
    "gemini": "mock-gemini-key",
}
CODEX_PROVIDER = "arpmock"
CODEX_KEY_VARIABLE = "ARP_MOCK_OPENAI_KEY"


@dataclass(frozen=True)
class AgentHome:
    """A private HOME with every CLI pointed at the mock: the child environment to add."""

    home: Path
    env: dict[str, str]


def make_agent_home(home: Path, base_url: str) -> AgentHome:
    """Writes the three CLIs' configuration under ``home`` and returns the variables to set.

    Everything that would reach outside loopback is switched off (docs/real-cli-notes.md says
    what each setting stops: Gemini's usage statistics, Codex's plugin sync, updates).
    """
    for folder in (".config", ".cache", ".local/share", ".local/state", "tmp"):
        (home / folder).mkdir(parents=True, exist_ok=True)

    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "mock-model"\n'
        f'model_provider = "{CODEX_PROVIDER}"\n'
        "check_for_update_on_startup = false\n"
        f"[model_providers.{CODEX_PROVIDER}]\n"
        'name = "ARP mock"\n'
        f'base_url = "{base_url}/v1"\n'
        'wire_api = "responses"\n'
        f'env_key = "{CODEX_KEY_VARIABLE}"\n'
        "[features]\n"
        "plugins = false\n"
        "remote_plugin = false\n"
        "apps = false\n"
        "in_app_updates = false\n"
        "[analytics]\n"
        "enabled = false\n",
        encoding="utf-8",
    )

    gemini_dir = home / ".gemini"
    gemini_dir.mkdir(parents=True, exist_ok=True)
    (gemini_dir / "settings.json").write_text(
        json.dumps(
            {
                "security": {"auth": {"selectedType": "gemini-api-key"}},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
                "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
            }
        ),
        encoding="utf-8",
    )

    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        # Gemini writes its error reports to the temp folder: keep them in the test's tree.
        "TMPDIR": str(home / "tmp"),
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
        # Claude Code
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": KEYS["claude"],
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # Codex
        "CODEX_HOME": str(codex_home),
        CODEX_KEY_VARIABLE: KEYS["codex"],
        # Gemini CLI
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": KEYS["gemini"],
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }
    return AgentHome(home, env)
