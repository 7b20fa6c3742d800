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
from dataclasses import dataclass, field
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
    """Gemini records (either format) → normalised messages (a `TranscriptParser`).

    Records are told apart as Gemini CLI's own loader does: `$rewindTo`, then a message (a
    string `id`), then `$set`, then a metadata line (`sessionId` and `projectHash`).
    """

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        """Every tool call recorded, by id: a rewrite on resume keeps only the bare call."""
        self._view: list[HistoryMessage] | None = None

    def feed(self, record: dict[str, Any]) -> None:
        self._view = None
        target = record.get("$rewindTo")
        if isinstance(target, str):
            ids = list(self._records)
            cut = ids.index(target) if target in ids else 0
            for message_id in ids[cut:]:
                del self._records[message_id]
        elif isinstance(record.get("id"), str):
            self._add(record)
        elif isinstance(record.get("$set"), dict):
            patch = record["$set"]
            self.metadata.update(patch)
            if isinstance(patch.get("messages"), list):
                self._records = {}
                self._add_all(patch["messages"])
        elif isinstance(record.get("sessionId"), str):
            self.metadata.update(record)
            if isinstance(record.get("messages"), list):
                self._add_all(record["messages"])
        self.metadata.pop("messages", None)

    def _add_all(self, messages: list[Any]) -> None:
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                self._add(message)

    def _add(self, record: dict[str, Any]) -> None:
        self._records[record["id"]] = record
        calls = record.get("toolCalls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    self._calls[call["id"]] = call

    def count(self) -> int:
        return len(self.messages())  # replacements and rewinds: only the view knows

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def messages(self) -> Sequence[HistoryMessage]:
        if self._view is None:
            view: list[HistoryMessage] = []
            calls: set[str] = set()
            results: set[str] = set()
            for record in self._records.values():
                view.extend(_normalise(record, calls, results, self._calls))
            self._view = view
        return self._view


@dataclass(slots=True)
class _Parts:
    texts: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _parts(content: object) -> _Parts:
    """A content value split into texts, thought texts, function calls and responses."""
    parts = _Parts()
    if isinstance(content, str):
        parts.texts.append(content)
        return parts
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return parts
    for part in content:
        if isinstance(part, str):
            parts.texts.append(part)
        elif not isinstance(part, dict):
            continue
        elif isinstance(part.get("functionCall"), dict):
            parts.calls.append(part["functionCall"])
        elif isinstance(part.get("functionResponse"), dict):
            parts.responses.append(part["functionResponse"])
        elif isinstance(part.get("text"), str):
            (parts.thoughts if part.get("thought") else parts.texts).append(part["text"])
    return parts


def _response_text(response: dict[str, Any]) -> str:
    body = response.get("response")
    if isinstance(body, dict) and "output" in body:
        output = body["output"]
        return output if isinstance(output, str) else json.dumps(output)
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        return error if isinstance(error, str) else json.dumps(error)
    return "" if body is None else json.dumps(body)


def _normalise(
    record: dict[str, Any],
    calls_seen: set[str],
    results_seen: set[str],
    known_calls: dict[str, dict[str, Any]],
) -> list[HistoryMessage]:
    """One record's messages. A tool call or result already shown (Gemini repeats them: in a
    message's `toolCalls` and, after a resume, as function parts of rewritten turns) is not
    shown again; a bare functionCall part borrows what the recorded call said of itself."""
    kind = record.get("type")
    common: dict[str, Any] = {
        "id": _str(record.get("id")),
        "timestamp": _str(record.get("timestamp")),
    }
    parts = _parts(record.get("content"))
    out: list[HistoryMessage] = []
    if kind == "user":
        shown = _parts(record.get("displayContent")).text or parts.text
        if shown:
            out.append(HistoryMessage(role="user", kind="text", text=shown, **common))
        for response in parts.responses:
            call_id = _str(response.get("id"))
            if call_id is not None and call_id in results_seen:
                continue
            if call_id is not None:
                results_seen.add(call_id)
            out.append(
                HistoryMessage(
                    role="user",
                    kind="tool_result",
                    text=_response_text(response),
                    tool_name=_str(response.get("name")),
                    tool_use_id=call_id,
                    **common,
                )
            )
        return out
    if kind in ("info", "error", "warning"):
        return [
            HistoryMessage(
                role="system",
                kind="text",
                text=parts.text,
                is_error=kind == "error",
                extra={"type": kind},
                **common,
            )
        ]
    if kind != "gemini":
        return []
    model = _str(record.get("model"))
    thoughts = record.get("thoughts")
    # A resumed session rewrites turns with the model's parts: its thought parts repeat `thoughts`.
    texts = [] if thoughts else list(parts.thoughts)
    if isinstance(thoughts, list):
        for thought in thoughts:
            if isinstance(thought, dict):
                subject = _str(thought.get("subject")) or ""
                description = _str(thought.get("description")) or ""
                texts.append(f"{subject}\n{description}".strip() if subject else description)
    for text in texts:
        out.append(
            HistoryMessage(role="assistant", kind="thinking", text=text, model=model, **common)
        )
    if parts.text:
        extra = {"tokens": record["tokens"]} if isinstance(record.get("tokens"), dict) else {}
        out.append(
            HistoryMessage(
                role="assistant", kind="text", text=parts.text, model=model, extra=extra, **common
            )
        )
    calls = [call for call in record.get("toolCalls") or [] if isinstance(call, dict)]
    listed = {call.get("id") for call in calls}
    calls += [
        {**known_calls.get(str(call.get("id")), {}), **call}
        for call in parts.calls
        if call.get("id") not in listed
    ]
    for call in calls:
        call_id = _str(call.get("id"))
        if call_id is not None and call_id in calls_seen:
            continue
        if call_id is not None:
            calls_seen.add(call_id)
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
        has_result = call.get("result") is not None or call.get("resultDisplay") is not None
        if has_result and not (call_id is not None and call_id in results_seen):
            if call_id is not None:
                results_seen.add(call_id)
            out.append(
                HistoryMessage(
                    role="user",
                    kind="tool_result",
                    text=_result_text(call),
                    tool_name=_str(call.get("name")),
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
        except (OSError, ValueError, RecursionError):
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
