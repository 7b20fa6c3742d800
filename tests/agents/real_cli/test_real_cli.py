"""The real Claude Code, Codex and Gemini CLIs, run by the session manager against the mock API.

Opt-in: set ``ARP_REAL_CLI=1`` after ``scripts/install-agent-clis.sh``. Each CLI is driven the way
command mode drives it (`SessionManager`, the executors table, its parser): a first run that makes
one real tool call and answers with what the tool read, a follow-up that must resume the same
conversation, and a cancel while the CLI waits on its model.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from arp.agents.events import Event
from arp.agents.history import HistoryReaders
from arp.agents.sessions import Session, SessionManager, StartRequest
from tests.agents.real_cli.agent_home import KEYS, AgentHome
from tests.agents.real_cli.mock_models import HOLD, WRITTEN, MockModelApi, RecordedRequest
from tests.conftest import units

pytestmark = pytest.mark.skipif(
    os.environ.get("ARP_REAL_CLI") != "1",
    reason="real agent CLI tier is opt-in: run scripts/install-agent-clis.sh, set ARP_REAL_CLI=1",
)


@dataclass(frozen=True)
class Cli:
    """What differs between the CLIs, as far as these tests look."""

    name: str
    model: str | None
    """Passed as the session's model (None: the CLI's own default)."""
    model_call: str
    """A path part of the CLI's streaming model request."""
    tool_name: str
    """The normalised tool_call's name when the CLI reads a file."""
    init_type: str
    """The raw ``type`` of the CLI's event that names its conversation id."""
    init_id_field: str
    tool_result_has_output: bool
    """Whether the CLI's stream carries the tool's output (Gemini's read_file gives "")."""

    def auth_ok(self, request: RecordedRequest) -> bool:
        key = KEYS[self.name]
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.name == "claude":
            return headers.get("x-api-key") == key
        if self.name == "codex":
            return headers.get("authorization") == f"Bearer {key}"
        return headers.get("x-goog-api-key") == key


CLIS = [
    Cli("claude", "claude-sonnet-4-5", "/v1/messages", "Read", "system", "session_id", True),
    Cli("codex", "gpt-5-codex", "/v1/responses", "command_execution", "thread.started",
        "thread_id", True),
    # No model: Gemini's default ("auto") routes each prompt with a :generateContent call first.
    Cli("gemini", None, ":streamGenerateContent", "read_file", "init", "session_id", False),
]  # fmt: skip


async def collect(manager: SessionManager, session_id: str, after: int = 0) -> list[Event]:
    """Every event of the session's current run, live, until it ends (bounded in time)."""
    events: list[Event] = []
    async with asyncio.timeout(units(90)):
        async for event in manager.follow(session_id, after_seq=after):
            events.append(event)
    return events


async def finished(manager: SessionManager, session_id: str) -> Session:
    session = await manager.wait(session_id, timeout=units(30))
    assert session.status != "running", "the run did not end in time"
    return session


def describe(events: list[Event]) -> str:
    """The events in short, for assertion messages."""
    return "\n".join(
        f"{e.seq} run{e.run} {e.kind}: {(e.text or e.tool_name or '')[:160]!r}" for e in events
    )


def texts(events: list[Event], run: int) -> str:
    return "".join(e.text or "" for e in events if e.kind == "text" and e.run == run)


