"""Approvals: an agent asks before a tool use, a person decides, the first decision wins.

In ``ask`` mode (`arp.agents.ask`) every tool use that the agent's own rules would prompt for
becomes a pending approval here, and the agent waits for its answer. The rules:

- An approval is ``pending`` from `ApprovalBook.request` until it is decided, once: by a person
  (`decide`, allow or deny), by its deadline (`expire_due`: denied, reason "timed out") or by
  its session's cancel or end (`close_session`: denied). Whatever comes second is refused:
  `ApprovalConflict` (409) for a decision on one that is no longer pending, `ApprovalNotFound`
  (404) for an id never seen (or forgotten: a bounded number of decided ones is kept).
- Its deadline is ``requested_at + timeout`` (``arpc --approval-timeout``:
  `SessionConfig.approval_timeout`, default 900 s).
- ``remember="session"`` on an allow lets the same tool run for the rest of that session without
  asking again (`remembered`); the session's record of it goes with the session.
- At most ``max_pending`` approvals wait at once (all sessions together): beyond, a request is
  denied at once (`request` returns it decided), so no agent can grow the inbox without bound.

Pure code: no asyncio, no I/O; the caller passes the time (Unix seconds) and arranges the timer
that calls `expire_due`.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from arp.agents.ask import Decision
from arp.agents.errors import BadRequest, Conflict, SessionNotFound
from arp.agents.session_types import iso

DecidedBy = Literal["person", "timeout", "cancel"]
State = Literal["pending", "decided"]

MAX_PENDING: Final = 256
"""Approvals waiting at once, all sessions together (beyond: denied at once)."""
KEPT_DECISIONS: Final = 1000
"""Decided approvals remembered, so a late second decision gets 409 rather than 404."""

TIMED_OUT: Final = "timed out"
CANCELLED: Final = "the session was cancelled"
RUN_ENDED: Final = "the run ended before a decision"
TOO_MANY: Final = "too many approvals are pending; denied without asking"


class ApprovalNotFound(SessionNotFound):
    """No approval with that id in that session (never asked, or long forgotten)."""


class ApprovalConflict(Conflict):
    """The approval was decided already (or expired): the first decision won."""


@dataclass(frozen=True, slots=True)
class Approval:
    """One request of an agent to use a tool, and what became of it."""

    approval_id: str
    session_id: str
    tool_name: str
    tool_input: Any
    title: str
    requested_at: float
    expires_at: float
    state: State = "pending"
    decision: Decision | None = None
    by: DecidedBy | None = None
    message: str | None = None
    remember: Literal["session"] | None = None
    decided_at: float | None = None

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def to_json(self, *, with_session: bool = False) -> dict[str, Any]:
        """The API's form of a pending approval (with ``session_id`` in the inbox)."""
        out: dict[str, Any] = {}
        if with_session:
            out["session_id"] = self.session_id
        out.update(
            approval_id=self.approval_id,
            tool_name=self.tool_name,
            tool_input=self.tool_input,
            title=self.title,
            requested_at=iso(self.requested_at),
            expires_at=iso(self.expires_at),
        )
        return out

    def decision_json(self) -> dict[str, Any]:
        """The recorded decision (the answer to a POST, and the event's fields)."""
        return {
            "approval_id": self.approval_id,
            "session_id": self.session_id,
            "decision": self.decision,
            "by": self.by,
            "message": self.message,
            "remember": self.remember,
            "decided_at": iso(self.decided_at),
        }


