"""Fixtures of the real-CLI tier: the installed CLIs, a private HOME, the mock model API.

The tier is opt-in: its CLI tests run only with ``ARP_REAL_CLI=1`` (``.ci/run`` sets it after
``scripts/install-agent-clis.sh``). Once opted in, a CLI that is not installed fails the test;
it is never skipped quietly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arp.agents.sessions import SessionConfig, SessionManager
from tests.agents.real_cli.agent_home import BIN, CLIS, AgentHome, make_agent_home
from tests.agents.real_cli.mock_models import MockModelApi
from tests.conftest import units


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
