"""Gemini CLI's history: `<gemini home>/tmp/<project id>/chats/session-<time>-<id8>.json[l]`.

Two formats. Older: one JSON document `{sessionId, projectHash, startTime, lastUpdated,
messages[]}`. Newer: JSONL, a metadata line, then message records where a repeated `id`
replaces the earlier record in place, `{"$set": {...}}` patching the metadata (a `messages`
list in it replaces them all) and `{"$rewindTo": id}` dropping that message and everything after
it (an unknown id drops them all). Messages are of type user | gemini | info | error | warning.
`<gemini home>/projects.json` maps real paths to project ids; older project ids are the SHA-256
of the path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arp.agents.history.files import stamp_of
from arp.agents.history.model import HistoryMessage, parse_time

_CONVERSATION = ("user", "gemini")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parts_text(content: object) -> str:
    """Text of a Gemini content value: a string, a part, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts)


def _result_text(call: dict[str, Any]) -> str:
    display = call.get("resultDisplay")
    if isinstance(display, str) and display:
        return display
    result = call.get("result")
    texts: list[str] = []
    if isinstance(result, list):
        for part in result:
            response = part.get("functionResponse") if isinstance(part, dict) else None
            if isinstance(response, dict):
                body = response.get("response")
                if isinstance(body, dict) and "output" in body:
                    output = body["output"]
                    texts.append(output if isinstance(output, str) else json.dumps(output))
                elif body is not None:
                    texts.append(json.dumps(body))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    elif result is not None:
        texts.append(parts_text(result))
    return "\n".join(texts)


class GeminiParser:
    """Gemini records (either format) → normalised messages (a `TranscriptParser`)."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._anonymous = 0
        self._view: list[HistoryMessage] | None = None

    def feed(self, record: dict[str, Any]) -> None:
        self._view = None
        target = record.get("$rewindTo")
        if isinstance(target, str):
            ids = list(self._records)
            cut = ids.index(target) if target in ids else 0
            for message_id in ids[cut:]:
                del self._records[message_id]
            return
        patch = record.get("$set")
        if isinstance(patch, dict):
            self._patch(patch)
        elif isinstance(record.get("type"), str) and "sessionId" not in record:
            self._add(record)
        elif "$rewindTo" not in record:
            self._patch(record)

    def _patch(self, patch: dict[str, Any]) -> None:
        self.metadata.update({key: value for key, value in patch.items() if key != "messages"})
        messages = patch.get("messages")
        if isinstance(messages, list):
            self._records = {}
            for message in messages:
                if isinstance(message, dict):
                    self._add(message)

    def _add(self, record: dict[str, Any]) -> None:
        message_id = record.get("id")
        if not isinstance(message_id, str):
            self._anonymous += 1
            message_id = f"\0{self._anonymous}"
        self._records[message_id] = record

    def count(self) -> int:
        return len(self.messages())  # replacements and rewinds: only the view knows

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def messages(self) -> Sequence[HistoryMessage]:
        if self._view is None:
            view: list[HistoryMessage] = []
            for record in self._records.values():
                view.extend(_normalise(record))
            self._view = view
        return self._view


def _normalise(record: dict[str, Any]) -> list[HistoryMessage]:
    kind = record.get("type")
    common: dict[str, Any] = {
        "id": _str(record.get("id")),
        "timestamp": _str(record.get("timestamp")),
    }
    text = parts_text(record.get("content"))
    if kind == "user":
        return [HistoryMessage(role="user", kind="text", text=text, **common)]
    if kind != "gemini":
        if kind in ("info", "error", "warning"):
            extra = {"type": kind}
            return [
                HistoryMessage(
                    role="system",
                    kind="text",
                    text=text,
                    is_error=kind == "error",
                    extra=extra,
                    **common,
                )
            ]
        return []
    model = _str(record.get("model"))
    out: list[HistoryMessage] = []
    thoughts = record.get("thoughts")
    if isinstance(thoughts, list):
        for thought in thoughts:
            if isinstance(thought, dict):
                subject = _str(thought.get("subject")) or ""
                description = _str(thought.get("description")) or ""
                joined = f"{subject}\n{description}".strip() if subject else description
                out.append(
                    HistoryMessage(
                        role="assistant", kind="thinking", text=joined, model=model, **common
                    )
                )
    if text:
        extra = {"tokens": record["tokens"]} if isinstance(record.get("tokens"), dict) else {}
        out.append(
            HistoryMessage(
                role="assistant", kind="text", text=text, model=model, extra=extra, **common
            )
        )
    calls = record.get("toolCalls")
    if isinstance(calls, list):
        for call in calls:
            if not isinstance(call, dict):
                continue
            call_id = _str(call.get("id"))
            status = _str(call.get("status"))
            out.append(
                HistoryMessage(
                    role="assistant",
                    kind="tool_use",
                    text=_str(call.get("description")) or "",
                    tool_name=_str(call.get("name")),
                    tool_input=call.get("args"),
                    tool_use_id=call_id,
                    model=model,
                    extra={"status": status} if status else {},
                    **common,
                )
            )
            if call.get("result") is not None or call.get("resultDisplay") is not None:
                out.append(
                    HistoryMessage(
                        role="user",
                        kind="tool_result",
                        text=_result_text(call),
                        tool_use_id=call_id,
                        is_error=status == "error",
                        id=common["id"],
                        timestamp=_str(call.get("timestamp")) or common["timestamp"],
                    )
                )
    return out


def conversation_facts(parser: GeminiParser) -> tuple[int, str | None, float | None, float | None]:
    """(message count, first prompt, first time, last time) of a parsed session."""
    count = 0
    first_prompt = None
    first = last = None
    for record in parser.records():
        kind = record.get("type")
        if kind in _CONVERSATION:
            count += 1
            if kind == "user" and first_prompt is None:
                first_prompt = parts_text(record.get("content")).strip() or None
        moment = parse_time(record.get("timestamp"))
        if moment is not None:
            first = moment if first is None else min(first, moment)
            last = moment if last is None else max(last, moment)
    return count, first_prompt, first, last


def project_paths(gemini_dir: Path, cache: dict[str, Any]) -> dict[str, str]:
    """Project id → real path, from projects.json (and the SHA-256 ids of older versions)."""
    registry = gemini_dir / "projects.json"
    stamp = stamp_of(registry)
    if cache.get("stamp") == stamp and "paths" in cache:
        paths: dict[str, str] = cache["paths"]
        return paths
    mapping: dict[str, str] = {}
    if stamp is not None:
        try:
            value = json.loads(registry.read_bytes())
        except (OSError, ValueError):
            value = None
        projects = value.get("projects", value) if isinstance(value, dict) else None
        if isinstance(projects, dict):
            for path, project_id in projects.items():
                if isinstance(path, str) and isinstance(project_id, str):
                    mapping[project_id] = path
                    mapping[hashlib.sha256(path.encode()).hexdigest()] = path
    cache["stamp"] = stamp
    cache["paths"] = mapping
    return mapping
