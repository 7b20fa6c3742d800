"""Codex's history: `<CODEX_HOME>/sessions/YYYY/MM/DD/rollout-<timestamp>-<uuid>.jsonl`.

Every line is `{timestamp, type, payload}`: `session_meta` (id, cwd, cli_version) opens the file,
`response_item` carries the model's items (message, reasoning, function_call,
function_call_output, ...), `event_msg` the UI events (user_message, agent_message, token_count).
The person's prompts are taken from `event_msg/user_message` (the `response_item` user messages
also hold injected context); when a file has none (older rollouts), those items stand in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from arp.agents.history.files import loads_json
from arp.agents.history.model import HistoryMessage, parse_time
from arp.agents.history.scan import HeadInfo, ScanRules

_INJECTED = ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<permissions")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "\n".join(parts)


def _is_prompt(text: str) -> bool:
    stripped = text.lstrip()
    return bool(stripped) and not stripped.startswith(_INJECTED)


def read_head(records: Iterable[dict[str, Any]]) -> HeadInfo:
    info = HeadInfo()
    for record in records:
        payload = record.get("payload")
        if not isinstance(payload, dict):
            continue
        kind = record.get("type")
        if kind == "session_meta" and info.session_id is None:
            info.session_id = _str(payload.get("id"))
            info.cwd = _str(payload.get("cwd"))
            info.version = _str(payload.get("cli_version"))
            info.created = parse_time(payload.get("timestamp")) or parse_time(
                record.get("timestamp")
            )
            git = payload.get("git")
            if isinstance(git, dict):
                info.git_branch = _str(git.get("branch"))
        elif kind == "event_msg" and payload.get("type") == "user_message":
            text = _str(payload.get("message"))
            if info.first_prompt is None and text and _is_prompt(text):
                info.first_prompt = text
        elif kind == "turn_context" and info.cwd is None:
            info.cwd = _str(payload.get("cwd"))
        if info.session_id and info.first_prompt:
            break
    return info


RULES = ScanRules(
    count=(b'"type":"user_message"', b'"type":"agent_message"'),
    read_head=read_head,
)


class CodexParser:
    """Codex rollout lines → normalised messages (a `TranscriptParser`)."""

    def __init__(self) -> None:
        self._items: list[tuple[HistoryMessage, bool]] = []
        """(message, is a response_item user message standing in for missing prompts)"""
        self._has_prompts = False
        self._stand_ins = 0
        self._view: list[HistoryMessage] | None = None

    def count(self) -> int:
        return len(self._items) - (self._stand_ins if self._has_prompts else 0)

    def messages(self) -> Sequence[HistoryMessage]:
        if self._view is None:
            self._view = [
                message for message, stand_in in self._items if not (stand_in and self._has_prompts)
            ]
        return self._view

    def _add(self, message: HistoryMessage, *, stand_in: bool = False) -> None:
        self._items.append((message, stand_in))
        self._stand_ins += stand_in
        self._view = None

    def feed(self, record: dict[str, Any]) -> None:
        payload = record.get("payload")
        if not isinstance(payload, dict):
            return
        timestamp = _str(record.get("timestamp"))
        kind = record.get("type")
        if kind == "event_msg" and payload.get("type") == "user_message":
            text = _str(payload.get("message")) or ""
            self._has_prompts = True
            self._add(HistoryMessage(role="user", kind="text", text=text, timestamp=timestamp))
        elif kind == "response_item":
            self._response_item(payload, timestamp)
        elif kind == "compacted" and isinstance(payload.get("message"), str):
            self._add(
                HistoryMessage(
                    role="system", kind="summary", text=payload["message"], timestamp=timestamp
                )
            )

    def _response_item(self, payload: dict[str, Any], timestamp: str | None) -> None:
        item_type = payload.get("type")
        item_id = _str(payload.get("id"))
        if item_type == "message":
            role = payload.get("role")
            text = _content_text(payload.get("content"))
            if role == "assistant":
                self._add(
                    HistoryMessage(
                        role="assistant", kind="text", text=text, timestamp=timestamp, id=item_id
                    )
                )
            elif role == "user" and _is_prompt(text):
                self._add(
                    HistoryMessage(role="user", kind="text", text=text, timestamp=timestamp),
                    stand_in=True,
                )
        elif item_type == "reasoning":
            text = _content_text(payload.get("summary")) or _content_text(payload.get("content"))
            self._add(
                HistoryMessage(
                    role="assistant", kind="thinking", text=text, timestamp=timestamp, id=item_id
                )
            )
        elif item_type in (
            "function_call",
            "custom_tool_call",
            "local_shell_call",
            "web_search_call",
        ):
            self._add(
                HistoryMessage(
                    role="assistant",
                    kind="tool_use",
                    text="",
                    timestamp=timestamp,
                    id=item_id,
                    tool_name=_tool_name(payload),
                    tool_input=_tool_input(payload),
                    tool_use_id=_str(payload.get("call_id")),
                    extra={"status": payload["status"]} if "status" in payload else {},
                )
            )
        elif item_type in ("function_call_output", "custom_tool_call_output"):
            output = payload.get("output")
            if isinstance(output, dict):
                text = _content_text(output.get("content"))
            else:
                text = output if isinstance(output, str) else json.dumps(output)
            self._add(
                HistoryMessage(
                    role="user",
                    kind="tool_result",
                    text=text,
                    timestamp=timestamp,
                    tool_use_id=_str(payload.get("call_id")),
                )
            )


def _tool_name(payload: dict[str, Any]) -> str:
    item_type = payload.get("type")
    if item_type == "local_shell_call":
        return "shell"
    if item_type == "web_search_call":
        return "web_search"
    return _str(payload.get("name")) or str(item_type)


def _tool_input(payload: dict[str, Any]) -> Any:
    if payload.get("type") in ("local_shell_call", "web_search_call"):
        return payload.get("action")
    raw = payload.get("arguments", payload.get("input"))
    if isinstance(raw, str):
        try:
            return loads_json(raw)
        except ValueError:
            return raw
    return raw