def parse_decision(body: Any) -> tuple[Decision, str | None, Literal["session"] | None]:
    """``{"decision": "allow"|"deny", "message"?: str, "remember"?: "session"}``; else a 400."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with a 'decision'")
    decision = body.get("decision")
    if decision not in ("allow", "deny"):
        raise BadRequest('\'decision\' must be "allow" or "deny"')
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise BadRequest("'message' must be a string")
    if message is not None and len(message) > 4096:
        raise BadRequest("'message' is longer than 4096 characters")
    remember = body.get("remember")
    if remember is not None and remember != "session":
        raise BadRequest("'remember' may only be \"session\"")
    if remember is not None and decision != "allow":
        raise BadRequest("'remember' goes with \"allow\" only")
    return decision, (message or None), remember


class ApprovalBook:
    """Every approval of one session manager; see the module docstring for the rules."""

    def __init__(
        self,
        timeout: float,
        *,
        max_pending: int = MAX_PENDING,
        kept_decisions: int = KEPT_DECISIONS,
    ) -> None:
        self.timeout = timeout
        self.max_pending = max(1, max_pending)
        self.kept_decisions = max(1, kept_decisions)
        self._pending: dict[str, Approval] = {}  # insertion order: oldest first
        self._decided: OrderedDict[str, Approval] = OrderedDict()
        self._remembered: dict[str, set[str]] = {}

    # ----------------------------------------------------------------------------- asking

    def request(
        self, session_id: str, tool_name: str, tool_input: Any, title: str, *, now: float
    ) -> Approval:
        """A new approval, pending (or already denied when too many are pending)."""
        approval = Approval(
            approval_id=uuid.uuid4().hex,
            session_id=session_id,
            tool_name=tool_name,
            tool_input=tool_input,
            title=title,
            requested_at=now,
            expires_at=now + self.timeout,
        )
        if len(self._pending) >= self.max_pending:
            return self._record(approval, "deny", "cancel", TOO_MANY, None, now)
        self._pending[approval.approval_id] = approval
        return approval

    def remembered(self, session_id: str, tool_name: str) -> bool:
        """Whether a person allowed ``tool_name`` for the rest of this session."""
        return tool_name in self._remembered.get(session_id, ())

    # ----------------------------------------------------------------------------- deciding

    def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        now: float,
        message: str | None = None,
        remember: Literal["session"] | None = None,
    ) -> Approval:
        """A person's decision; 404 for an unknown id, 409 once decided or past its deadline."""
        approval = self._pending.get(approval_id)
        if approval is None or approval.session_id != session_id:
            done = self._decided.get(approval_id)
            if done is not None and done.session_id == session_id:
                raise ApprovalConflict(
                    f"approval {approval_id} was already decided: {done.decision} (by {done.by})"
                )
            raise ApprovalNotFound(f"no approval {approval_id!r} in session {session_id!r}")
        if now >= approval.expires_at:
            self._close(approval, "deny", "timeout", TIMED_OUT, now)
            raise ApprovalConflict(f"approval {approval_id} expired; it was denied")
        if remember == "session" and decision == "allow":
            self._remembered.setdefault(session_id, set()).add(approval.tool_name)
        return self._close(approval, decision, "person", message, now, remember)

    def expire_due(self, now: float) -> list[Approval]:
        """Denies every pending approval past its deadline; returns them decided."""
        due = [a for a in self._pending.values() if now >= a.expires_at]
        return [self._close(a, "deny", "timeout", TIMED_OUT, now) for a in due]

    def close_session(self, session_id: str, *, now: float, reason: str) -> list[Approval]:
        """Denies the session's pending approvals (a cancel, or its run ended)."""
        mine = [a for a in self._pending.values() if a.session_id == session_id]
        return [self._close(a, "deny", "cancel", reason, now) for a in mine]

    def forget_session(self, session_id: str) -> None:
        """A deleted session: its remembered tools go (its approvals were closed already)."""
        self._remembered.pop(session_id, None)

    # ----------------------------------------------------------------------------- reading

    def get(self, approval_id: str) -> Approval | None:
        return self._pending.get(approval_id) or self._decided.get(approval_id)

    def pending(self, session_id: str | None = None) -> list[Approval]:
        """Pending approvals, oldest first (of one session, or of all)."""
        return [
            a for a in self._pending.values() if session_id is None or a.session_id == session_id
        ]

    def next_deadline(self) -> float | None:
        return min((a.expires_at for a in self._pending.values()), default=None)

    # ----------------------------------------------------------------------------- internals

    def _close(
        self,
        approval: Approval,
        decision: Decision,
        by: DecidedBy,
        message: str | None,
        now: float,
        remember: Literal["session"] | None = None,
    ) -> Approval:
        self._pending.pop(approval.approval_id, None)
        return self._record(approval, decision, by, message, remember, now)

    def _record(
        self,
        approval: Approval,
        decision: Decision,
        by: DecidedBy,
        message: str | None,
        remember: Literal["session"] | None,
        now: float,
    ) -> Approval:
        done = replace(
            approval,
            state="decided",
            decision=decision,
            by=by,
            message=message,
            remember=remember,
            decided_at=now,
        )
        self._decided[done.approval_id] = done
        while len(self._decided) > self.kept_decisions:
            self._decided.popitem(last=False)
        return done
