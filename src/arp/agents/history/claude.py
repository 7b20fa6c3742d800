"""Claude Code's history: `<config>/projects/<encoded cwd>/<session uuid>.jsonl`.

The folder name replaces every character outside [A-Za-z0-9] of the working directory with '-'
(and cuts and hashes long ones), so it cannot be decoded: the real path is the `cwd` inside the
session's lines, else a key of `projects` in `.claude.json` whose encoding matches the folder.
Only those keys are read from `.claude.json` (it also holds credentials). `<uuid>/subagents/`
holds sub-agent transcripts of the same session, and older `agent-*.jsonl` files at the top of a
project folder are sub-agent transcripts too: neither is a session of its own.

One API message may span several lines sharing `message.id` (one content block per line, or
growing snapshots in older versions): its blocks are merged, each distinct block kept once.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from arp.agents.history.files import stamp_of
from arp.agents.history.model import HistoryMessage, clip, parse_time
from arp.agents.history.scan import HeadInfo, ScanRules

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_ENCODED_MAX = 200
_GROUPS_KEPT = 16
_COMMAND_NAME = re.compile(r"<command-name>(.*?)</command-name>", re.S)


def encode_path(path: str) -> str:
    """The folder name Claude Code gives a working directory (before long names are cut)."""
    return _NOT_ALNUM.sub("-", path)


def folder_matches(folder: str, path: str) -> bool:
    """Whether `folder` is how Claude Code names `path` (long names compared by their prefix)."""
    encoded = encode_path(path)
    if len(encoded) <= _ENCODED_MAX:
        return encoded == folder
    return len(folder) >= _ENCODED_MAX and folder[:_ENCODED_MAX] == encoded[:_ENCODED_MAX]


def prompt_text(content: object) -> str | None:
    """The typed text of a user message, or None for tool results and injected markup."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = [
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        if not parts:
            return None
        text = "\n".join(part for part in parts if isinstance(part, str))
    else:
        return None
    text = text.strip()
    command = _COMMAND_NAME.search(text)
    if command:
        return command.group(1).strip()
    if not text or text.startswith(("<local-command", "<system-reminder", "Caveat:")):
        return None
    return text


def read_head(records: Iterable[dict[str, Any]]) -> HeadInfo:
    info = HeadInfo()
    for record in records:
        if info.cwd is None and isinstance(record.get("cwd"), str):
            info.cwd = record["cwd"]
        if info.session_id is None and isinstance(record.get("sessionId"), str):
            info.session_id = record["sessionId"]
        if info.git_branch is None and isinstance(record.get("gitBranch"), str):
            info.git_branch = record["gitBranch"] or None
        if info.version is None and isinstance(record.get("version"), str):
            info.version = record["version"]
        if info.created is None and record.get("type") in ("user", "assistant"):
            info.created = parse_time(record.get("timestamp"))
        if (
            info.first_prompt is None
            and record.get("type") == "user"
            and not record.get("isMeta")
            and not record.get("isSidechain")
            and not record.get("isCompactSummary")
        ):
            message = record.get("message")
            if isinstance(message, dict):
                info.first_prompt = prompt_text(message.get("content"))
        if info.cwd and info.first_prompt and info.created is not None:
            break
    return info


def read_title(record: dict[str, Any], titles: dict[str, str]) -> None:
    kind = record.get("type")
    if kind not in _TITLE_TYPES:
        return
    for field_name in ("customTitle", "aiTitle", "title", "summary"):
        value = record.get(field_name)
        if isinstance(kind, str) and isinstance(value, str) and value.strip():
            titles[kind] = value.strip()
            return


_TITLE_TYPES = ("custom-title", "ai-title", "summary")


def title_of(info: HeadInfo, titles: dict[str, str], chars: int) -> str:
    for kind in _TITLE_TYPES:
        if kind in titles:
            return clip(titles[kind], chars)
    return clip(info.first_prompt or "", chars)


RULES = ScanRules(
    count=(b'"type":"user"', b'"type":"assistant"'),
    exclude=(b'"type":"progress"',),
    titles=(b'"type":"summary"', b'-title"'),  # one pass finds custom-title and ai-title
    read_head=read_head,
    read_title=read_title,
)


def known_paths(claude_json: Path | None, cache: dict[str, Any]) -> list[str]:
    """The keys of `projects` in `.claude.json` (nothing else of that file leaves here)."""
    if claude_json is None:
        return []
    stamp = stamp_of(claude_json)
    if stamp is None:
        return []
    if cache.get("stamp") == stamp:
        paths: list[str] = cache["paths"]
        return paths
    try:
        value = json.loads(claude_json.read_bytes())
    except (OSError, ValueError, RecursionError):
        value = None
    projects = value.get("projects") if isinstance(value, dict) else None
    paths = [key for key in projects if isinstance(key, str)] if isinstance(projects, dict) else []
    cache["stamp"] = stamp
    cache["paths"] = paths
    return paths


