"""The pure protocol rules: parsing, dedup window, outbox, signatures."""

from __future__ import annotations

import json

import pytest

from arp.gateway import auth
from arp.gateway import messages as m


def test_parse_accepts_a_log_and_defaults_its_stream() -> None:
    message = m.parse(
        json.dumps({"type": "log", "message_id": "x", "task_id": "t", "seq": 1, "data": "hi"}),
        allowed=m.FROM_AGENT,
    )
    assert message["stream"] == "stdout"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"type": "log", "task_id": "t", "seq": 1, "data": ""}', "missing_message_id"),
        ('{"type": "log", "message_id": "", "task_id": "t"}', "missing_message_id"),
        ("[1]", "bad_json"),
        ("{", "bad_json"),
        ('{"type": "nope", "message_id": "x"}', "unknown_type"),
        ('{"type": "task", "message_id": "x", "task_id": "t"}', "unexpected_type"),
        ('{"type": "log", "message_id": "x", "task_id": "t", "seq": "1", "data": ""}', "bad_field"),
        ('{"type": "ack", "message_id": "x", "ack_ids": []}', "bad_field"),
        ('{"type": "result", "message_id": "x", "task_id": "t"}', "bad_field"),
        ('{"type": "status", "message_id": "x", "task_id": "../etc", "state": "s"}', "bad_field"),
    ],
)
def test_parse_drops_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(m.DroppedMessage) as caught:
        m.parse(raw, allowed=m.FROM_AGENT)
    assert caught.value.reason == reason


def test_ids_are_derived_so_replays_repeat_them() -> None:
    assert m.log("t", 3, "x")["message_id"] == m.log("t", 3, "y")["message_id"] == "t:log:3"
    assert m.result("t", 0, "")["message_id"] == "t:result"


def test_dedup_window_forgets_the_oldest() -> None:
    window = m.DedupWindow(2)
    for message_id in ("a", "b", "c"):
        window.add(message_id)
    assert "a" not in window and "b" in window and "c" in window and len(window) == 2


def test_outbox_resends_after_disconnect_and_after_retry_time() -> None:
    outbox = m.Outbox(capacity=2, retry_after=10.0)
    assert outbox.add(m.log("t", 1, "a")) and outbox.add(m.log("t", 2, "b"))
    assert not outbox.add(m.log("t", 1, "a")) and outbox.full
    assert [(x["seq"], again) for x, again in outbox.due(0.0)] == [(1, False), (2, False)]
    assert list(outbox.due(5.0)) == []
    assert outbox.acked(["t:log:1", "unknown"]) == 1
    assert [(x["seq"], again) for x, again in outbox.due(10.0)] == [(2, True)]
    outbox.disconnected()
    assert [(x["seq"], again) for x, again in outbox.due(11.0)] == [(2, True)]


def test_task_spec_validation() -> None:
    spec = m.TaskSpec.from_json({"task_id": "t1", "executor": "codex", "prompt": "p"})
    assert spec.to_message()["message_id"] == "task:t1"
    bad_bodies = [{"prompt": "p"}, {"task_id": "t"}, []]
    bad_bodies += [{"task_id": bad_id, "prompt": "p"} for bad_id in ("a:b", "../x", "a/b", "")]
    for bad in bad_bodies:
        with pytest.raises(auth.ArpError):
            m.TaskSpec.from_json(bad)


def test_signature_string_and_verification() -> None:
    body = b'{"a": 1}'
    text = auth.string_to_sign("100", "post", "/p?q=1", "r1", body)
    assert text.split("\n")[:4] == ["100", "POST", "/p?q=1", "r1"]
    verifier = auth.RequestVerifier(
        shared_secret="k", require_signature=True, clock_skew=30, bearer=""
    )
    headers = auth.signed_headers("k", "POST", "/p?q=1", body, 100.0, request_id="r1")
    verifier.verify("POST", "/p?q=1", headers, body, 120.0)
    with pytest.raises(auth.AuthError, match="already used"):
        verifier.verify("POST", "/p?q=1", headers, body, 120.0)
    late = auth.signed_headers("k", "POST", "/p?q=1", body, 100.0, request_id="r2")
    with pytest.raises(auth.AuthError, match="clock skew"):
        verifier.verify("POST", "/p?q=1", late, body, 131.0)
    other = auth.signed_headers("k", "POST", "/p?q=1", body, 100.0, request_id="r3")
    with pytest.raises(auth.AuthError, match="does not match"):
        verifier.verify("POST", "/p?q=2", other, body, 100.0)


def test_bearer_only_and_open_modes() -> None:
    bearer = auth.RequestVerifier(
        shared_secret="", require_signature=False, clock_skew=30, bearer="tok"
    )
    bearer.verify("GET", "/", {"Authorization": "Bearer tok"}, b"", 0.0)
    with pytest.raises(auth.AuthError):
        bearer.verify("GET", "/", {"Authorization": "Bearer nope"}, b"", 0.0)
    open_ = auth.RequestVerifier(
        shared_secret="", require_signature=False, clock_skew=30, bearer=""
    )
    open_.verify("GET", "/", {}, b"", 0.0)


def test_token_from_subprotocols() -> None:
    assert auth.token_from_subprotocols("agent-token, abc") == "abc"
    assert auth.token_from_subprotocols("agent-token,abc") == "abc"
    assert auth.token_from_subprotocols("abc") is None
    assert auth.token_from_subprotocols("other, abc") is None
    assert auth.token_matches("abc", auth.hash_token("abc"))


def test_a_deeply_nested_frame_is_dropped_as_bad_json_not_a_recursion_error() -> None:
    """2,000 levels: the decoder's RecursionError escaped the gateway's ValueError handling."""
    deep = "[" * 2000 + "]" * 2000
    frame = '{"message_id": "x", "type": "log", "data": ' + deep + "}"
    with pytest.raises(m.DroppedMessage) as caught:
        m.parse(frame, allowed=frozenset({"log"}))
    assert caught.value.reason == "bad_json"
    assert m.too_large(frame, 10).message_id is None


def test_a_deeply_nested_control_plane_body_is_a_protocol_error() -> None:
    from arp.errors import RemoteProtocolError
    from arp.gateway.server import Gateway

    with pytest.raises(RemoteProtocolError):
        Gateway._json(b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}")
