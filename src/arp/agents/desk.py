"""The approval desk: where a waiting agent's question meets a person's answer.

`arp.agents.approvals` holds the rules (pure); this is the part that lives in the event loop.
For each permission request an ``ask`` run's protocol reports (`arp.agents.ask.PermissionAsk`)
the desk records a pending approval, writes an ``approval_request`` event to the session, and
arms a timer at its deadline. Whichever comes first closes it, once:

- a person's decision (`decide`): the answer goes to the CLI at once;
- the deadline: denied, "timed out", and the CLI told so. One timer is armed for the nearest
  deadline and re-armed after each firing: a timer may fire a little before the wall clock says
  the deadline passed (loop and wall clocks differ; libuv rounds to milliseconds), and an
  approval it found not yet due must get another timer, not wait forever;
- the session's cancel, or the end of its run (`close_session`): denied; the CLI is about to be
  stopped (or has ended), so nothing is written to it.

Each closing writes an ``approval_decision`` event (``decision``, ``by``), so the session's
stream replays the whole exchange. A tool a person allowed with ``remember: "session"`` is
answered "allow" at once for the rest of that session, without a new approval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Literal

from arp.agents.approvals import Approval, ApprovalBook, ApprovalConflict
from arp.agents.ask import Decision, PermissionAsk
from arp.agents.events import Draft
from arp.agents.records import RunRecord, SessionRecord
from arp.agents.session_types import iso

Emit = Callable[[SessionRecord, RunRecord, list[Draft]], None]

TIMER_SLACK: Final = 0.01
"""Seconds the deadline timer waits past the deadline, so it rarely fires before it."""


class ApprovalDesk:
    """The approvals of one session manager, wired to its runs (see the module docstring)."""

    def __init__(
        self,
        timeout: float,
        emit: Emit,
        on_request: Callable[[SessionRecord, Approval], None] | None = None,
    ) -> None:
        self.book = ApprovalBook(timeout)
        self._emit = emit
        self._on_request = on_request
        self._waiting: dict[str, tuple[SessionRecord, RunRecord, PermissionAsk]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def ask(self, entry: SessionRecord, run: RunRecord, ask: PermissionAsk) -> None:
        """A run's CLI asks to use a tool: a pending approval (or an answer, when remembered)."""
        protocol = run.protocol
        if protocol is None:
            return
        if self.book.remembered(entry.session_id, ask.tool_name):
            run.write_input(protocol.answer(ask, "allow", None))
            return
        approval = self.book.request(
            entry.session_id, ask.tool_name, ask.tool_input, ask.title, now=time.time()
        )
        self._emit(
            entry,
            run,
            [
                Draft(
                    "approval_request",
                    text=ask.title,
                    tool_name=ask.tool_name,
                    tool_id=ask.tool_id,
                    tool_input=ask.tool_input,
                    approval={
                        "approval_id": approval.approval_id,
                        "requested_at": iso(approval.requested_at),
                        "expires_at": iso(approval.expires_at),
                    },
                )
            ],
        )
        self._waiting[approval.approval_id] = (entry, run, ask)
        if not approval.pending:  # refused at once: too many are waiting
            self._settle(approval, answer=True)
            return
        self._arm()
        if self._on_request is not None:
            self._on_request(entry, approval)

    def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        remember: Literal["session"] | None = None,
    ) -> Approval:
        """A person's decision; `ApprovalNotFound` (404) or `ApprovalConflict` (409)."""
        try:
            approval = self.book.decide(
                session_id,
                approval_id,
                decision,
                now=time.time(),
                message=message,
                remember=remember,
            )
        except ApprovalConflict:
            # Past its deadline before its timer ran: the book denied it; tell the CLI too.
            late = self.book.get(approval_id)
            if late is not None and approval_id in self._waiting:
                self._settle(late, answer=True)
                self._arm()
            raise
        self._settle(approval, answer=True)
        self._arm()
        return approval

    def close_session(self, session_id: str, reason: str) -> None:
        """Denies the session's pending approvals (its cancel, or its run's end)."""
        for approval in self.book.close_session(session_id, now=time.time(), reason=reason):
            self._settle(approval, answer=False)
        self._arm()

    def forget_session(self, session_id: str) -> None:
        self.book.forget_session(session_id)

    def pending(self, session_id: str | None = None) -> list[Approval]:
        return self.book.pending(session_id)

    def pending_json(self, session_id: str) -> tuple[dict[str, object], ...]:
        return tuple(a.to_json() for a in self.book.pending(session_id))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        """One timer, at the nearest deadline (none when nothing is pending)."""
        self.close()
        deadline = self.book.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - time.time()) + TIMER_SLACK
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        for approval in self.book.expire_due(time.time()):
            self._settle(approval, answer=True)
        self._arm()

    def _settle(self, approval: Approval, *, answer: bool) -> None:
        waiting = self._waiting.pop(approval.approval_id, None)
        if waiting is None:
            return
        entry, run, ask = waiting
        self._emit(
            entry,
            run,
            [
                Draft(
                    "approval_decision",
                    text=approval.message,
                    tool_name=approval.tool_name,
                    tool_id=ask.tool_id,
                    approval={
                        "approval_id": approval.approval_id,
                        "decision": approval.decision,
                        "by": approval.by,
                        "message": approval.message,
                        "remember": approval.remember,
                    },
                )
            ],
        )
        if answer and run.protocol is not None and approval.decision is not None:
            run.write_input(run.protocol.answer(ask, approval.decision, approval.message))
