"""The approval desk's deadline timer (the loop side of agents/approvals.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from arp.agents import desk as desk_module
from arp.agents.ask import PermissionAsk
from arp.agents.desk import ApprovalDesk
from arp.agents.eventlog import EventLog
from arp.agents.events import Draft
from arp.agents.executors import EXECUTORS
from arp.agents.records import RunRecord, SessionRecord
from arp.agents.session_types import StartRequest
from tests.conftest import units


class Answers:
    """A stand-in protocol: records the decisions the desk gives the CLI."""

    def __init__(self) -> None:
        self.given: list[str] = []

    def answer(self, ask: PermissionAsk, decision: str, message: str | None) -> list[bytes]:
        self.given.append(decision)
        return []


async def test_a_timer_that_fires_before_the_wall_clock_deadline_is_rearmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's timer and the wall clock disagree by a little: the first firing finds the
    approval not yet due. It must be denied at the next one, never left pending for ever."""
    lag = 0.0
    monkeypatch.setattr(
        desk_module, "time", SimpleNamespace(time=lambda: time.time() - lag), raising=True
    )
    emitted: list[Draft] = []
    desk = ApprovalDesk(units(0.2), lambda entry, run, drafts: emitted.extend(drafts))
    record = SessionRecord(
        "s1", StartRequest("claude", "p"), EXECUTORS["claude"], str(tmp_path), None,
        EventLog(None), time.time(),
    )  # fmt: skip
    answers = Answers()
    run = RunRecord(0, answers)  # type: ignore[arg-type]
    desk.ask(record, run, PermissionAsk("k", "Bash", {"command": "x"}, "Bash: x"))
    assert [a.approval_id for a in desk.pending()]
    lag = units(0.1)  # from now on the wall clock reads behind the loop's
    async with asyncio.timeout(units(5)):
        while desk.pending():
            await asyncio.sleep(units(0.02))
    assert answers.given == ["deny"]
    decision = [d for d in emitted if d.kind == "approval_decision"]
    assert [(d.approval or {}).get("by") for d in decision] == ["timeout"]
    desk.close()
