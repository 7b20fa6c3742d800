"""The real CLIs through command mode's HTTP API: start, SSE to the end, a follow-up, and the
history API reading what the CLI stored. Opt-in like the rest of the tier (``ARP_REAL_CLI=1``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionManager
from arp.command.config import CommandConfig
from arp.command.server import CommandServer
from tests.agents.real_cli.agent_home import AgentHome
from tests.command.sessions_support import post_json, run_to_end, start
from tests.conftest import units

pytestmark = pytest.mark.skipif(
    os.environ.get("ARP_REAL_CLI") != "1",
    reason="real agent CLI tier is opt-in: run scripts/install-agent-clis.sh, set ARP_REAL_CLI=1",
)


@pytest.fixture
async def http(
    manager: SessionManager, agent_home: AgentHome
) -> AsyncIterator[aiohttp.ClientSession]:
    history = HistoryReaders.from_env(agent_home.env, home=agent_home.home)
    config = CommandConfig(shutdown_timeout=units(5))
    async with (
        CommandServer(config, manager=manager, history=history) as server,
        aiohttp.ClientSession(base_url=server.url) as client,
    ):
        yield client


# The executor names as the original's clients spell them.
@pytest.mark.parametrize("executor", ["Claude", "Codex", "Gemini"])
async def test_start_stream_follow_up_and_history_over_http(
    executor: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    session = await start(
        http, executor=executor, prompt="ASK-api1 hello", projectPath=str(project)
    )
    assert session["status"] == "running" and session["executor"] == executor.lower()
    sid = session["session_id"]

    events, final = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    agent_id = final["agent_session_id"]
    assert agent_id
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    said = "".join(e.get("text", "") for e in events if e["kind"] == "text")
    assert "MOCK-REPLY to ASK-api1; history: ASK-api1" in said, events

    status, resumed = await post_json(http, f"/api/sessions/{sid}/messages", {"prompt": "ASK-api2"})
    assert status == 200 and resumed["status"] == "running", resumed
    more, final = await run_to_end(http, sid, after=events[-1]["seq"])
    assert final["status"] == "completed" and final["runs"] == 2, final
    assert final["agent_session_id"] == agent_id
    said = "".join(e.get("text", "") for e in more if e["kind"] == "text")
    assert "MOCK-REPLY to ASK-api2; history: ASK-api1,ASK-api2" in said, more

    async with http.get(f"/api/{executor.lower()}/sessions/{agent_id}") as response:
        page = await response.json()
        assert response.status == 200, page
    texts = [m["text"] for m in page["messages"] if m["kind"] == "text"]
    assert any("ASK-api1" in t for t in texts) and any("ASK-api2" in t for t in texts), texts
