"""The session manager used directly (as the MCP, TCP and console adapters use it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arp.agents.errors import Conflict, ManagerClosed, SessionNotFound, TooManySessions
from arp.agents.sessions import SessionConfig, SessionManager, StartRequest
from tests.conftest import units
from tests.fakes.install import install_fakes


def config(tmp_path: Path, **changes: object) -> SessionConfig:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "binaries": install_fakes(tmp_path / "bin"),
        "sigint_grace": units(1),
        "sigterm_grace": units(1),
        "kill_wait": units(3),
        "idle_tick": units(0.2),
    }
    values.update(changes)
    return SessionConfig(**values)  # type: ignore[arg-type]


async def test_follow_wait_and_events(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(StartRequest("claude", "events=3"))
        assert session.running
        kinds = [event.kind async for event in manager.follow(session.session_id)]
        final = await manager.wait(session.session_id, units(5))
        assert final.status == "completed"
        assert kinds[0] == "prompt" and kinds[-1] == "status"
        assert kinds.count("text") == 3
        events = manager.events_after(session.session_id, 2, limit=2)
        assert [e.seq for e in events] == [3, 4]
        assert final.usage.cost_usd == pytest.approx(0.0125)
        assert manager.list() == [final]
        assert manager.get(session.session_id) == final


async def test_follow_sends_keepalive_batches_while_silent(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest("gemini", f"events=1 sleep={units(0.8)}")
        )
        empties = 0
        async for batch in manager.follow_lines(session.session_id):
            if not batch:
                empties += 1
        assert empties >= 1


async def test_memory_only_manager(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path, data_dir=None)) as manager:
        session = await manager.start_session(StartRequest("codex", "events=2"))
        final = await manager.wait(session.session_id, units(5))
        assert final.status == "completed"
        assert final.agent_session_id
        assert not (tmp_path / "data").exists()


async def test_close_interrupts_running_sessions(tmp_path: Path) -> None:
    manager = SessionManager(config(tmp_path))
    await manager.start()
    session = await manager.start_session(
        StartRequest("claude", f"events=1000 sleep={units(0.05)}")
    )
    await asyncio.sleep(units(0.2))
    await manager.close()
    await manager.close()  # idempotent
    await manager.wait_closed()
    assert manager.get(session.session_id).status == "interrupted"
    with pytest.raises(ManagerClosed):
        await manager.start_session(StartRequest("claude", "x"))


async def test_errors(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path, max_sessions=1)) as manager:
        with pytest.raises(SessionNotFound):
            manager.get("nope")
        slow = await manager.start_session(
            StartRequest("claude", f"events=1000 sleep={units(0.05)}")
        )
        with pytest.raises(TooManySessions):
            await manager.start_session(StartRequest("claude", "x"))
        with pytest.raises(Conflict):
            await manager.send_message(slow.session_id, "x")
        cancelled = await manager.cancel(slow.session_id)
        assert cancelled.status == "cancelled"
        await manager.delete(slow.session_id)
        with pytest.raises(SessionNotFound):
            manager.events_after(slow.session_id)


def test_start_request_from_json_accepts_both_spellings() -> None:
    a = StartRequest.from_json(
        {
            "executor": "Claude",
            "prompt": "p",
            "projectPath": "/x",
            "permissionMode": "plan",
            "allowedTools": "Read, Bash",
            "maxTurns": 2,
            "useTools": False,
            "agentSessionId": "s-1",
        }
    )
    b = StartRequest.from_json(
        {
            "executor": "Claude",
            "prompt": "p",
            "project_path": "/x",
            "permission_mode": "plan",
            "allowed_tools": ["Read", "Bash"],
            "max_turns": 2,
            "no_tools": True,
            "resume": "s-1",
        }
    )
    assert a == b
    assert a.allowed_tools == ("Read", "Bash") and a.no_tools and a.resume_id == "s-1"


async def test_one_page_of_state_and_events(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path, max_page_events=3, page_events=2)) as manager:
        session = await manager.start_session(StartRequest("claude", "events=3"))
        final = await manager.wait(session.session_id, units(5))
        sid = session.session_id
        first = manager.page(sid)  # the default size
        assert [seq for seq, _ in first.lines] == [1, 2]
        assert first.session == final and first.next_after == 2 and first.has_more
        assert [e.seq for e in first.events()] == [1, 2]
        assert len(manager.page(sid, 0, 100).lines) == 3  # held to max_page_events
        empty = manager.page(sid, 1, 0)
        assert empty.lines == () and empty.next_after == 1 and empty.has_more
        last = manager.page(sid, final.last_seq - 1, 10)
        assert last.next_after == final.last_seq and not last.has_more
        beyond = manager.page(sid, final.last_seq + 5, 10)
        assert beyond.lines == () and not beyond.has_more
        body = first.to_json()
        assert set(body) == {"session", "events", "next_after_seq", "has_more"}
        assert [e["seq"] for e in body["events"]] == [1, 2] and "raw" not in body["events"][0]
        small = first.to_json(max_chars=1)  # at least one event, then it says there is more
        assert [e["seq"] for e in small["events"]] == [1]
        assert small["next_after_seq"] == 1 and small["has_more"]


async def test_a_follow_up_held_before_its_start_is_cancelled_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ask protocol may hold a follow-up before the CLI starts (Gemini's session/load rule):
    a cancel meanwhile ends it at once, and no child is started."""
    from arp.agents.ask import ClaudeAsk

    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest("claude", "events=1", permission_mode="ask")
        )
        first = await manager.wait(session.session_id, units(10))
        assert first.status == "completed", first.error
        monkeypatch.setattr(ClaudeAsk, "start_delay", lambda self, started, now: 600.0)
        held = await manager.send_message(session.session_id, "events=1")
        assert held.status == "running"
        async with asyncio.timeout(units(5)):
            while not any(
                e.kind == "system" and "waiting" in (e.text or "")
                for e in manager.events_after(session.session_id, 0)
            ):
                await asyncio.sleep(0.01)
        cancelled = await asyncio.wait_for(manager.cancel(session.session_id), units(3))
        assert cancelled.status == "cancelled" and cancelled.runs == 2
        assert cancelled.exit_code is None  # the CLI never started
