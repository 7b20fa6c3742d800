"""``permissionMode: "ask"`` with the real CLIs: a person decides each tool use (issue 15).

The mock model asks for ``RUN_SHELL[touch <file>]``; the CLI asks ARP before running it; the
test decides through `SessionManager.decide` as the HTTP API, MCP and remote faces do. Deny: no
file, the agent is told, the run completes. Allow: the file exists and the tool's output comes
back. No decision: denied when the deadline passes. Cancel while pending: cancelled, nothing
runs. Opt-in like the rest of the tier (``ARP_REAL_CLI=1``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arp.agents.approvals import Approval
from arp.agents.events import Event
from arp.agents.sessions import Session, SessionConfig, SessionManager, StartRequest
from tests.agents.real_cli.agent_home import AgentHome
from tests.agents.real_cli.test_real_cli import describe, finished, group_alive
from tests.conftest import units

pytestmark = pytest.mark.skipif(
    os.environ.get("ARP_REAL_CLI") != "1",
    reason="real agent CLI tier is opt-in: run scripts/install-agent-clis.sh, set ARP_REAL_CLI=1",
)

ASKING = ["claude", "codex", "gemini"]
"""The CLIs whose ask route is built (issue 15 lists Gemini's ACP and Codex's app-server next)."""
SHELL_TOOL = {"claude": "Bash", "codex": "command_execution", "gemini": "run_shell_command"}
TOLD = {"claude": "not this time", "codex": "rejected by user", "gemini": "canceled by the user"}
"""What the agent says it was told on a deny: Claude gets the person's message as the tool's
result; ACP and Codex's app-server carry no message: Gemini tells its model the user cancelled
the tool, Codex that the user rejected the command."""


@pytest.fixture
async def asking(
    tmp_path: Path, cli_binaries: dict[str, str], agent_home: AgentHome
) -> AsyncIterator[SessionManager]:
    """A manager whose approvals time out in a few seconds (the timeout test waits for it)."""
    config = SessionConfig(
        data_dir=tmp_path / "data",
        binaries=cli_binaries,
        extra_env=agent_home.env,
        sigint_grace=units(3),
        sigterm_grace=units(3),
        kill_wait=units(5),
        idle_tick=units(1),
        approval_timeout=units(4),
    )
    async with SessionManager(config) as sessions:
        yield sessions


async def start_touch(manager: SessionManager, cli: str, tmp_path: Path) -> tuple[Session, Path]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    target = project / "touched.txt"
    session = await manager.start_session(
        StartRequest(
            executor=cli,
            prompt=f"ASK-t RUN_SHELL[touch {target}]",
            project_path=str(project),
            permission_mode="ask",
        )
    )
    return session, target


async def pending(manager: SessionManager, session_id: str, timeout: float = 60) -> Approval:
    """The session's first pending approval, once the CLI asked (bounded in time)."""
    async with asyncio.timeout(units(timeout)):
        while True:
            waiting = [a for a in manager.approvals() if a.session_id == session_id]
            if waiting:
                return waiting[0]
            state = manager.get(session_id)
            assert state.status == "running", describe(manager.events_after(session_id))
            await asyncio.sleep(units(0.05))


async def collect(
    manager: SessionManager, session_id: str, after: int = 0, timeout: float = 90
) -> list[Event]:
    """Every event of the run, live, until it ends; on a timeout the failure tells the story."""
    events: list[Event] = []
    try:
        async with asyncio.timeout(units(timeout)):
            async for event in manager.follow(session_id, after_seq=after):
                events.append(event)
    except TimeoutError:
        stderr = [e.text for e in manager.events_after(session_id, 0, 10_000) if e.kind == "stderr"]
        pytest.fail(f"the run did not end:\n{describe(events)}\nstderr: {stderr[-20:]}")
    return events


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


