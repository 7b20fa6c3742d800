"""A loopback mock of the three model APIs the real agent CLIs call.

One aiohttp server speaks Anthropic Messages (Claude Code), OpenAI Responses (Codex) and the
Gemini API (Gemini CLI); their paths do not clash. What it answers is decided by one pure rule,
`plan_reply`, from the words the test put into its prompts, so the server keeps no conversation
state of its own: a resumed conversation is only seen as resumed if the CLI sends its history.

Prompt words the rule reads:
- `ASK-<word>`: a prompt marker; the reply names the newest marker and every marker in the history.
- `READ-FILE:<absolute path>`: the reply is one tool call that reads that file; once the
  tool's result comes back, the reply quotes it.
- `WRITE-FILE:<absolute path>`: likewise, one tool call that creates that file holding `WRITTEN`
  (which needs the agent's permission to edit; the reply then quotes the tool's answer).
- `RUN_SHELL[<command>]`: one tool call that runs ``<command>`` in the agent's shell tool (which
  needs the agent's permission; in ``ask`` mode a person's). Once its result comes back, the
  reply quotes it.
- `READ-ATTACHED`: like `READ-FILE`, for the file ARP named in the prompt as
  ``[File attached: <path> (…)`` (an attachment, issue 16).
- `HOLD-REPLY`: the server holds the answer back until `MockModelApi.release()` (or its close), so
  a test can cancel a run while the CLI waits on its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

HOLD = "HOLD-REPLY"
HOLD_LIMIT = 60.0
"""The longest a held answer waits (seconds); close() releases it sooner."""

MARKER = re.compile(r"\bASK-[A-Za-z0-9]+\b")
READ_FILE = re.compile(r"\bREAD-FILE:(/[A-Za-z0-9._/-]+)")
WRITE_FILE = re.compile(r"\bWRITE-FILE:(/[A-Za-z0-9._/-]+)")
READ_ATTACHED = re.compile(r"\bREAD-ATTACHED\b[\s\S]*?\[File attached: (/[A-Za-z0-9._/-]+) \(")
RUN_SHELL = re.compile(r"\bRUN_SHELL\[([^\]\n]{1,400})\]")
WRITTEN = "written-by-the-mock"
"""What a `WRITE-FILE` tool call puts in the file."""


@dataclass(frozen=True)
class TextReply:
    text: str


@dataclass(frozen=True)
class ReadFileReply:
    """Ask the agent to read the file at absolute `path` with its own tool."""

    path: str


@dataclass(frozen=True)
class WriteFileReply:
    """Ask the agent to create the file at absolute `path` holding `WRITTEN` with its own tool."""

    path: str


@dataclass(frozen=True)
class ShellReply:
    """Ask the agent to run ``command`` with its own shell tool."""

    command: str


Reply = TextReply | ReadFileReply | WriteFileReply | ShellReply


@dataclass(frozen=True)
class Conversation:
    """What a model request carried, reduced to what the reply rule needs."""

    user_texts: list[str]  # every user-authored text, oldest first
    tool_results: list[str]  # tool outputs that came back in the newest turn


ToolReply = ReadFileReply | WriteFileReply | ShellReply


def claude_tool(reply: ToolReply) -> tuple[str, dict[str, Any]]:
    if isinstance(reply, ShellReply):
        return "Bash", {"command": reply.command, "description": "run what the test asked"}
    if isinstance(reply, ReadFileReply):
        return "Read", {"file_path": reply.path}
    return "Write", {"file_path": reply.path, "content": WRITTEN}


def codex_tool(reply: ToolReply) -> tuple[str, dict[str, Any]]:
    if isinstance(reply, ShellReply):
        return "exec_command", {"cmd": reply.command}
    if isinstance(reply, ReadFileReply):
        return "exec_command", {"cmd": f"cat {reply.path}"}
    return "exec_command", {"cmd": f"printf %s {WRITTEN} > {reply.path}"}


def gemini_tool(reply: ToolReply) -> tuple[str, dict[str, Any]]:
    if isinstance(reply, ShellReply):
        return "run_shell_command", {"command": reply.command}
    if isinstance(reply, ReadFileReply):
        return "read_file", {"file_path": reply.path}
    return "write_file", {"file_path": reply.path, "content": WRITTEN}


def wants_hold(conv: Conversation) -> bool:
    return bool(conv.user_texts) and HOLD in conv.user_texts[-1] and not conv.tool_results


def plan_reply(conv: Conversation) -> Reply:
    """The whole model: quote a tool's result, ask for a tool, or name the prompts seen."""
    if conv.tool_results:
        return TextReply("TOOL-RESULT-SEEN: " + " | ".join(r.strip() for r in conv.tool_results))
    newest = conv.user_texts[-1] if conv.user_texts else ""
    wanted = READ_FILE.search(newest) or READ_ATTACHED.search(newest)
    if wanted:
        return ReadFileReply(wanted.group(1))
    wanted = WRITE_FILE.search(newest)
    if wanted:
        return WriteFileReply(wanted.group(1))
    shell = RUN_SHELL.search(newest)
    if shell:
        return ShellReply(shell.group(1))
    markers: list[str] = []
    for text in conv.user_texts:
        for found in MARKER.findall(text):
            if found not in markers:
                markers.append(found)
    latest = MARKER.findall(newest)
    return TextReply(
        f"MOCK-REPLY to {latest[-1] if latest else 'nothing'}; history: {','.join(markers)}"
    )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


