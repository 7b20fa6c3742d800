"""The stream parsers: each CLI's lines become the same normalised events (pure, no loop)."""

from __future__ import annotations

import json
from typing import Any

from arp.agents.events import ClaudeParser, CodexParser, Draft, Event, GeminiParser, Usage


def line(obj: Any) -> str:
    return json.dumps(obj)


def test_claude_stream() -> None:
    p = ClaudeParser()
    [init] = p.parse_line(line({"type": "system", "subtype": "init", "session_id": "s-1"}))
    assert init.kind == "system" and init.agent_session_id == "s-1"
    assert init.raw == {"type": "system", "subtype": "init", "session_id": "s-1"}
    msg = {
        "type": "assistant",
        "message": {
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "thinking", "thinking": "hmm"},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a"}},
            ]
        },
    }
    text, thinking, call = p.parse_line(line(msg))
    assert (text.kind, text.text, text.raw) == ("text", "hello", msg)
    assert (thinking.kind, thinking.text, thinking.raw) == ("thinking", "hmm", None)
    assert (call.kind, call.tool_name, call.tool_id, call.tool_input) == (
        "tool_call",
        "Read",
        "t1",
        {"file_path": "a"},
    )
    user = {
        "type": "user",
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "line1"}, {"type": "text", "text": "l2"}],
                    "is_error": True,
                }
            ]
        },
    }
    [result] = p.parse_line(line(user))
    assert (result.kind, result.tool_name, result.text, result.is_error) == (
        "tool_result",
        "Read",
        "line1\nl2",
        True,
    )
    final = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "done",
        "session_id": "s-1",
        "total_cost_usd": 0.5,
        "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 9},
        "permission_denials": [],
    }
    [end] = p.parse_line(line(final))
    assert end.kind == "result" and end.text == "done" and end.is_error is False
    assert end.usage == Usage(input_tokens=3, output_tokens=4, cost_usd=0.5)
    [failed] = p.parse_line(
        line({"type": "result", "subtype": "error_max_turns", "is_error": False})
    )
    assert failed.is_error is True and failed.text == "error_max_turns"


def test_codex_stream() -> None:
    p = CodexParser()
    [start] = p.parse_line(line({"type": "thread.started", "thread_id": "th-1"}))
    assert start.agent_session_id == "th-1"
    [turn] = p.parse_line(line({"type": "turn.started"}))
    assert turn.kind == "system"
    cmd = {"id": "i0", "type": "command_execution", "command": "ls", "status": "in_progress"}
    [call] = p.parse_line(line({"type": "item.started", "item": cmd}))
    assert (call.kind, call.tool_name, call.tool_input) == (
        "tool_call",
        "command_execution",
        {"command": "ls"},
    )
    done = {**cmd, "aggregated_output": "x\n", "exit_code": 2, "status": "failed"}
    [res] = p.parse_line(line({"type": "item.completed", "item": done}))
    assert (res.kind, res.text, res.is_error) == ("tool_result", "x\n", True)
    [upd] = p.parse_line(line({"type": "item.updated", "item": {"type": "todo_list"}}))
    assert upd.kind == "system"
    msg = {"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": "hi"}}
    [text] = p.parse_line(line(msg))
    assert (text.kind, text.text) == ("text", "hi")
    reasoning = {"type": "item.completed", "item": {"type": "reasoning", "text": "think"}}
    assert p.parse_line(line(reasoning))[0].kind == "thinking"
    change = {
        "type": "item.completed",
        "item": {
            "id": "i2",
            "type": "file_change",
            "changes": [{"path": "a"}],
            "status": "completed",
        },
    }
    fc_call, fc_res = p.parse_line(line(change))
    assert fc_call.tool_input == {"changes": [{"path": "a"}]} and fc_res.is_error is False
    usage = {"input_tokens": 5, "cached_input_tokens": 1, "output_tokens": 6}
    [end] = p.parse_line(line({"type": "turn.completed", "usage": usage}))
    assert end.kind == "result" and end.usage == Usage(5, 6, None)
    [bad] = p.parse_line(line({"type": "turn.failed", "error": {"message": "quota"}}))
    assert (bad.kind, bad.text, bad.is_error) == ("result", "quota", True)
    [err] = p.parse_line(line({"type": "error", "message": "reconnecting"}))
    assert (err.kind, err.text) == ("error", "reconnecting")