@pytest.mark.parametrize("cli", ASKING)
async def test_deny_then_allow_in_a_follow_up(
    cli: str, asking: SessionManager, tmp_path: Path
) -> None:
    manager = asking
    session, target = await start_touch(manager, cli, tmp_path)
    approval = await pending(manager, session.session_id)
    assert approval.tool_name == SHELL_TOOL[cli]
    assert str(target) in approval.title and "touch" in str(approval.tool_input)
    shown = manager.get(session.session_id).to_json()["pending_approvals"]
    assert [a["approval_id"] for a in shown] == [approval.approval_id]

    manager.decide(session.session_id, approval.approval_id, "deny", message="not this time")
    events = await collect(manager, session.session_id)
    final = await finished(manager, session.session_id)
    story = describe(events)
    assert final.status == "completed", f"{final.error}\n{story}"
    assert not target.exists(), story
    assert final.pending_approvals == ()
    request = kinds(events, "approval_request")
    decision = kinds(events, "approval_decision")
    assert len(request) == 1 and len(decision) == 1, story
    assert decision[0].approval == {
        "approval_id": approval.approval_id,
        "decision": "deny",
        "by": "person",
        "message": "not this time",
        "remember": None,
    }
    told = "".join(e.text or "" for e in events if e.kind in ("tool_result", "text"))
    assert TOLD[cli] in told, story
    if cli == "claude":
        results = kinds(events, "tool_result")
        assert results and results[0].is_error, story

    # A follow-up in ask mode asks again; this time the person allows it.
    last = events[-1].seq
    await manager.send_message(session.session_id, f"ASK-u RUN_SHELL[touch {target}]")
    # Gemini's follow-up within its conversation's first minute waits that minute out
    # (GeminiAcp.start_delay) before the CLI starts and asks.
    again = await pending(manager, session.session_id, timeout=200)
    assert again.approval_id != approval.approval_id
    manager.decide(session.session_id, again.approval_id, "allow")
    more = await collect(manager, session.session_id, last, timeout=200)
    resumed = await finished(manager, session.session_id)
    story = describe(more)
    assert resumed.status == "completed" and resumed.runs == 2, f"{resumed.error}\n{story}"
    assert resumed.agent_session_id == final.agent_session_id
    assert target.exists(), story
    results = kinds(more, "tool_result")
    assert results and not results[0].is_error, story
    assert "TOOL-RESULT-SEEN" in "".join(e.text or "" for e in kinds(more, "text")), story


@pytest.mark.parametrize("cli", ASKING)
async def test_undecided_is_denied_at_the_deadline(
    cli: str, asking: SessionManager, tmp_path: Path
) -> None:
    manager = asking
    session, target = await start_touch(manager, cli, tmp_path)
    approval = await pending(manager, session.session_id)
    events = await collect(manager, session.session_id)  # ends once the timeout let it go on
    final = await finished(manager, session.session_id)
    story = describe(events)
    assert final.status == "completed", f"{final.error}\n{story}"
    assert not target.exists(), story
    decision = kinds(events, "approval_decision")
    assert [(d.approval or {}).get("by") for d in decision] == ["timeout"], story
    assert (decision[0].approval or {}).get("message") == "timed out"
    with pytest.raises(Exception) as late:
        manager.decide(session.session_id, approval.approval_id, "allow")
    assert getattr(late.value, "status", None) == 409


@pytest.mark.parametrize("cli", ASKING)
async def test_cancel_while_pending(cli: str, asking: SessionManager, tmp_path: Path) -> None:
    manager = asking
    session, target = await start_touch(manager, cli, tmp_path)
    approval = await pending(manager, session.session_id)
    running = manager.get(session.session_id)
    assert running.pid is not None
    cancelled = await manager.cancel(session.session_id)
    events = manager.events_after(session.session_id, 0)
    story = describe(events)
    assert cancelled.status == "cancelled", story
    assert cancelled.pending_approvals == () and manager.approvals() == []
    assert not target.exists(), story
    assert not group_alive(running.pid)
    decision = kinds(events, "approval_decision")
    assert [(d.approval or {}).get("by") for d in decision] == ["cancel"], story
    assert (decision[0].approval or {}).get("approval_id") == approval.approval_id
    assert events[-1].kind == "status" and events[-1].status == "cancelled"
