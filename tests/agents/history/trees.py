"""Builders of history trees shaped like the agents' own (shared by the tests and the bench)."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

BASE = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def iso(seconds: float) -> str:
    moment = BASE + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def line(record: dict[str, Any]) -> str:
    """One JSONL line, compact as the agents write it."""
    return json.dumps(record, separators=(",", ":")) + "\n"


def encode(path: str) -> str:
    return "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in path)


_CODE = 'def handler(request):\n    return {"status": "ok", "path": request.path}\n\n'


def filler_text(size: int) -> str:
    """Tool output shaped like source code (newlines and quotes to escape), `size` chars."""
    return (_CODE * (size // len(_CODE) + 1))[:size]


def sid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def claude_lines(
    session_id: str,
    cwd: str,
    turns: int,
    start: float,
    *,
    prompt: str = "please fix the bug",
    filler: int = 0,
) -> list[str]:
    """A Claude Code 2.x transcript: per turn a prompt, thinking + text + tool_use sharing one
    message.id over three lines, a tool result, plus bookkeeping lines of types we skip."""
    common = {
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session_id,
        "version": "2.0.14",
        "gitBranch": "main",
    }
    out = [line({"type": "file-history-snapshot", "messageId": "x", "snapshot": {"files": {}}})]
    parent = None
    t = start
    for turn in range(turns):
        user_uuid = f"{session_id[-8:]}-{int(start)}-u{turn}"
        out.append(
            line(
                {
                    "parentUuid": parent,
                    **common,
                    "type": "user",
                    "message": {"role": "user", "content": f"{prompt} #{turn}"},
                    "uuid": user_uuid,
                    "timestamp": iso(t),
                }
            )
        )
        message_id = f"msg_{session_id[-8:]}_{int(start)}_{turn}"
        blocks = [
            {"type": "thinking", "thinking": f"thinking about {turn}", "signature": "sig"},
            {"type": "text", "text": f"answer {turn}"},
            {
                "type": "tool_use",
                "id": f"toolu_{turn}",
                "name": "Bash",
                "input": {"command": f"ls {turn}"},
            },
        ]
        previous = user_uuid
        for index, block in enumerate(blocks):
            t += 1
            out.append(
                line(
                    {
                        "parentUuid": previous,
                        **common,
                        "message": {
                            "id": message_id,
                            "type": "message",
                            "role": "assistant",
                            "model": "claude-sonnet-4-5",
                            "content": [block],
                            "usage": {"input_tokens": 10, "output_tokens": 5},
                        },
                        "requestId": "req",
                        "type": "assistant",
                        "uuid": f"{user_uuid}-a{index}",
                        "timestamp": iso(t),
                    }
                )
            )
            previous = f"{user_uuid}-a{index}"
        t += 1
        out.append(
            line(
                {
                    "type": "progress",
                    "data": {
                        "type": "agent_progress",
                        "message": {
                            "type": "user",
                            "message": {"role": "user", "content": "nested"},
                        },
                    },
                    "uuid": f"{user_uuid}-p",
                    "timestamp": iso(t),
                }
            )
        )
        out.append(
            line(
                {
                    "parentUuid": previous,
                    **common,
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": f"toolu_{turn}",
                                "content": filler_text(filler) + f"output {turn}",
                                "is_error": False,
                            }
                        ],
                    },
                    "uuid": f"{user_uuid}-r",
                    "timestamp": iso(t),
                }
            )
        )
        parent = f"{user_uuid}-r"
        t += 1
    out.append(line({"type": "queue-operation", "operation": "enqueue", "timestamp": iso(t)}))
    return out


CLAUDE_MESSAGES_PER_TURN = 5
"""Normalised messages per turn above: prompt, thinking, text, tool_use, tool_result."""
CLAUDE_ENTRIES_PER_TURN = 5
"""user/assistant lines per turn above (what a listing's messageCount counts)."""


def write_claude_session(
    claude_dir: Path,
    cwd: str,
    session_id: str,
    turns: int,
    start: float,
    *,
    subagent: bool = False,
    half_line: bool = False,
    filler: int = 0,
    prompt: str = "please fix the bug",
) -> Path:
    folder = claude_dir / "projects" / encode(cwd)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session_id}.jsonl"
    lines = claude_lines(session_id, cwd, turns, start, prompt=prompt, filler=filler)
    with path.open("w") as handle:
        handle.writelines(lines)
        if half_line:
            handle.write('{"type":"user","message":{"role":"user","content":"half wr')
    if subagent:
        sub = folder / session_id / "subagents"
        sub.mkdir(parents=True)
        (sub / "agent-a1.jsonl").write_text("".join(claude_lines(session_id, cwd, 2, start)))
        (folder / "agent-old1.jsonl").write_text("".join(claude_lines(session_id, cwd, 1, start)))
    mtime = BASE.timestamp() + start + turns * 5
    os.utime(path, (mtime, mtime))
    return path


