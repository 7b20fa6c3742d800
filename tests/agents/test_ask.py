"""The ask protocols, pure: the lines each CLI prints in, the lines ARP writes back out.

The shapes are those the real CLIs printed against the mock model (docs/real-cli-notes.md);
the real-CLI tier (tests/agents/real_cli/test_real_cli_ask.py) drives the CLIs themselves.
"""

from __future__ import annotations

import json
from typing import Any

from arp.agents.argv import RunSpec, build_claude, build_codex, build_gemini
from arp.agents.ask import ClaudeAsk, title_of
from arp.agents.ask_rpc import CodexAppServer, GeminiAcp
from arp.agents.executors import EXECUTORS


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def written(lines: list[bytes]) -> list[dict[str, Any]]:
    assert all(item.endswith(b"\n") and item.count(b"\n") == 1 for item in lines)
    return [json.loads(item) for item in lines]


def test_every_executor_asks_and_the_argv_carries_no_prompt() -> None:
    spec = RunSpec(prompt="-secret prompt", model="m1", resume_id="r-1", ask=True)
    for executor in EXECUTORS.values():
        assert executor.prepare(RunSpec(prompt="p", permission_mode="Ask")).ask
    assert build_claude("claude", spec) == [
        "claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json",
        "--verbose", "--permission-prompt-tool", "stdio", "--model", "m1", "--resume", "r-1",
        "--permission-mode", "default",
    ]  # fmt: skip
    assert build_gemini("gemini", spec) == [
        "gemini", "--acp", "--approval-mode", "default", "-m", "m1",
    ]  # fmt: skip
    assert build_codex("codex", spec) == ["codex", "app-server"]


def test_titles() -> None:
    assert title_of("Bash", {"command": "rm -rf build/"}) == "Bash: rm -rf build/"
    assert title_of("Write", {"file_path": "/p/a.txt", "content": "x"}) == "Write: /p/a.txt"
    assert title_of("Thing", {"other": 1}) == "Thing"
    assert len(title_of("Bash", {"command": "x" * 1000})) == 200


def test_claude_control_protocol() -> None:
    proto = ClaudeAsk(RunSpec(prompt="p"))
    init, user = written(proto.opening("touch it"))
    assert init == {
        "type": "control_request",
        "request_id": "arp-init",
        "request": {"subtype": "initialize"},
    }
    assert user["type"] == "user"
    assert user["message"]["content"] == [{"type": "text", "text": "touch it"}]
    assert proto.on_line(line({"type": "control_response", "response": {}})).drafts == []
    text = proto.on_line(
        line({"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}})
    )
    assert [d.kind for d in text.drafts] == ["text"]
    request = {
        "type": "control_request",
        "request_id": "r-9",
        "request": {
            "subtype": "can_use_tool",
            "tool_name": "Bash",
            "input": {"command": "touch /p/x"},
            "tool_use_id": "toolu_1",
        },
    }
    step = proto.on_line(line(request))
    [ask] = step.asks
    assert (ask.key, ask.tool_name, ask.title, ask.tool_id) == (
        "r-9",
        "Bash",
        "Bash: touch /p/x",
        "toolu_1",
    )
    assert written(proto.answer(ask, "allow", None)) == [
        {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": "r-9",
                "response": {"behavior": "allow", "updatedInput": {"command": "touch /p/x"}},
            },
        }
    ]
    [deny] = written(proto.answer(ask, "deny", "no"))
    assert deny["response"]["response"] == {"behavior": "deny", "message": "no"}
    # Requests ARP does not serve are answered with an error, never left hanging.
    other = proto.on_line(
        line({"type": "control_request", "request_id": "h", "request": {"subtype": "hook"}})
    )
    [error] = written(other.writes)
    assert error["response"]["subtype"] == "error" and error["response"]["request_id"] == "h"
    done = proto.on_line(line({"type": "result", "subtype": "success", "result": "ok"}))
    assert done.close_input and [d.kind for d in done.drafts] == ["result"]


def test_gemini_acp() -> None:
    proto = GeminiAcp(RunSpec(prompt="p", project_path="/proj"))
    [init] = written(proto.opening("touch it"))
    assert init["method"] == "initialize" and init["params"]["protocolVersion"] == 1
    [new] = written(proto.on_line(line({"jsonrpc": "2.0", "id": 1, "result": {}})).writes)
    assert new["method"] == "session/new" and new["params"] == {"cwd": "/proj", "mcpServers": []}
    step = proto.on_line(line({"jsonrpc": "2.0", "id": 2, "result": {"sessionId": "s-1"}}))
    assert step.drafts[0].agent_session_id == "s-1"
    [prompt] = written(step.writes)
    assert prompt["method"] == "session/prompt"
    assert prompt["params"] == {
        "sessionId": "s-1",
        "prompt": [{"type": "text", "text": "touch it"}],
    }
    chunk = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}
    update = {"jsonrpc": "2.0", "method": "session/update", "params": {"update": chunk}}
    assert [(d.kind, d.text) for d in proto.on_line(line(update)).drafts] == [("text", "hi")]
    ask_line = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "session/request_permission",
        "params": {
            "options": [
                {"optionId": "proceed_always", "kind": "allow_always"},
                {"optionId": "proceed_once", "kind": "allow_once"},
                {"optionId": "cancel", "kind": "reject_once"},
            ],
            "toolCall": {
                "toolCallId": "run_shell_command__1",
                "title": "touch /p/x",
                "kind": "execute",
            },
        },
    }
    step = proto.on_line(line(ask_line))
    [ask] = step.asks
    assert ask.tool_name == "run_shell_command" and ask.title == "run_shell_command: touch /p/x"
    assert [d.kind for d in step.drafts] == ["tool_call"]
    [allow] = written(proto.answer(ask, "allow", None))
    assert allow == {
        "jsonrpc": "2.0",
        "id": 0,
        "result": {"outcome": {"outcome": "selected", "optionId": "proceed_once"}},
    }
    assert proto.answer(ask, "deny", None) == []  # answered once only
    end = proto.on_line(
        line(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "result": {
                    "stopReason": "end_turn",
                    "_meta": {"quota": {"token_count": {"input_tokens": 5, "output_tokens": 2}}},
                },
            }
        )
    )
    [result] = end.drafts
    assert end.close_input and result.kind == "result" and not result.is_error
    assert result.usage is not None and result.usage.input_tokens == 5
    # Other requests of the agent get "method not found".
    [error] = written(
        proto.on_line(line({"jsonrpc": "2.0", "id": 7, "method": "fs/read_text_file"})).writes
    )
    assert error["id"] == 7 and error["error"]["code"] == -32601


