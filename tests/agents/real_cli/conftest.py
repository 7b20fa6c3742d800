"""Fixtures of the real-CLI tier: the installed CLIs, a private HOME, the mock model API.

The tier is opt-in: its CLI tests run only with ``ARP_REAL_CLI=1`` (``.ci/run`` sets it after
``scripts/install-agent-clis.sh``). Once opted in, a CLI that is not installed fails the test;
it is never skipped quietly.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from arp.agents.sessions import SessionConfig, SessionManager
from tests.agents.real_cli.mock_models import MockModelApi
from tests.conftest import units

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


@pytest.fixture(scope="session")
def cli_binaries() -> dict[str, str]:
    """Each CLI's installed binary; a missing one fails with what to run."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in CLIS:
        path = BIN / name
        if path.exists() and os.access(path, os.X_OK):
            found[name] = str(path)
        else:
            missing.append(str(path))
    if missing:
        pytest.fail(
            "ARP_REAL_CLI=1 but the agent CLIs are not installed (missing: "
            + ", ".join(missing)
            + "); run scripts/install-agent-clis.sh"
        )
    return found


@pytest.fixture
async def mock_api() -> AsyncIterator[MockModelApi]:
    async with MockModelApi() as api:
        yield api


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


@pytest.fixture
def agent_home(tmp_path: Path, mock_api: MockModelApi) -> AgentHome:
    return make_agent_home(tmp_path / "home", mock_api.base_url)


@pytest.fixture
async def manager(
    tmp_path: Path, cli_binaries: dict[str, str], agent_home: AgentHome
) -> AsyncIterator[SessionManager]:
    config = SessionConfig(
        data_dir=tmp_path / "data",
        binaries=cli_binaries,
        extra_env=agent_home.env,
        sigint_grace=units(3),
        sigterm_grace=units(3),
        kill_wait=units(5),
        idle_tick=units(1),
    )
    async with SessionManager(config) as sessions:
        yield sessions
