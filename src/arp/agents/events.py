"""Normalised events: one shape for what Claude Code, Codex and Gemini CLI print.

Each CLI prints one JSON object a line (its "stream"). A parser here turns a line into one or
more `Event`s, each of a small set of kinds that the web console, the MCP server and the remote
TCP protocol can show without knowing which CLI ran:

=============  ==============================================================================
kind           meaning, and the fields it fills
=============  ==============================================================================
``text``       words from the agent (or a line that was not JSON): ``text``
``thinking``   the agent's reasoning, when the CLI shows it: ``text``
``tool_call``  the agent calls a tool: ``tool_name``, ``tool_id``, ``tool_input`` (arguments)
``tool_result``what the tool returned: ``tool_id``, ``tool_name`` (when known), ``text``,
               ``is_error``
``result``     the run's final answer: ``text``, ``is_error``, ``usage``
``error``      the CLI reported an error: ``text``
``stderr``     one line the CLI wrote to stderr: ``text``
``system``     bookkeeping the CLI prints (init, turn started, …); ``agent_session_id`` when the
               line names the CLI's own conversation id
``prompt``     written by ARP, not the CLI: the prompt a run was started with (``text``)
``status``     written by ARP: a run ended (``text`` says how, ``exit_code``, ``status``)
``approval_request``   written by ARP in ``ask`` mode: the agent waits for a person's decision
               (``tool_name``, ``tool_input``, ``tool_id``, ``text`` the title, and the
               ``approval`` fields ``approval_id``, ``requested_at``, ``expires_at``)
``approval_decision``  written by ARP: that approval was decided (``approval_id``,
               ``decision`` allow|deny, ``by`` person|timeout|cancel, ``message``, ``remember``)
=============  ==============================================================================

An event's ``approval`` fields are written at the top level of its JSON, beside the others.

Every event keeps the CLI's line in ``raw`` (a JSON value, or the string for a non-JSON line).
A line that yields several events (a Claude message with text and a tool call) keeps ``raw`` on
the first of them only, so the stored output holds each line once.

This module is pure: no asyncio, no files; the time is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

EventKind = Literal[
    "text",
    "thinking",
    "tool_call",
    "tool_result",
    "result",
    "error",
    "stderr",
    "system",
    "prompt",
    "status",
    "approval_request",
    "approval_decision",
]
APPROVAL_FIELDS: Final = (
    "approval_id",
    "requested_at",
    "expires_at",
    "decision",
    "by",
    "message",
    "remember",
)
"""The keys an approval event carries besides the common ones (its ``approval`` mapping)."""
EVENT_KINDS: Final[frozenset[str]] = frozenset(
    {
        "approval_request",
        "approval_decision",
        "text",
        "thinking",
        "tool_call",
        "tool_result",
        "result",
        "error",
        "stderr",
        "system",
        "prompt",
        "status",
    }
)

MAX_TOOL_TEXT = 64 * 1024
"""A tool result's text is cut to this many characters in ``text`` (``raw`` keeps it all)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and money a run reported; ``None`` where the CLI did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_json(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        return cls(
            input_tokens=_int_or_none(data.get("input_tokens")),
            output_tokens=_int_or_none(data.get("output_tokens")),
            cost_usd=_float_or_none(data.get("cost_usd")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=_add(self.input_tokens, other.input_tokens),
            output_tokens=_add(self.output_tokens, other.output_tokens),
            cost_usd=_add(self.cost_usd, other.cost_usd),
        )


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before the session log numbers and stamps it (what a parser returns)."""

    kind: EventKind
    text: str | None = None
    tool_name: str | None = None
    tool_id: str | None = None
    tool_input: Any = None
    is_error: bool | None = None
    usage: Usage | None = None
    agent_session_id: str | None = None
    exit_code: int | None = None
    status: str | None = None
    raw: Any = None
    raw_text: str | None = None
    """``raw``'s exact JSON text, when it came from a line (stored as is, not re-encoded)."""
    approval: dict[str, Any] | None = None
    """An approval event's own fields (`APPROVAL_FIELDS`), or a prompt's ``attachments``."""


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event of a session's output.

    ``seq`` counts from 1 and has no gaps within a session; ``ts`` is Unix time in seconds;
    ``run`` counts the session's runs from 0 (a follow-up prompt starts run 1, …).
    """

    seq: int
    ts: float
    run: int
    kind: EventKind
    text: str | None = None
    tool_name: str | None = None
    tool_id: str | None = None
    tool_input: Any = None
    is_error: bool | None = None
    usage: Usage | None = None
    agent_session_id: str | None = None
    exit_code: int | None = None
    status: str | None = None
    raw: Any = None
    raw_text: str | None = field(default=None, compare=False, repr=False)
    approval: dict[str, Any] | None = None

    @classmethod
    def from_draft(cls, draft: Draft, *, seq: int, ts: float, run: int) -> Event:
        return cls(
            seq=seq,
            ts=ts,
            run=run,
            kind=draft.kind,
            text=draft.text,
            tool_name=draft.tool_name,
            tool_id=draft.tool_id,
            tool_input=draft.tool_input,
            is_error=draft.is_error,
            usage=draft.usage,
            agent_session_id=draft.agent_session_id,
            exit_code=draft.exit_code,
            status=draft.status,
            raw=draft.raw,
            raw_text=draft.raw_text,
            approval=draft.approval,
        )

    def to_json(self, *, with_raw: bool = True) -> dict[str, Any]:
        """The JSON form; fields that are ``None`` are left out (``seq`` always comes first)."""
        out: dict[str, Any] = {"seq": self.seq, "ts": self.ts, "run": self.run, "kind": self.kind}
        # Spelled out rather than looped over: this runs for every event stored.
        if self.text is not None:
            out["text"] = self.text
        if self.tool_name is not None:
            out["tool_name"] = self.tool_name
        if self.tool_id is not None:
            out["tool_id"] = self.tool_id
        if self.tool_input is not None:
            out["tool_input"] = self.tool_input
        if self.is_error is not None:
            out["is_error"] = self.is_error
        if self.usage is not None:
            out["usage"] = self.usage.to_json()
        if self.agent_session_id is not None:
            out["agent_session_id"] = self.agent_session_id
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.status is not None:
            out["status"] = self.status
        if self.approval is not None:
            out.update(self.approval)
        if with_raw and self.raw is not None:
            out["raw"] = self.raw
        return out

    def to_line(self) -> str:
        """One line of JSON, no newline: the stored and the streamed form.

        Always encodable as UTF-8: a lone surrogate (Node's JSON.stringify writes ``"\\ud83d"``
        for an emoji cut in half, and json.loads keeps it) is written as its ``\\u`` escape.
        """
        line = self._encode(_ENCODER)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                line = self._encode(_ASCII_ENCODER)
        return line

    def _encode(self, encoder: json.JSONEncoder) -> str:
        if self.raw_text is None:
            return encoder.encode(self.to_json())
        # The CLI's line is valid JSON already: splice it in rather than encode it again.
        head = encoder.encode(self.to_json(with_raw=False))
        raw_text = self.raw_text
        if encoder is _ASCII_ENCODER and not raw_text.isascii():
            raw_text = encoder.encode(self.raw)
        return f'{head[:-1]},"raw":{raw_text}}}'

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        kind = data.get("kind")
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        return cls(
            seq=int(data["seq"]),
            ts=float(data["ts"]),
            run=int(data.get("run", 0)),
            kind=kind,
            text=data.get("text"),
            tool_name=data.get("tool_name"),
            tool_id=data.get("tool_id"),
            tool_input=data.get("tool_input"),
            is_error=data.get("is_error"),
            usage=Usage.from_json(data.get("usage")),
            agent_session_id=data.get("agent_session_id"),
            exit_code=data.get("exit_code"),
            status=data.get("status"),
            raw=data.get("raw"),
            approval=(
                {key: data[key] for key in APPROVAL_FIELDS if key in data}
                if kind in ("approval_request", "approval_decision")
                else {"attachments": data["attachments"]}
                if kind == "prompt" and isinstance(data.get("attachments"), list)
                else None
            ),
        )

    @classmethod
    def from_line(cls, line: str) -> Event:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("an event line must hold a JSON object")
        return cls.from_json(data)


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Parsers: one per CLI, each a small stateful object (it remembers tool names by id).


class StreamParser:
    """Turns one line of a CLI's stdout into drafts. Subclasses handle one CLI's JSON."""

    def __init__(self) -> None:
        self._tool_names: dict[str, str] = {}

    def parse_line(self, line: str) -> list[Draft]:
        """Drafts for one line (without its newline). Never raises: odd input becomes text."""
        stripped = line.strip()
        if not stripped:
            return []
        try:
            data = json.loads(stripped, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            # Not JSON, or JSON a browser's JSON.parse refuses (NaN, Infinity) or that nests
            # deeper than Python parses: kept as the text it is.
            return [Draft("text", text=line, raw=line)]
        if not isinstance(data, dict):
            return [Draft("text", text=stripped, raw=data)]
        try:
            drafts = list(self.parse_object(data))
        except (TypeError, ValueError, AttributeError, KeyError):
            drafts = []
        if not drafts:
            return [Draft("system", raw=data)]
        first = drafts[0]
        # Positional, not dataclasses.replace: this runs for every line a CLI prints.
        drafts[0] = Draft(
            first.kind,
            first.text,
            first.tool_name,
            first.tool_id,
            first.tool_input,
            first.is_error,
            first.usage,
            first.agent_session_id,
            first.exit_code,
            first.status,
            data,
            stripped,
        )
        return drafts

    def parse_object(self, data: dict[str, Any]) -> Iterator[Draft]:  # pragma: no cover
        raise NotImplementedError

    def _remember_tool(self, tool_id: str | None, name: str | None) -> None:
        if tool_id and name and len(self._tool_names) < 10_000:
            self._tool_names[tool_id] = name

    def _tool_name(self, tool_id: str | None) -> str | None:
        return self._tool_names.get(tool_id) if tool_id else None


class ClaudeParser(StreamParser):
    """Claude Code ``--output-format stream-json --verbose``."""

    def parse_object(self, data: dict[str, Any]) -> Iterator[Draft]:
        kind = data.get("type")
        if kind == "system":
            yield Draft("system", agent_session_id=_str_or_none(data.get("session_id")))
        elif kind == "assistant":
            for block in _content_blocks(data):
                btype = block.get("type")
                if btype == "text":
                    yield Draft("text", text=str(block.get("text", "")))
                elif btype == "thinking":
                    yield Draft("thinking", text=str(block.get("thinking", "")))
                elif btype in ("tool_use", "server_tool_use"):
                    tool_id = _str_or_none(block.get("id"))
                    name = _str_or_none(block.get("name"))
                    self._remember_tool(tool_id, name)
                    yield Draft(
                        "tool_call", tool_name=name, tool_id=tool_id, tool_input=block.get("input")
                    )
        elif kind == "user":
            for block in _content_blocks(data):
                if block.get("type") == "tool_result":
                    tool_id = _str_or_none(block.get("tool_use_id"))
                    yield Draft(
                        "tool_result",
                        tool_id=tool_id,
                        tool_name=self._tool_name(tool_id),
                        text=_clip(_content_text(block.get("content"))),
                        is_error=bool(block.get("is_error", False)),
                    )
        elif kind == "result":
            usage = _dict(data.get("usage"))
            is_error = bool(data.get("is_error", False)) or data.get("subtype") not in (
                None,
                "success",
            )
            text = data.get("result")
            if text is None and is_error:
                text = str(data.get("subtype", "error"))
            yield Draft(
                "result",
                text=None if text is None else str(text),
                is_error=is_error,
                usage=Usage(
                    input_tokens=_int_or_none(usage.get("input_tokens")),
                    output_tokens=_int_or_none(usage.get("output_tokens")),
                    cost_usd=_float_or_none(data.get("total_cost_usd")),
                ),
                agent_session_id=_str_or_none(data.get("session_id")),
            )


class CodexParser(StreamParser):
    """Codex ``exec --json`` (thread/turn/item events)."""

    def parse_object(self, data: dict[str, Any]) -> Iterator[Draft]:
        kind = data.get("type")
        if kind == "thread.started":
            yield Draft("system", agent_session_id=_str_or_none(data.get("thread_id")))
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = data.get("item")
            if isinstance(item, dict):
                yield from self._item(kind, item)
        elif kind == "turn.completed":
            usage = _dict(data.get("usage"))
            yield Draft(
                "result",
                is_error=False,
                usage=Usage(
                    input_tokens=_int_or_none(usage.get("input_tokens")),
                    output_tokens=_int_or_none(usage.get("output_tokens")),
                ),
            )
        elif kind == "turn.failed":
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            yield Draft("result", text=str(message or "turn failed"), is_error=True)
        elif kind == "error":
            yield Draft("error", text=str(data.get("message", "error")))

    def _item(self, kind: str, item: dict[str, Any]) -> Iterator[Draft]:
        itype = item.get("type")
        item_id = _str_or_none(item.get("id"))
        done = kind == "item.completed"
        if itype == "agent_message":
            if done:
                yield Draft("text", text=str(item.get("text", "")))
        elif itype == "reasoning":
            if done:
                yield Draft("thinking", text=str(item.get("text", "")))
        elif itype == "command_execution":
            if kind == "item.started":
                self._remember_tool(item_id, "command_execution")
                yield Draft(
                    "tool_call",
                    tool_name="command_execution",
                    tool_id=item_id,
                    tool_input={"command": item.get("command")},
                )
            elif done:
                exit_code = item.get("exit_code")
                yield Draft(
                    "tool_result",
                    tool_name="command_execution",
                    tool_id=item_id,
                    text=_clip(str(item.get("aggregated_output", ""))),
                    is_error=item.get("status") == "failed"
                    or (isinstance(exit_code, int) and exit_code != 0),
                )
        elif itype == "file_change":
            if done:
                yield Draft(
                    "tool_call",
                    tool_name="file_change",
                    tool_id=item_id,
                    tool_input={"changes": item.get("changes")},
                )
                yield Draft(
                    "tool_result",
                    tool_name="file_change",
                    tool_id=item_id,
                    text=str(item.get("status", "")),
                    is_error=item.get("status") == "failed",
                )
        elif itype == "mcp_tool_call":
            name = f"{item.get('server', '')}.{item.get('tool', '')}".strip(".") or "mcp_tool_call"
            if kind == "item.started":
                self._remember_tool(item_id, name)
                yield Draft(
                    "tool_call", tool_name=name, tool_id=item_id, tool_input=item.get("arguments")
                )
            elif done:
                yield Draft(
                    "tool_result",
                    tool_name=name,
                    tool_id=item_id,
                    text=_clip(_content_text(item.get("result"))),
                    is_error=item.get("status") == "failed",
                )
        elif itype == "web_search":
            if done:
                yield Draft(
                    "tool_call",
                    tool_name="web_search",
                    tool_id=item_id,
                    tool_input={"query": item.get("query")},
                )
        elif itype == "error":
            yield Draft("error", text=str(item.get("message", "error")))


class GeminiParser(StreamParser):
    """Gemini CLI ``--output-format stream-json``."""

    def parse_object(self, data: dict[str, Any]) -> Iterator[Draft]:
        kind = data.get("type")
        if kind == "init":
            yield Draft("system", agent_session_id=_str_or_none(data.get("session_id")))
        elif kind == "message":
            if data.get("role") == "assistant":
                yield Draft("text", text=str(data.get("content", "")))
        elif kind == "tool_use":
            tool_id = _str_or_none(data.get("tool_id"))
            name = _str_or_none(data.get("tool_name"))
            self._remember_tool(tool_id, name)
            yield Draft(
                "tool_call", tool_name=name, tool_id=tool_id, tool_input=data.get("parameters")
            )
        elif kind == "tool_result":
            tool_id = _str_or_none(data.get("tool_id"))
            error = data.get("error")
            failed = data.get("status") not in (None, "success")
            text = data.get("output")
            if text is None and isinstance(error, dict):
                text = error.get("message")
            yield Draft(
                "tool_result",
                tool_id=tool_id,
                tool_name=self._tool_name(tool_id),
                text=_clip(_content_text(text)),
                is_error=failed,
            )
        elif kind == "error":
            yield Draft("error", text=str(data.get("message", "error")))
        elif kind == "result":
            stats = _dict(data.get("stats"))
            error = data.get("error")
            failed = data.get("status") not in (None, "success")
            text = error.get("message") if isinstance(error, dict) else None
            yield Draft(
                "result",
                text=None if text is None else str(text),
                is_error=failed,
                usage=Usage(
                    input_tokens=_int_or_none(stats.get("input_tokens")),
                    output_tokens=_int_or_none(stats.get("output_tokens")),
                ),
            )


PARSERS: Final[dict[str, Callable[[], StreamParser]]] = {
    "claude": ClaudeParser,
    "codex": CodexParser,
    "gemini": GeminiParser,
}


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _content_blocks(data: dict[str, Any]) -> list[dict[str, Any]]:
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _content_text(content: Any) -> str:
    """The readable text of a tool result, which CLIs give as a string or a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        if parts:
            return "\n".join(parts)
    if isinstance(content, dict) and isinstance(content.get("content"), list | str):
        return _content_text(content["content"])
    return json.dumps(content, ensure_ascii=False)


def _clip(text: str) -> str:
    if len(text) <= MAX_TOOL_TEXT:
        return text
    return text[:MAX_TOOL_TEXT] + f"… [{len(text) - MAX_TOOL_TEXT} more characters in raw]"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


__all__ = [
    "EVENT_KINDS",
    "PARSERS",
    "ClaudeParser",
    "CodexParser",
    "Draft",
    "Event",
    "EventKind",
    "GeminiParser",
    "StreamParser",
    "Usage",
]