def test_gemini_acp_resume_drops_the_replay() -> None:
    proto = GeminiAcp(RunSpec(prompt="p", project_path="/proj", resume_id="s-1"))
    proto.opening("again")
    [load] = written(proto.on_line(line({"jsonrpc": "2.0", "id": 1, "result": {}})).writes)
    assert load["method"] == "session/load" and load["params"]["sessionId"] == "s-1"
    chunk = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "old"}}
    replay = {"jsonrpc": "2.0", "method": "session/update", "params": {"update": chunk}}
    assert proto.on_line(line(replay)).drafts == []
    step = proto.on_line(line({"jsonrpc": "2.0", "id": 2, "result": {}}))
    assert written(step.writes)[0]["params"]["sessionId"] == "s-1"
    assert proto.on_line(line(replay)).drafts[0].text == "old"
    failed = proto.on_line(line({"jsonrpc": "2.0", "id": 3, "error": {"message": "nope"}}))
    assert failed.close_input and [d.kind for d in failed.drafts] == ["error", "result"]


def test_codex_app_server() -> None:
    proto = CodexAppServer(RunSpec(prompt="p", project_path="/proj", model="m"))
    [init] = written(proto.opening("touch it"))
    assert init["method"] == "initialize" and init["params"]["clientInfo"]["name"] == "arp"
    initialized, start = written(proto.on_line(line({"id": 1, "result": {}})).writes)
    assert initialized == {"jsonrpc": "2.0", "method": "initialized"}
    assert start["method"] == "thread/start"
    assert start["params"] == {
        "cwd": "/proj",
        "approvalPolicy": "untrusted",
        "sandbox": "workspace-write",
        "model": "m",
    }
    step = proto.on_line(line({"id": 2, "result": {"thread": {"id": "th-1"}}}))
    assert step.drafts[0].agent_session_id == "th-1"
    assert written(step.writes)[0]["params"]["input"] == [{"type": "text", "text": "touch it"}]
    command = {
        "id": "call_1",
        "type": "commandExecution",
        "command": "/bin/bash -lc 'touch /p/x'",
        "commandActions": [{"type": "unknown", "command": "touch /p/x"}],
        "status": "inProgress",
    }
    started = proto.on_line(line({"method": "item/started", "params": {"item": command}}))
    assert [(d.kind, d.tool_input) for d in started.drafts] == [
        ("tool_call", {"command": "touch /p/x"})
    ]
    request = {
        "method": "item/commandExecution/requestApproval",
        "id": 0,
        "params": {"itemId": "call_1", "cwd": "/p", **command},
    }
    [ask] = proto.on_line(line(request)).asks
    assert ask.tool_name == "command_execution" and ask.title == "command_execution: touch /p/x"
    assert written(proto.answer(ask, "deny", "no")) == [
        {"jsonrpc": "2.0", "id": 0, "result": {"decision": "decline"}}
    ]
    done = dict(command, status="declined")
    [result] = proto.on_line(line({"method": "item/completed", "params": {"item": done}})).drafts
    assert result.kind == "tool_result" and result.is_error
    usage = {"tokenUsage": {"total": {"inputTokens": 42, "outputTokens": 7}}}
    proto.on_line(line({"method": "thread/tokenUsage/updated", "params": usage}))
    end = proto.on_line(
        line({"method": "turn/completed", "params": {"turn": {"status": "completed"}}})
    )
    [final] = end.drafts
    assert end.close_input and final.kind == "result" and not final.is_error
    assert final.usage is not None and final.usage.output_tokens == 7


def test_codex_resume() -> None:
    proto = CodexAppServer(RunSpec(prompt="p", project_path="/proj", resume_id="th-1"))
    proto.opening("again")
    _, resume = written(proto.on_line(line({"id": 1, "result": {}})).writes)
    assert resume["method"] == "thread/resume" and resume["params"]["threadId"] == "th-1"


def test_gemini_follow_ups_wait_out_the_first_minute() -> None:
    started = 60_000.0 + 10  # 10 s into a minute
    fresh = GeminiAcp(RunSpec(prompt="p"))
    assert fresh.start_delay(started, started + 1) == 0.0  # a new conversation never waits
    follow = GeminiAcp(RunSpec(prompt="p", resume_id="s-1"))
    assert follow.start_delay(started, started + 5) == 60_060.5 - (started + 5)
    assert follow.start_delay(started, 60_061.0) == 0.0
    # Started late in a minute: its file may be named by the next one, which is waited out too.
    late = 60_000.0 + 50
    assert follow.start_delay(late, late + 1) == 60_120.5 - (late + 1)
    assert ClaudeAsk(RunSpec(prompt="p")).start_delay(started, started) == 0.0
    assert CodexAppServer(RunSpec(prompt="p")).start_delay(started, started) == 0.0