def codex_lines(session_id: str, cwd: str, turns: int, start: float) -> list[str]:
    out = [
        line(
            {
                "timestamp": iso(start),
                "type": "session_meta",
                "payload": {
                    "id": session_id,
                    "timestamp": iso(start),
                    "cwd": cwd,
                    "originator": "codex_cli_rs",
                    "cli_version": "0.46.0",
                    "git": {"branch": "dev"},
                },
            }
        )
    ]
    t = start
    out.append(
        line(
            {
                "timestamp": iso(t),
                "type": "response_item",
                "payload": {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {
                            "type": "input_text",
                            "text": "<environment_context>cwd</environment_context>",
                        }
                    ],
                },
            }
        )
    )
    for turn in range(turns):
        t += 1
        out.append(line({"timestamp": iso(t), "type": "turn_context", "payload": {"cwd": cwd}}))
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "response_item",
                    "payload": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": f"codex task {turn}"}],
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "event_msg",
                    "payload": {
                        "type": "user_message",
                        "message": f"codex task {turn}",
                        "images": [],
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "response_item",
                    "payload": {
                        "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": f"plan {turn}"}],
                        "encrypted_content": "zzz",
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "response_item",
                    "payload": {
                        "type": "function_call",
                        "name": "shell",
                        "arguments": json.dumps({"command": ["ls", str(turn)]}),
                        "call_id": f"call_{turn}",
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "response_item",
                    "payload": {
                        "type": "function_call_output",
                        "call_id": f"call_{turn}",
                        "output": json.dumps({"output": f"files {turn}"}),
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "event_msg",
                    "payload": {"type": "agent_message", "message": f"done {turn}"},
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "response_item",
                    "payload": {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": f"done {turn}"}],
                    },
                }
            )
        )
        out.append(
            line(
                {
                    "timestamp": iso(t),
                    "type": "event_msg",
                    "payload": {"type": "token_count", "info": None},
                }
            )
        )
    return out


CODEX_MESSAGES_PER_TURN = 5
"""prompt, reasoning, function_call, its output, answer."""


def write_codex_session(
    codex_dir: Path, cwd: str, session_id: str, turns: int, start: float
) -> Path:
    moment = BASE + dt.timedelta(seconds=start)
    folder = codex_dir / "sessions" / f"{moment:%Y}" / f"{moment:%m}" / f"{moment:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rollout-{moment:%Y-%m-%dT%H-%M-%S}-{session_id}.jsonl"
    path.write_text("".join(codex_lines(session_id, cwd, turns, start)))
    return path


def gemini_messages(turns: int, start: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for turn in range(turns):
        out.append(
            {
                "id": f"u{turn}",
                "timestamp": iso(start + 2 * turn),
                "type": "user",
                "content": f"gemini ask {turn}",
            }
        )
        out.append(
            {
                "id": f"g{turn}",
                "timestamp": iso(start + 2 * turn + 1),
                "type": "gemini",
                "content": f"gemini reply {turn}",
                "model": "gemini-2.5-pro",
                "thoughts": [
                    {"subject": "Plan", "description": f"step {turn}", "timestamp": iso(start)}
                ],
                "toolCalls": [
                    {
                        "id": f"c{turn}",
                        "name": "read_file",
                        "args": {"path": f"f{turn}"},
                        "status": "success",
                        "result": [
                            {
                                "functionResponse": {
                                    "id": f"c{turn}",
                                    "name": "read_file",
                                    "response": {"output": f"content {turn}"},
                                }
                            }
                        ],
                    }
                ],
                "tokens": {"input": 1, "output": 2},
            }
        )
    return out


GEMINI_MESSAGES_PER_TURN = 5
"""ask, thought, reply, tool call, tool result."""


def gemini_project_dir(gemini_dir: Path, project_id: str, real_path: str) -> Path:
    chats = gemini_dir / "tmp" / project_id / "chats"
    chats.mkdir(parents=True, exist_ok=True)
    registry = gemini_dir / "projects.json"
    data = json.loads(registry.read_text()) if registry.exists() else {"projects": {}}
    data["projects"][real_path] = project_id
    registry.write_text(json.dumps(data))
    return chats


def write_gemini_json(
    gemini_dir: Path, project_id: str, real_path: str, session_id: str, turns: int, start: float
) -> Path:
    chats = gemini_project_dir(gemini_dir, project_id, real_path)
    path = chats / f"session-2025-06-01T00-00-{session_id[:8]}.json"
    path.write_text(
        json.dumps(
            {
                "sessionId": session_id,
                "projectHash": project_id,
                "startTime": iso(start),
                "lastUpdated": iso(start + 2 * turns),
                "messages": gemini_messages(turns, start),
            },
            indent=2,
        )
    )
    return path


def write_gemini_jsonl(
    gemini_dir: Path, project_id: str, real_path: str, session_id: str, turns: int, start: float
) -> Path:
    """The newer format, with a replaced record, a rewind and a `$set` title."""
    chats = gemini_project_dir(gemini_dir, project_id, real_path)
    path = chats / f"session-2025-06-01T00-01-{session_id[:8]}.jsonl"
    messages = gemini_messages(turns, start)
    lines = [
        line(
            {
                "sessionId": session_id,
                "projectHash": project_id,
                "startTime": iso(start),
                "lastUpdated": iso(start),
                "kind": "main",
            }
        )
    ]
    for message in messages:
        if message["type"] == "gemini":
            lines.append(line({**message, "content": "", "toolCalls": []}))  # replaced below
        lines.append(line(message))
    lines.append(
        line(
            {
                "id": "junk1",
                "type": "user",
                "content": "rewound away",
                "timestamp": iso(start + 5000),
            }
        )
    )
    lines.append(
        line(
            {
                "id": "junk2",
                "type": "gemini",
                "content": "also rewound",
                "timestamp": iso(start + 5001),
            }
        )
    )
    lines.append(line({"$rewindTo": "junk1"}))
    lines.append(
        line(
            {
                "$set": {
                    "summary": f"gemini title {session_id[:4]}",
                    "lastUpdated": iso(start + 2 * turns),
                }
            }
        )
    )
    path.write_text("".join(lines))
    return path