def test_gemini_stream() -> None:
    p = GeminiParser()
    [init] = p.parse_line(line({"type": "init", "session_id": "g-1", "model": "m"}))
    assert init.agent_session_id == "g-1"
    [user] = p.parse_line(line({"type": "message", "role": "user", "content": "q"}))
    assert user.kind == "system"
    [text] = p.parse_line(
        line({"type": "message", "role": "assistant", "content": "a", "delta": True})
    )
    assert (text.kind, text.text) == ("text", "a")
    use = {"type": "tool_use", "tool_name": "read_file", "tool_id": "t", "parameters": {"p": 1}}
    [call] = p.parse_line(line(use))
    assert (call.tool_name, call.tool_input) == ("read_file", {"p": 1})
    result = {"type": "tool_result", "tool_id": "t", "status": "error", "error": {"message": "no"}}
    [res] = p.parse_line(line(result))
    assert (res.tool_name, res.text, res.is_error) == ("read_file", "no", True)
    stats = {"input_tokens": 7, "output_tokens": 8, "total_tokens": 15}
    [end] = p.parse_line(line({"type": "result", "status": "success", "stats": stats}))
    assert end.is_error is False and end.usage == Usage(7, 8, None)


def test_odd_lines_are_kept_never_dropped() -> None:
    p = ClaudeParser()
    assert p.parse_line("") == []
    [plain] = p.parse_line("Loading config…")
    assert (plain.kind, plain.text, plain.raw) == ("text", "Loading config…", "Loading config…")
    [number] = p.parse_line("42")
    assert number.kind == "text" and number.raw == 42
    [unknown] = p.parse_line(line({"type": "brand_new_event", "x": 1}))
    assert unknown.kind == "system" and unknown.raw == {"type": "brand_new_event", "x": 1}
    # Wrong shapes inside known types do not raise.
    [weird] = p.parse_line(line({"type": "assistant", "message": "not an object"}))
    assert weird.kind == "system"
    [weird2] = p.parse_line(line({"type": "result", "usage": [1, 2]}))
    assert weird2.kind == "result"


def test_event_json_round_trip() -> None:
    draft = Draft("result", text="ok", is_error=False, usage=Usage(1, 2, 0.25), raw={"a": [1]})
    event = Event.from_draft(draft, seq=7, ts=1.5, run=1)
    text = event.to_line()
    assert text.startswith('{"seq":7,')
    assert Event.from_line(text) == event
    assert "tool_name" not in json.loads(text)
    assert Usage(1, None, 0.5) + Usage(2, 3, None) == Usage(3, 3, 0.5)


def test_to_line_escapes_a_lone_surrogate_so_the_line_encodes_as_utf8() -> None:
    from arp.agents.events import ClaudeParser, Event

    line = '{"type":"assistant","message":{"content":[{"type":"text","text":"é \\ud83d"}]}}'
    (draft,) = ClaudeParser().parse_line(line)
    event = Event.from_draft(draft, seq=1, ts=0.0, run=0)
    stored = event.to_line()
    stored.encode("utf-8")
    back = Event.from_line(stored)
    assert back.text == "é \ud83d"
    assert back.raw == json.loads(line)
    plain = Event.from_draft(draft, seq=2, ts=0.0, run=0).to_line()
    assert plain.startswith('{"seq":2,')


def test_a_deeply_nested_line_is_text_not_an_exception() -> None:
    from arp.agents.events import ClaudeParser

    deep = '{"type":"assistant","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    (draft,) = ClaudeParser().parse_line(deep)
    assert draft.kind == "text" and draft.text == deep


def test_nan_and_infinity_lines_are_text_so_browsers_can_parse_the_stream() -> None:
    from arp.agents.events import Event, GeminiParser

    for line in ('{"type":"result","stats":{"x":NaN}}', '{"type":"init","n":-Infinity}'):
        (draft,) = GeminiParser().parse_line(line)
        assert draft.kind == "text" and draft.text == line
        stored = Event.from_draft(draft, seq=1, ts=0.0, run=0).to_line()
        assert json.loads(stored, parse_constant=lambda name: 1 / 0)["raw"] == line
