"""What a session is to its callers: the config, the start request, the snapshot, a page.

These are the values every face exchanges with `arp.agents.sessions.SessionManager` (HTTP API,
console, MCP, remote protocol, gateway), with their JSON:

- `SessionConfig`: the manager's places; its bounds and deadlines are `arp.config.SessionBounds`
  (inherited), so every default is documented there once.
- `StartRequest.from_json` reads an API body (camelCase or snake_case names; a bad field is a
  400); `to_json`/`from_stored` are its stored form; `run_spec` gives one run's options.
- `Session` is a frozen snapshot of one session's state; `to_json` is the API's form (times as
  ISO 8601 UTC strings).
- `SessionPage` is "the state plus the events after seq N", the one page every face serves:
  ``next_after`` is the last event's seq (``after`` when the page is empty) and ``has_more``
  says the session holds events past it, so a poller asks again from ``next_after`` and misses
  and repeats nothing. Its lines are the stored JSON lines, sent as they are where a face can.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from arp.agents.argv import RunSpec
from arp.agents.errors import BadRequest
from arp.agents.events import Event, Usage
from arp.agents.executors import AGENTS
from arp.config import (
    ATTACHMENT_BOUNDS,
    CHANGES_BOUNDS,
    AttachmentBounds,
    ChangesBounds,
    SessionBounds,
)

Status = Literal["running", "completed", "failed", "cancelled", "interrupted"]
STATUSES: Final = ("running", "completed", "failed", "cancelled", "interrupted")


@dataclass(frozen=True, slots=True)
class SessionConfig(SessionBounds):
    """The session manager's places, and (inherited) its bounds and deadlines (arpc's flags
    build one)."""

    data_dir: Path | None = None
    """Where sessions are stored (``<data_dir>/sessions/``); None keeps them in memory only."""
    binaries: Mapping[str, str | None] = field(default_factory=dict)
    """Executor name → the binary its flag names (None or missing: look it up)."""
    allowed_root: Path | None = None
    """Project paths must lie under this folder (beyond: 403)."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to every child's environment."""
    default_project: Path | None = None
    """The cwd of a session that names no project (None: ``allowed_root``, else arpc's cwd)."""
    keep_runs_on_stop: bool = False
    """Closing the manager leaves running agents running, for the next arpc to re-attach to
    (``arpc --keep-runs-on-stop``); by default they are stopped and become ``interrupted``."""
    attachments: AttachmentBounds = ATTACHMENT_BOUNDS
    """Bounds of the images and files a prompt may carry."""
    changes: ChangesBounds = CHANGES_BOUNDS
    """Bounds of what-changed snapshots and diffs."""


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A request to start a session (also the options its follow-ups reuse)."""

    executor: str
    prompt: str
    model: str | None = None
    project_path: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    no_tools: bool = False
    max_turns: int | None = None
    append_system_prompt: str | None = None
    resume_id: str | None = None
    """Continue an earlier conversation of the CLI (its session/thread id) instead of a new one."""

    @classmethod
    def from_json(cls, data: Any) -> StartRequest:
        """From an API body; accepts camelCase and snake_case names; a bad field is a 400."""
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        executor = _pick(data, "executor")
        if not isinstance(executor, str) or not executor.strip():
            raise BadRequest(f"'executor' is required: one of {', '.join(AGENTS)}")
        prompt = _pick(data, "prompt")
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' is required and must be a string")
        max_turns = _pick(data, "max_turns", "maxTurns")
        if max_turns is not None and (
            not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1
        ):
            raise BadRequest("'maxTurns' must be a whole number of at least 1")
        no_tools = _pick(data, "no_tools", "noTools")
        use_tools = _pick(data, "use_tools", "useTools")
        if no_tools is not None and not isinstance(no_tools, bool):
            raise BadRequest("'noTools' must be true or false")
        if use_tools is not None and not isinstance(use_tools, bool):
            raise BadRequest("'useTools' must be true or false")
        return cls(
            executor=executor,
            prompt=prompt,
            model=_opt_str(data, "model"),
            project_path=_opt_str(data, "project_path", "projectPath"),
            permission_mode=_opt_str(data, "permission_mode", "permissionMode"),
            allowed_tools=_tools(data, "allowed_tools", "allowedTools"),
            disallowed_tools=_tools(data, "disallowed_tools", "disallowedTools"),
            no_tools=bool(no_tools) or use_tools is False,
            max_turns=max_turns,
            append_system_prompt=_opt_str(data, "append_system_prompt", "appendSystemPrompt"),
            resume_id=_opt_str(
                data, "resume", "resume_id", "resumeId", "agent_session_id", "agentSessionId"
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form (snake_case, every field); `from_stored` reads it back."""
        out = asdict(self)
        out["allowed_tools"] = list(self.allowed_tools)
        out["disallowed_tools"] = list(self.disallowed_tools)
        return out

    @classmethod
    def from_stored(cls, req: dict[str, Any]) -> StartRequest:
        """From `to_json`'s form (a stored session); a missing required key is a KeyError."""
        return cls(
            executor=req["executor"],
            prompt=req["prompt"],
            model=req.get("model"),
            project_path=req.get("project_path"),
            permission_mode=req.get("permission_mode"),
            allowed_tools=tuple(req.get("allowed_tools") or ()),
            disallowed_tools=tuple(req.get("disallowed_tools") or ()),
            no_tools=bool(req.get("no_tools", False)),
            max_turns=req.get("max_turns"),
            append_system_prompt=req.get("append_system_prompt"),
            resume_id=req.get("resume_id"),
        )

    def run_spec(self, prompt: str, resume_id: str | None) -> RunSpec:
        """One run's options, not yet checked (`Executor.prepare` checks them)."""
        return RunSpec(
            prompt=prompt,
            model=self.model,
            permission_mode=self.permission_mode,
            allowed_tools=self.allowed_tools,
            disallowed_tools=self.disallowed_tools,
            no_tools=self.no_tools,
            max_turns=self.max_turns,
            append_system_prompt=self.append_system_prompt,
            resume_id=resume_id,
        )