def _block_text(content: object) -> tuple[str, list[dict[str, Any]]]:
    """A tool result's text, and its non-text parts (images) described without their data."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                others.append(_describe(part))
    return "\n".join(texts), others


def _describe(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    media = source.get("media_type") if isinstance(source, dict) else None
    return {"type": block.get("type"), "mediaType": media}


class ClaudeParser:
    """Claude Code lines → normalised messages (a `TranscriptParser`)."""

    def __init__(self) -> None:
        self._messages: list[HistoryMessage] = []
        self._groups: OrderedDict[str, tuple[set[int], dict[str, int]]] = OrderedDict()

    def messages(self) -> Sequence[HistoryMessage]:
        return self._messages

    def count(self) -> int:
        return len(self._messages)

    def feed(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "user":
            self._user(record)
        elif kind == "assistant":
            self._assistant(record)
        elif kind == "summary" and isinstance(record.get("summary"), str):
            self._messages.append(
                HistoryMessage(
                    role="system",
                    kind="summary",
                    text=record["summary"],
                    id=_str(record.get("leafUuid")),
                    timestamp=_str(record.get("timestamp")),
                )
            )
        elif kind == "system" and isinstance(record.get("content"), str):
            self._messages.append(
                HistoryMessage(
                    role="system",
                    kind="text",
                    text=record["content"],
                    **self._common(record),
                    extra=_compact(
                        {"subtype": record.get("subtype"), "level": record.get("level")}
                    ),
                )
            )

    def _common(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _str(record.get("uuid")),
            "parent_id": _str(record.get("parentUuid")),
            "timestamp": _str(record.get("timestamp")),
        }

    def _flags(self, record: dict[str, Any]) -> dict[str, Any]:
        flags: dict[str, Any] = {}
        if record.get("isSidechain"):
            flags["sidechain"] = True
        if record.get("isMeta"):
            flags["meta"] = True
        return flags

    def _user(self, record: dict[str, Any]) -> None:
        message = record.get("message")
        if not isinstance(message, dict):
            return
        content = message.get("content")
        common = self._common(record)
        flags = self._flags(record)
        if record.get("isCompactSummary"):
            # After /compact the conversation goes on from a summary written as a user turn.
            text = content if isinstance(content, str) else _block_text(content)[0]
            self._messages.append(
                HistoryMessage(role="user", kind="summary", text=text, **common, extra=flags)
            )
            return
        if isinstance(content, str):
            self._messages.append(
                HistoryMessage(role="user", kind="text", text=content, **common, extra=flags)
            )
            return
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            block_type = block.get("type")
            if block_type == "text":
                text = str(block.get("text", ""))
                self._messages.append(
                    HistoryMessage(role="user", kind="text", text=text, **common, extra=flags)
                )
            elif block_type == "tool_result":
                text, others = _block_text(block.get("content"))
                extra = dict(flags, attachments=others) if others else flags
                self._messages.append(
                    HistoryMessage(
                        role="user",
                        kind="tool_result",
                        text=text,
                        tool_use_id=_str(block.get("tool_use_id")),
                        is_error=bool(block.get("is_error")),
                        **common,
                        extra=extra,
                    )
                )
            elif block_type in ("image", "document"):
                self._messages.append(
                    HistoryMessage(
                        role="user",
                        kind="text",
                        text="",
                        **common,
                        extra=dict(flags, attachments=[_describe(block)]),
                    )
                )

    def _assistant(self, record: dict[str, Any]) -> None:
        message = record.get("message")
        if not isinstance(message, dict):
            return
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            return
        message_id = _str(message.get("id"))
        seen, growing = self._group(message_id)
        common = self._common(record)
        model = _str(message.get("model"))
        flags = self._flags(record)
        for block in content:
            if not isinstance(block, dict):
                continue
            key = _block_key(block)
            if key in seen:
                continue
            normalised = self._assistant_block(block, common, model, message_id, flags)
            if normalised is None:
                continue
            seen.add(key)
            previous_index = growing.get(normalised.kind)
            if (
                normalised.kind in ("text", "thinking")
                and previous_index is not None
                and previous_index == len(self._messages) - 1
                and normalised.text.startswith(self._messages[previous_index].text)
            ):
                # An older streaming snapshot of the same block: keep the fuller one.
                self._messages[previous_index] = normalised
                continue
            self._messages.append(normalised)
            if normalised.kind in ("text", "thinking"):
                growing[normalised.kind] = len(self._messages) - 1

    def _group(self, message_id: str | None) -> tuple[set[int], dict[str, int]]:
        if message_id is None:
            return set(), {}
        group = self._groups.get(message_id)
        if group is None:
            group = (set(), {})
            self._groups[message_id] = group
            while len(self._groups) > _GROUPS_KEPT:
                self._groups.popitem(last=False)
        return group

    def _assistant_block(
        self,
        block: dict[str, Any],
        common: dict[str, Any],
        model: str | None,
        message_id: str | None,
        flags: dict[str, Any],
    ) -> HistoryMessage | None:
        block_type = block.get("type")
        base: dict[str, Any] = dict(common, model=model, message_id=message_id, extra=flags)
        if block_type == "text":
            return HistoryMessage(
                role="assistant", kind="text", text=str(block.get("text", "")), **base
            )
        if block_type == "thinking":
            text = str(block.get("thinking", ""))
            return HistoryMessage(role="assistant", kind="thinking", text=text, **base)
        if block_type == "redacted_thinking":
            base["extra"] = dict(flags, redacted=True)
            return HistoryMessage(role="assistant", kind="thinking", text="", **base)
        if block_type in ("tool_use", "server_tool_use"):
            return HistoryMessage(
                role="assistant",
                kind="tool_use",
                text="",
                tool_name=_str(block.get("name")),
                tool_input=block.get("input"),
                tool_use_id=_str(block.get("id")),
                **base,
            )
        return None


def _block_key(block: dict[str, Any]) -> int:
    """Identifies a content block repeated on another line of the same message, cheaply."""
    block_type = block.get("type")
    if block_type in ("tool_use", "server_tool_use") and isinstance(block.get("id"), str):
        return hash((block_type, block["id"]))
    text = block.get("text", block.get("thinking"))
    if isinstance(text, str):
        return hash((block_type, len(text), text[:256], text[-256:]))
    return hash(json.dumps(block, sort_keys=True, default=str))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
