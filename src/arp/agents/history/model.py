"""The one shape every agent's history is read into: sessions, projects, messages, pages.

Claude, Codex and Gemini each store conversations their own way; the readers normalise them into
these frozen values so the HTTP API, the MCP server, the web console and the remote TCP protocol
render one thing. `to_json()` gives the wire form (camelCase keys, ISO 8601 UTC times).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The agents whose history can be browsed: the executors table's, in its order.
from arp.agents.executors import AGENTS as AGENTS
from arp.errors import ArpError

KINDS = ("text", "thinking", "tool_use", "tool_result", "summary")
"""What one normalised message holds."""

_ID = re.compile(r"[A-Za-z0-9._-]{1,255}")


class HistoryNotFound(ArpError):
    """No such agent, project or session (or an id that could never name one)."""

    status = 404


class HistoryRequestError(ArpError):
    """A paging or filter argument that cannot be used (negative offset, limit not a number)."""

    status = 400


def check_agent(agent: str) -> str:
    if agent not in AGENTS:
        raise HistoryNotFound(f"unknown agent {agent!r}: use one of {', '.join(AGENTS)}")
    return agent


def check_id(kind: str, value: str) -> str:
    """Refuse, as not found, any id that could not be a plain file-name part.

    Ids are only ever looked up in maps built by listing the agent's folders; this check is the
    belt to those braces, so '/', '..' or a NUL never get near a path.
    """
    if not _ID.fullmatch(value) or ".." in value or value == ".":
        raise HistoryNotFound(f"no {kind} {value!r}")
    return value


def page_bounds(offset: int, limit: int | None, default: int, maximum: int) -> tuple[int, int]:
    """A checked (offset, limit): limit defaults to `default` and is capped at `maximum`."""
    if limit is None:
        limit = default
    if offset < 0:
        raise HistoryRequestError(f"offset must be 0 or more, got {offset}")
    if limit < 0:
        raise HistoryRequestError(f"limit must be 0 or more, got {limit}")
    return offset, min(limit, maximum)


def parse_time(value: object) -> float | None:
    """Seconds since the epoch from an ISO 8601 string or epoch milliseconds, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0 if value > 1e11 else float(value)
        return seconds
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def format_time(seconds: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, the form the agents themselves write."""
    if seconds is None:
        return None
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def clip(text: str, chars: int) -> str:
    """One line of at most `chars` characters, for titles."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One renderable piece of a conversation: a text, a thought, a tool call or its result."""

    role: str
    """user | assistant | system"""
    kind: str
    """text | thinking | tool_use | tool_result | summary"""
    text: str
    timestamp: str | None = None
    id: str | None = None
    """The agent's id of the record this came from (Claude uuid, Gemini message id, ...)."""
    message_id: str | None = None
    """The model API message several records may share (Claude `message.id`)."""
    parent_id: str | None = None
    tool_name: str | None = None
    tool_input: Any = None
    tool_use_id: str | None = None
    """Links a tool_result to its tool_use."""
    is_error: bool = False
    model: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Raw details worth rendering (usage, images, status, sidechain flag, ...)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "kind": self.kind, "text": self.text}
        optional = {
            "timestamp": self.timestamp,
            "id": self.id,
            "messageId": self.message_id,
            "parentId": self.parent_id,
            "toolName": self.tool_name,
            "toolInput": self.tool_input,
            "toolUseId": self.tool_use_id,
            "model": self.model,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        if self.is_error:
            out["isError"] = True
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One stored conversation, as listed."""

    agent: str
    id: str
    project_id: str
    project_path: str | None
    """The real working directory (from inside the files; None when nothing says)."""
    title: str
    """A title the agent or person gave, else the first prompt, clipped."""
    created: float | None
    last_activity: float
    message_count: int
    size: int
    """Bytes on disk."""
    git_branch: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "id": self.id,
            "projectId": self.project_id,
            "projectPath": self.project_path,
            "title": self.title,
            "createdAt": format_time(self.created),
            "lastActivity": format_time(self.last_activity),
            "messageCount": self.message_count,
            "sizeBytes": self.size,
            "gitBranch": self.git_branch,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Project:
    """The sessions of one working directory."""

    agent: str
    id: str
    path: str | None
    session_count: int
    last_activity: float | None
    recent_sessions: tuple[SessionSummary, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "id": self.id,
            "path": self.path,
            "sessionCount": self.session_count,
            "lastActivity": format_time(self.last_activity),
            "recentSessions": [session.to_json() for session in self.recent_sessions],
        }


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of sessions, newest first."""

    items: tuple[SessionSummary, ...]
    total: int
    offset: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": [session.to_json() for session in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "hasMore": self.offset + len(self.items) < self.total,
        }


@dataclass(frozen=True, slots=True)
class MessagePage:
    """A page of one session's messages, in conversation order.

    A long session is parsed progressively: until `complete`, `total` counts the messages
    parsed so far (a lower bound) and later requests carry the parse on.
    """

    session: SessionSummary
    items: tuple[HistoryMessage, ...]
    total: int
    offset: int
    limit: int
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        messages = []
        for index, message in enumerate(self.items, start=self.offset):
            item = message.to_json()
            item["index"] = index
            messages.append(item)
        return {
            "session": self.session.to_json(),
            "messages": messages,
            "total": self.total,
            "complete": self.complete,
            "offset": self.offset,
            "limit": self.limit,
            "hasMore": not self.complete or self.offset + len(self.items) < self.total,
        }


@dataclass(frozen=True, slots=True)
class DeletedSession:
    """What a delete removed."""

    session: SessionSummary
    removed: tuple[str, ...]
    """The paths removed (the session file, then its side folder if it had one)."""

    def to_json(self) -> dict[str, Any]:
        return {"deleted": True, "agent": self.session.agent, "id": self.session.id}