@dataclass(frozen=True, slots=True)
class Session:
    """A snapshot of one session's state (events are read separately)."""

    session_id: str
    executor: str
    status: Status
    prompt: str
    """The first run's prompt."""
    model: str | None
    project_path: str
    permission_mode: str | None
    agent_session_id: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    """When the latest run started."""
    ended_at: float | None
    """When the latest run ended (None while it runs)."""
    exit_code: int | None
    """The latest run's exit code (negative: killed by that signal; None: never started)."""
    usage: Usage
    """Summed over every run's final result."""
    runs: int
    last_seq: int
    error: str | None
    """Why the latest run failed, when ARP or the CLI said so."""
    pid: int | None
    """The running child's pid (its process group id too); None when not running."""
    pending_approvals: tuple[dict[str, Any], ...] = ()
    """``ask`` mode: the approvals waiting for a person, oldest first (`Approval.to_json`)."""
    attachments: tuple[dict[str, Any], ...] = ()
    """Every run's attachments, oldest first (`StoredAttachment.to_json`)."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form; times are ISO 8601 UTC strings."""
        return {
            "session_id": self.session_id,
            "executor": self.executor,
            "status": self.status,
            "prompt": self.prompt,
            "model": self.model,
            "project_path": self.project_path,
            "permission_mode": self.permission_mode,
            "agent_session_id": self.agent_session_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "exit_code": self.exit_code,
            "usage": self.usage.to_json(),
            "cost_usd": self.usage.cost_usd,
            "runs": self.runs,
            "last_seq": self.last_seq,
            "error": self.error,
            "pid": self.pid,
            "pending_approvals": list(self.pending_approvals),
            "attachments": list(self.attachments),
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


NoticeKind = Literal["approval_requested", "completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person wants to be told of (`SessionManager.subscribe`): an approval waits
    for them (``approval`` is its `Approval.to_json`), or a run ended."""

    kind: NoticeKind
    session: Session
    approval: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A session's state and the stored event lines after ``after`` (see the module doc)."""

    session: Session
    after: int
    lines: tuple[tuple[int, str], ...]
    """(seq, stored JSON line) of each event, oldest first."""

    @property
    def next_after(self) -> int:
        return self.lines[-1][0] if self.lines else max(self.after, 0)

    @property
    def has_more(self) -> bool:
        return self.next_after < self.session.last_seq

    def events(self) -> list[Event]:
        return [Event.from_line(line) for _, line in self.lines]

    def head(self, count: int) -> SessionPage:
        """The page cut to its first ``count`` events (``next_after`` and ``has_more`` follow)."""
        return replace(self, lines=self.lines[: max(0, count)])

    def to_json(self, *, with_raw: bool = False, max_chars: int | None = None) -> dict[str, Any]:
        """The page's one JSON form (MCP's ``get_session`` and the remote ``session_output``
        use it as is; the HTTP API puts ``has_more``/``next_after`` beside the state).

        ``max_chars``: stop adding events past this much JSON (at least one is always kept);
        ``next_after_seq`` and ``has_more`` then say where to ask again."""
        events: list[dict[str, Any]] = []
        size = 0
        for event in self.events():
            item = event.to_json(with_raw=with_raw)
            if max_chars is not None:
                size += len(json.dumps(item, ensure_ascii=False))
                if events and size > max_chars:
                    break
            events.append(item)
        page = self.head(len(events))
        return {
            "session": self.session.to_json(),
            "events": events,
            "next_after_seq": page.next_after,
            "has_more": page.has_more,
        }


def _pick(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in data:
            return data[name]
    return None


def _opt_str(data: dict[str, Any], *names: str) -> str | None:
    value = _pick(data, *names)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{names[-1]!r} must be a string")
    return value if value.strip() else None


def _tools(data: dict[str, Any], *names: str) -> tuple[str, ...]:
    value = _pick(data, *names)
    if value is None:
        return ()
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise BadRequest(f"{names[-1]!r} must be a list of tool names or a comma-separated string")
    return tuple(item for item in items if item)
