"""The mock model API on its own (no CLI needed, so these always run): its reply rule, how it
reads each API's request shape (as the real CLIs send them, see docs/real-cli-notes.md), and its
streams over loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.agents.real_cli.mock_models import (
    HOLD,
    Conversation,
    MockModelApi,
    ReadFileReply,
    TextReply,
    claude_conversation,
    codex_conversation,
    gemini_conversation,
    plan_reply,
    wants_hold,
)
from tests.conftest import units


def test_reply_rule() -> None:
    assert plan_reply(Conversation(["ASK-a READ-FILE:/p/notes.txt"], [])) == ReadFileReply(
        "/p/notes.txt"
    )
    assert plan_reply(Conversation(["ASK-a READ-FILE:/p/n"], ["1\tword"])) == TextReply(
        "TOOL-RESULT-SEEN: 1\tword"
    )
    assert plan_reply(Conversation(["ASK-a", "ASK-b more"], [])) == TextReply(
        "MOCK-REPLY to ASK-b; history: ASK-a,ASK-b"
    )
    assert wants_hold(Conversation([f"ASK-x {HOLD}"], []))
    assert not wants_hold(Conversation([f"ASK-x {HOLD}"], ["done"]))


def test_request_shapes_of_the_three_clis() -> None:
    claude = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>"},
                    {"type": "text", "text": "ASK-one READ-FILE:/x"},
                ],
            },
            {"role": "system", "content": "agents ..."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1\thi"}],
            },
        ]
    }
    assert claude_conversation(claude) == Conversation(["ASK-one READ-FILE:/x"], ["1\thi"])

    codex = {
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text"}]},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "<environment_context>…"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Q"}]},
            {"type": "function_call", "call_id": "c1", "name": "exec_command"},
            {"type": "function_call_output", "call_id": "c1", "output": "Output:\nhi"},
        ]
    }
    assert codex_conversation(codex) == Conversation(["Q"], ["Output:\nhi"])

    gemini = {
        "contents": [
            {"role": "user", "parts": [{"text": "<session_context>…"}, {"text": "Q"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {}}}]},
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "read_file", "response": {"output": "hi"}}}
                ],
            },
        ]
    }
    assert gemini_conversation(gemini) == Conversation(["Q"], ["hi"])


async def sse_data(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    out = []
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
    return out


async def test_streams_over_loopback() -> None:
    async with MockModelApi() as api, aiohttp.ClientSession() as http:
        body = {"stream": True, "model": "m", "messages": [{"role": "user", "content": "ASK-z"}]}
        async with http.post(f"{api.base_url}/v1/messages", json=body) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = await sse_data(response)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        assert text == "MOCK-REPLY to ASK-z; history: ASK-z"

        body = {"input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "READ-FILE:/tmp/f"}]}]}  # fmt: skip
        async with http.post(f"{api.base_url}/v1/responses", json=body) as response:
            events = await sse_data(response)
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"
        call = events[-1]["response"]["output"][0]
        assert call["name"] == "exec_command" and json.loads(call["arguments"]) == {
            "cmd": "cat /tmp/f"
        }

        path = "/v1beta/models/g:streamGenerateContent?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": "ASK-g"}]}]}
        async with http.post(api.base_url + path, json=body) as response:
            events = await sse_data(response)
        assert events[-1]["candidates"][0]["finishReason"] == "STOP"
        router = {
            "contents": body["contents"],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "OBJECT",
                    "properties": {"score": {"type": "INTEGER"}, "why": {"type": "STRING"}},
                },
            },
        }
        async with http.post(f"{api.base_url}/v1beta/models/g:generateContent", json=router) as r:
            verdict = await r.json()
        part = verdict["candidates"][0]["content"]["parts"][0]["text"]
        assert json.loads(part) == {"score": 10, "why": "mock"}
        assert [r.path for r in api.requests][-1] == "/v1beta/models/g:generateContent"

        # A held answer waits for release().
        held = {"stream": True, "messages": [{"role": "user", "content": f"ASK-h {HOLD}"}]}
        request = asyncio.ensure_future(http.post(f"{api.base_url}/v1/messages", json=held))
        await asyncio.sleep(units(0.3))
        assert not request.done()
        api.release()
        async with asyncio.timeout(units(5)):
            response = await request
        async with response:
            assert response.status == 200
            await response.read()
