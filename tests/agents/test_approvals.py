"""The approval state machine, pure: pending, decided once, expired, closed with its session."""

from __future__ import annotations

import pytest

from arp.agents.approvals import (
    CANCELLED,
    TIMED_OUT,
    TOO_MANY,
    ApprovalBook,
    ApprovalConflict,
    ApprovalNotFound,
    parse_decision,
)
from arp.agents.errors import BadRequest

T0 = 1_700_000_000.0


def test_a_request_is_pending_until_a_person_decides_once() -> None:
    book = ApprovalBook(timeout=900)
    asked = book.request("s1", "Bash", {"command": "touch x"}, "Run touch x", now=T0)
    assert asked.pending and asked.expires_at == T0 + 900
    assert book.pending() == [asked] and book.pending("s1") == [asked] and book.pending("s2") == []
    assert asked.to_json(with_session=True) == {
        "session_id": "s1",
        "approval_id": asked.approval_id,
        "tool_name": "Bash",
        "tool_input": {"command": "touch x"},
        "title": "Run touch x",
        "requested_at": "2023-11-14T22:13:20.000Z",
        "expires_at": "2023-11-14T22:28:20.000Z",
    }
    done = book.decide("s1", asked.approval_id, "deny", now=T0 + 1, message="not now")
    assert (done.state, done.decision, done.by, done.message) == (
        "decided",
        "deny",
        "person",
        "not now",
    )
    assert book.pending() == []
    # First decision wins: a second one is a conflict, whatever it says.
    with pytest.raises(ApprovalConflict):
        book.decide("s1", asked.approval_id, "allow", now=T0 + 2)
    assert book.get(asked.approval_id) == done


def test_unknown_ids_and_other_sessions_are_not_found() -> None:
    book = ApprovalBook(900)
    asked = book.request("s1", "Bash", {}, "t", now=T0)
    with pytest.raises(ApprovalNotFound):
        book.decide("s1", "nope", "allow", now=T0)
    with pytest.raises(ApprovalNotFound):
        book.decide("s2", asked.approval_id, "allow", now=T0)  # not that session's
    assert ApprovalNotFound("x").status == 404 and ApprovalConflict("x").status == 409


def test_the_deadline_denies_and_a_late_decision_conflicts() -> None:
    book = ApprovalBook(timeout=10)
    first = book.request("s1", "Bash", {}, "a", now=T0)
    second = book.request("s1", "Write", {}, "b", now=T0 + 5)
    assert book.next_deadline() == T0 + 10
    assert book.expire_due(T0 + 9.9) == []
    expired = book.expire_due(T0 + 10)
    assert [(a.approval_id, a.decision, a.by, a.message) for a in expired] == [
        (first.approval_id, "deny", "timeout", TIMED_OUT)
    ]
    assert book.pending() == [second] and book.next_deadline() == T0 + 15
    with pytest.raises(ApprovalConflict):
        book.decide("s1", first.approval_id, "allow", now=T0 + 11)
    # Past its deadline but before the timer ran: the decision still loses.
    with pytest.raises(ApprovalConflict):
        book.decide("s1", second.approval_id, "allow", now=T0 + 15)
    assert book.get(second.approval_id).by == "timeout"  # type: ignore[union-attr]


def test_cancel_denies_the_sessions_pending_approvals_only() -> None:
    book = ApprovalBook(900)
    mine = [book.request("s1", "Bash", {}, str(i), now=T0 + i) for i in range(2)]
    other = book.request("s2", "Bash", {}, "other", now=T0)
    closed = book.close_session("s1", now=T0 + 3, reason=CANCELLED)
    assert [a.approval_id for a in closed] == [a.approval_id for a in mine]
    assert all(a.decision == "deny" and a.by == "cancel" for a in closed)
    assert book.pending() == [other]
    with pytest.raises(ApprovalConflict):
        book.decide("s1", mine[0].approval_id, "allow", now=T0 + 4)


def test_remember_allows_the_tool_for_the_rest_of_the_session() -> None:
    book = ApprovalBook(900)
    asked = book.request("s1", "Bash", {}, "t", now=T0)
    assert not book.remembered("s1", "Bash")
    book.decide("s1", asked.approval_id, "allow", now=T0, remember="session")
    assert book.remembered("s1", "Bash")
    assert not book.remembered("s1", "Write") and not book.remembered("s2", "Bash")
    book.forget_session("s1")
    assert not book.remembered("s1", "Bash")


def test_pending_and_remembered_decisions_are_bounded() -> None:
    book = ApprovalBook(900, max_pending=2, kept_decisions=2)
    a, b = (book.request("s1", "Bash", {}, str(i), now=T0) for i in range(2))
    refused = book.request("s1", "Bash", {}, "third", now=T0)
    assert (refused.state, refused.decision, refused.message) == ("decided", "deny", TOO_MANY)
    assert book.pending() == [a, b]
    book.decide("s1", a.approval_id, "allow", now=T0)
    book.decide("s1", b.approval_id, "allow", now=T0)
    # Only the newest decisions are kept: the oldest is forgotten (404, not 409).
    with pytest.raises(ApprovalNotFound):
        book.decide("s1", refused.approval_id, "allow", now=T0)
    with pytest.raises(ApprovalConflict):
        book.decide("s1", b.approval_id, "allow", now=T0)


def test_decision_bodies() -> None:
    assert parse_decision({"decision": "allow"}) == ("allow", None, None)
    assert parse_decision({"decision": "allow", "message": "ok", "remember": "session"}) == (
        "allow",
        "ok",
        "session",
    )
    assert parse_decision({"decision": "deny", "message": ""}) == ("deny", None, None)
    for bad in (
        [],
        {},
        {"decision": "yes"},
        {"decision": "deny", "message": 3},
        {"decision": "allow", "remember": "forever"},
        {"decision": "deny", "remember": "session"},
        {"decision": "deny", "message": "x" * 5000},
    ):
        with pytest.raises(BadRequest):
            parse_decision(bad)