class MockModelApi:
    """The loopback server (port 0, read back); `requests` records every request in order."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Releases held answers and stops the server. Idempotent."""
        self._released.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MockModelApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def calls(self, path_part: str) -> list[RecordedRequest]:
        """The recorded requests whose path contains ``path_part``."""
        return [r for r in self.requests if path_part in r.path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, dict(request.headers), body
            )
        )
        route = self._route(request)
        if route is None:
            return web.json_response(
                {"error": {"message": f"mock: no route for {request.method} {request.path}"}},
                status=404,
            )
        conv = Conversation([], [])
        if route.conversation is not None and isinstance(body, dict):
            conv = route.conversation(body)
            if wants_hold(conv) and not _wants_json(body):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), HOLD_LIMIT)
        return await route.handler(request, body, conv)

    def release(self) -> None:
        """Lets every held answer (`HOLD-REPLY`) go."""
        self._released.set()

    def _route(self, request: web.Request) -> Route | None:
        if request.method != "POST":
            return None
        path = request.path
        if path == "/v1/messages/count_tokens":
            return Route(None, _claude_count)
        if path == "/v1/messages":
            return Route(claude_conversation, _claude_messages)
        if path.endswith("/responses"):
            return Route(codex_conversation, _codex_responses)
        if path.endswith(":generateContent"):
            return Route(gemini_conversation, _gemini_generate)
        if path.endswith(":streamGenerateContent"):
            return Route(gemini_conversation, _gemini_stream)
        if path.endswith(":countTokens"):
            return Route(None, _gemini_count)
        return None