@pytest.mark.parametrize("cli", CLIS, ids=[c.name for c in CLIS])
async def test_tool_round_trip_then_resume(
    cli: Cli,
    manager: SessionManager,
    mock_api: MockModelApi,
    agent_home: AgentHome,
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    token = f"token-{secrets.token_hex(6)}"
    notes = project / "notes.txt"
    notes.write_text(f"the secret word is {token}\n", encoding="utf-8")

    started = await manager.start_session(
        StartRequest(
            executor=cli.name,
            prompt=f"ASK-first READ-FILE:{notes}",
            project_path=str(project),
            model=cli.model,
        )
    )
    assert started.status == "running"
    events = await collect(manager, started.session_id)
    session = await finished(manager, started.session_id)
    story = describe(events)
    assert session.status == "completed", f"{session.error}\n{story}"
    assert session.exit_code == 0

    # The conversation id: the one the CLI's own first event names, kept by the session.
    inits = [e for e in events if isinstance(e.raw, dict) and e.raw.get("type") == cli.init_type]
    assert inits, story
    agent_id = inits[0].raw[cli.init_id_field]
    assert agent_id and session.agent_session_id == agent_id
    assert inits[0].agent_session_id == agent_id

    # One real tool call that read the file, its result, and an answer quoting what it read.
    calls = [e for e in events if e.kind == "tool_call"]
    assert [c.tool_name for c in calls] == [cli.tool_name], story
    assert str(notes) in json.dumps(calls[0].tool_input)
    results = [e for e in events if e.kind == "tool_result"]
    assert len(results) == 1 and not results[0].is_error, story
    assert results[0].tool_id == calls[0].tool_id
    if cli.tool_result_has_output:
        assert token in (results[0].text or ""), story
    answer = texts(events, run=0)
    assert "TOOL-RESULT-SEEN" in answer and token in answer, story
    final = [e for e in events if e.kind == "result"]
    assert final and not final[-1].is_error, story
    assert session.usage.input_tokens and session.usage.input_tokens > 0

    # The mock saw the CLI's real requests: the right key, the model asked for, two turns.
    model_calls = mock_api.calls(cli.model_call)
    assert len(model_calls) == 2, [r.path for r in mock_api.requests]
    assert all(cli.auth_ok(r) for r in model_calls)
    if cli.model is not None:
        assert cli.model in json.dumps(model_calls[0].body)[:200] or cli.model in (
            model_calls[0].path
        )
    if cli.name == "gemini":
        first = [r.path for r in mock_api.requests if r.method == "POST"]
        assert first[0].endswith(":generateContent"), first
        assert model_calls[0].query == "alt=sse"

    # A follow-up resumes the same conversation: the CLI sends the first turn back to the model.
    seen = mock_api.requests[:]
    await manager.send_message(started.session_id, "ASK-second and then?")
    more = await collect(manager, started.session_id, after=events[-1].seq)
    resumed = await finished(manager, started.session_id)
    story = describe(more)
    assert resumed.status == "completed", f"{resumed.error}\n{story}"
    assert resumed.runs == 2
    assert resumed.agent_session_id == agent_id, story
    assert [e.seq for e in more] == list(range(events[-1].seq + 1, events[-1].seq + 1 + len(more)))
    assert all(e.run == 1 for e in more)
    reply = texts(more, run=1)
    assert "MOCK-REPLY to ASK-second; history: ASK-first,ASK-second" in reply, story
    new_calls = [r for r in mock_api.requests[len(seen) :] if cli.model_call in r.path]
    assert new_calls and token in json.dumps(new_calls[-1].body), "the history lacks the tool turn"

    # The history readers find the conversation the real CLI stored, both turns of it.
    readers = HistoryReaders.from_env(agent_home.env, home=agent_home.home)
    summary = await asyncio.to_thread(readers.session, cli.name, agent_id)
    assert summary.project_path == str(project.resolve())
    messages = await asyncio.to_thread(readers.all_messages, cli.name, agent_id)
    said = [m.text for m in messages if m.role == "user" and m.kind == "text"]
    assert any("ASK-first" in t for t in said) and any("ASK-second" in t for t in said), said
    uses = [m for m in messages if m.kind == "tool_use"]
    assert len(uses) == 1 and str(notes) in json.dumps(uses[0].tool_input), uses
    tool_results = [m for m in messages if m.kind == "tool_result"]
    assert len(tool_results) == 1 and token in tool_results[0].text, tool_results
    answers = " ".join(m.text for m in messages if m.role == "assistant" and m.kind == "text")
    assert "TOOL-RESULT-SEEN" in answers and "history: ASK-first,ASK-second" in answers


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("cli", CLIS, ids=[c.name for c in CLIS])
async def test_cancel_while_waiting_on_the_model(
    cli: Cli, manager: SessionManager, mock_api: MockModelApi, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    started = await manager.start_session(
        StartRequest(executor=cli.name, prompt=f"ASK-hold {HOLD}", project_path=str(project))
    )
    async with asyncio.timeout(units(60)):
        while not mock_api.calls(cli.model_call):
            await asyncio.sleep(units(0.05))
    running = manager.get(started.session_id)
    assert running.status == "running" and running.pid is not None

    began = time.monotonic()
    session = await manager.cancel(started.session_id)
    took = time.monotonic() - began
    events = manager.events_after(started.session_id, 0)
    assert session.status == "cancelled", describe(events)
    assert session.pid is None
    assert not group_alive(running.pid), "the CLI's process group outlived the cancel"
    # SIGINT is enough for every CLI: no need to climb to SIGTERM/SIGKILL.
    assert took < units(3), f"{cli.name} took {took:.1f}s to stop on SIGINT"
    assert events[-1].kind == "status" and events[-1].status == "cancelled"


@pytest.mark.parametrize("cli", CLIS, ids=[c.name for c in CLIS])
async def test_default_permission_refuses_edits(
    cli: Cli, manager: SessionManager, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    target = project / "refused.txt"
    started = await manager.start_session(
        StartRequest(
            executor=cli.name, prompt=f"ASK-w WRITE-FILE:{target}", project_path=str(project)
        )
    )
    events = await collect(manager, started.session_id)
    session = await finished(manager, started.session_id)
    story = describe(events)
    # The run itself succeeds: the agent was told no and answered with that.
    assert session.status == "completed", f"{session.error}\n{story}"
    assert not target.exists()
    if cli.name == "codex":
        # The sandbox refuses the write; Codex shows no command item for it, only the answer.
        assert "Read-only file system" in texts(events, run=0), story
    else:
        refused = [e for e in events if e.kind == "tool_result"]
        assert len(refused) == 1 and refused[0].is_error, story
    if cli.name == "claude":
        result = next(e for e in events if e.kind == "result")
        assert isinstance(result.raw, dict) and result.raw["permission_denials"], story


@pytest.mark.parametrize("cli", CLIS, ids=[c.name for c in CLIS])
async def test_accept_edits_holds_across_a_follow_up(
    cli: Cli, manager: SessionManager, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    first, second = project / "first.txt", project / "second.txt"
    started = await manager.start_session(
        StartRequest(
            executor=cli.name,
            prompt=f"ASK-w1 WRITE-FILE:{first}",
            project_path=str(project),
            permission_mode="acceptEdits",
        )
    )
    events = await collect(manager, started.session_id)
    session = await finished(manager, started.session_id)
    assert session.status == "completed", f"{session.error}\n{describe(events)}"
    assert first.read_text(encoding="utf-8") == WRITTEN, describe(events)

    await manager.send_message(started.session_id, f"ASK-w2 WRITE-FILE:{second}")
    more = await collect(manager, started.session_id, after=events[-1].seq)
    resumed = await finished(manager, started.session_id)
    assert resumed.status == "completed", f"{resumed.error}\n{describe(more)}"
    assert second.exists(), f"the follow-up could not edit:\n{describe(more)}"
    assert second.read_text(encoding="utf-8") == WRITTEN