Handler = Callable[[web.Request, Any, Conversation], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    conversation: Callable[[dict[str, Any]], Conversation] | None
    handler: Handler


# ---------------------------------------------------------------- Anthropic Messages (Claude Code)


def claude_conversation(body: dict[str, Any]) -> Conversation:
    user_texts: list[str] = []
    tool_results: list[str] = []
    messages = [m for m in body.get("messages", []) if m.get("role") in ("user", "assistant")]
    for index, message in enumerate(messages):
        if message["role"] != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        newest = index == len(messages) - 1
        for block in blocks:
            if block.get("type") == "text" and not block["text"].lstrip().startswith(
                "<system-reminder>"
            ):
                user_texts.append(block["text"])
            elif block.get("type") == "tool_result" and newest:
                result = block.get("content")
                if isinstance(result, list):
                    result = "".join(b.get("text", "") for b in result if isinstance(b, dict))
                tool_results.append(str(result))
    return Conversation(user_texts, tool_results)


async def _claude_count(request: web.Request, body: Any, conv: Conversation) -> web.StreamResponse:
    return web.json_response({"input_tokens": len(json.dumps(body)) // 4})


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _claude_messages(
    request: web.Request, body: Any, conv: Conversation
) -> web.StreamResponse:
    reply = plan_reply(conv)
    model = body.get("model", "mock")
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    if isinstance(reply, TextReply):
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": part} for part in _chunks(reply.text)]
        full: dict[str, Any] = {"type": "text", "text": reply.text}
        stop = "end_turn"
    else:
        name, args = claude_tool(reply)
        tool_input = json.dumps(args)
        block = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:20]}",
            "name": name,
            "input": {},
        }
        deltas = [
            {"type": "input_json_delta", "partial_json": part} for part in _chunks(tool_input)
        ]
        full = {**block, "input": json.loads(tool_input)}
        stop = "tool_use"
    usage = {
        "input_tokens": 42,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if not body.get("stream"):
        return web.json_response(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [full],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
        )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await response.write(
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": 1},
                },
            },
        )
    )
    await response.write(
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    for delta in deltas:
        await response.write(
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    await response.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    await response.write(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        )
    )
    await response.write(_sse("message_stop", {"type": "message_stop"}))
    await response.write_eof()
    return response


# ---------------------------------------------------------------- OpenAI Responses (Codex)


def codex_conversation(body: dict[str, Any]) -> Conversation:
    user_texts: list[str] = []
    tool_results: list[str] = []
    for item in body.get("input", []):
        if item.get("type") == "message" and item.get("role") == "user":
            tool_results = []  # only outputs after the newest user message belong to this turn
            for part in item.get("content", []):
                text = part.get("text", "")
                # The CLI's own context blocks (<environment_context>, AGENTS.md ...) are tagged.
                if part.get("type") == "input_text" and not text.lstrip().startswith("<"):
                    user_texts.append(text)
        elif item.get("type") == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
            tool_results.append(str(output))
    return Conversation(user_texts, tool_results)


async def _codex_responses(
    request: web.Request, body: Any, conv: Conversation
) -> web.StreamResponse:
    reply = plan_reply(conv)
    response_id = f"resp_{uuid.uuid4().hex[:24]}"
    model = body.get("model", "mock")
    events: list[dict[str, Any]] = []
    if isinstance(reply, TextReply):
        item_id = f"msg_{uuid.uuid4().hex[:24]}"
        item: dict[str, Any] = {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        events.append(
            {
                "type": "response.content_part.added",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            }
        )
        for part in _chunks(reply.text):
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": part,
                }
            )
        done = {
            **item,
            "status": "completed",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }
    else:
        done = {
            "type": "function_call",
            "id": f"fc_{uuid.uuid4().hex[:24]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}",
            "name": codex_tool(reply)[0],
            "arguments": json.dumps(codex_tool(reply)[1]),
            "status": "completed",
        }
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**done, "arguments": "", "status": "in_progress"},
            }
        )
    events.append({"type": "response.output_item.done", "output_index": 0, "item": done})
    usage = {
        "input_tokens": 42,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 49,
    }
    base = {"id": response_id, "object": "response", "model": model, "created_at": 0}
    events.insert(
        0, {"type": "response.created", "response": {**base, "status": "in_progress", "output": []}}
    )
    events.append(
        {
            "type": "response.completed",
            "response": {**base, "status": "completed", "output": [done], "usage": usage},
        }
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for number, event in enumerate(events):
        await response.write(_sse(event["type"], {**event, "sequence_number": number}))
    await response.write_eof()
    return response


# ---------------------------------------------------------------- Gemini API (Gemini CLI)


def gemini_conversation(body: dict[str, Any]) -> Conversation:
    user_texts: list[str] = []
    tool_results: list[str] = []
    contents = body.get("contents", [])
    for index, content in enumerate(contents):
        if content.get("role", "user") != "user":
            continue
        for part in content.get("parts", []):
            text = part.get("text")
            # The CLI's own context (<session_context> ...) is tagged.
            if isinstance(text, str) and not text.lstrip().startswith("<"):
                user_texts.append(text)
            elif "functionResponse" in part and index == len(contents) - 1:
                response = part["functionResponse"].get("response", {})
                tool_results.append(str(response.get("output", response)))
    return Conversation(user_texts, tool_results)


def _gemini_parts(reply: Reply) -> list[dict[str, Any]]:
    if isinstance(reply, TextReply):
        return [{"text": reply.text}]
    name, args = gemini_tool(reply)
    return [{"functionCall": {"name": name, "args": args}}]


_GEMINI_USAGE = {"promptTokenCount": 42, "candidatesTokenCount": 7, "totalTokenCount": 49}


def _wants_json(body: Any) -> bool:
    """A Gemini request for a JSON verdict (the CLI's model router), not a conversation turn."""
    config = body.get("generationConfig") if isinstance(body, dict) else None
    return isinstance(config, dict) and config.get("responseMimeType") == "application/json"


def _schema_value(schema: dict[str, Any]) -> Any:
    """A value that satisfies a JSON schema the CLI asks for (its model router's verdict, ...)."""
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _schema_value(sub) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 10
    if kind == "boolean":
        return False
    if "enum" in schema:
        return schema["enum"][0]
    return "mock"


async def _gemini_generate(
    request: web.Request, body: Any, conv: Conversation
) -> web.StreamResponse:
    if _wants_json(body):
        config = body["generationConfig"]
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        parts: list[dict[str, Any]] = [{"text": json.dumps(_schema_value(schema or {}))}]
    else:
        parts = _gemini_parts(plan_reply(conv))
    return web.json_response(
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": _GEMINI_USAGE,
            "modelVersion": request.path.rsplit("/", 1)[-1].split(":")[0],
        }
    )


async def _gemini_stream(request: web.Request, body: Any, conv: Conversation) -> web.StreamResponse:
    reply = plan_reply(conv)
    if isinstance(reply, TextReply):
        chunks = [[{"text": part}] for part in _chunks(reply.text)]
    else:
        chunks = [_gemini_parts(reply)]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for number, parts in enumerate(chunks):
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if number == len(chunks) - 1:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = _GEMINI_USAGE
        await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
    await response.write_eof()
    return response


async def _gemini_count(request: web.Request, body: Any, conv: Conversation) -> web.StreamResponse:
    return web.json_response({"totalTokens": len(json.dumps(body)) // 4})


def _chunks(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def _serve_forever(port_file: str) -> None:
    """For exploring a CLI by hand: serve until SIGTERM, then dump the requests to a file."""
    async with MockModelApi() as api:
        with open(port_file, "w") as f:
            f.write(str(api.port))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            with open(port_file + ".requests.json", "w") as f:
                json.dump([r.__dict__ for r in api.requests], f, indent=1)


if __name__ == "__main__":
    # python tests/agents/real_cli/mock_models.py PORT_FILE: writes the port to PORT_FILE and,
    # on SIGTERM, every request to PORT_FILE.requests.json (how docs/real-cli-notes.md was made).
    import sys

    asyncio.run(_serve_forever(sys.argv[1]))
