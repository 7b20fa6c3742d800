"""The session manager: agent CLI runs as child processes, their output numbered and kept.

This is the one implementation of sessions; the HTTP API, the web console, the MCP server and
the remote TCP protocol are adapters over it. Public interface::

    config = SessionConfig(data_dir=Path(...), binaries={"claude": None, ...}, max_sessions=8)
    async with SessionManager(config) as manager:          # start() / close() / wait_closed()
        session = await manager.start_session(StartRequest(executor="claude", prompt="hi"))
        async for event in manager.follow(session.session_id, after_seq=0):
            ...                                             # replay, then live; ends with the run
        session = await manager.wait(session.session_id, timeout=60.0)
        session = await manager.send_message(session.session_id, "and now?")   # resumes
        session = await manager.cancel(session.session_id)  # SIGINT → SIGTERM → SIGKILL
        manager.get(session_id) -> Session                  # a frozen snapshot
        manager.list(limit=50, offset=0) -> list[Session]   # newest first
        manager.count(), manager.running_count()
        manager.events_after(session_id, after_seq=0, limit=1000) -> list[Event]
        manager.lines_after(session_id, after_seq=0, limit=1000) -> list[(seq, JSON line)]
        async for batch in manager.follow_lines(session_id, after_seq): ...   # lines, batched
        await manager.delete(session_id)                    # stops it, removes its files

    StartRequest(executor, prompt, model=None, project_path=None, permission_mode=None,
                 allowed_tools=(), disallowed_tools=(), no_tools=False, max_turns=None,
                 append_system_prompt=None, resume_id=None)   # StartRequest.from_json(body)

- Errors are `arp.agents.errors.SessionError` subclasses carrying the HTTP status: 400 bad
  request (unknown executor, binary not found, missing project folder, option the executor does
  not honour), 403 project outside the allowed root, 404 unknown session, 409 wrong state,
  413 prompt too large, 429 too many running sessions, 503 manager closed. A project path is
  checked against the allowed root before anything else (403 whether or not it exists, so
  nothing is learnt of what lies outside); a relative one is taken from the allowed root (else
  the default project, else arpc's cwd). A model, tool name or conversation id that could be
  taken for a CLI flag (a leading ``-``, whitespace) is a 400, and so is text holding a lone
  UTF-16 surrogate.
- A session has runs: the first prompt is run 0, each follow-up starts the next run resuming the
  CLI's own conversation (``agent_session_id``, taken from the run's first event that names it).
  ``status`` is the latest run's: ``running``, ``completed`` (exit 0, no error result),
  ``failed``, ``cancelled`` or ``interrupted`` (it was running when arpc stopped).
- Output: `arp.agents.events.Event`, numbered from 1 without gaps across runs. Besides the CLI's
  own events the manager writes a ``prompt`` event when a run starts and a ``status`` event when
  it ends. `follow_lines` yields the stored JSON lines (what SSE and WebSocket send as they are)
  and an empty batch every ``idle_tick`` seconds of silence so a stream can send a keep-alive.
- Each child runs in a new session/process group (``start_new_session``), with arpc's
  environment plus ``ARP_SESSION_ID=<session id>`` and `SessionConfig.extra_env`, stdin from
  /dev/null and cwd = the project path (default: ``allowed_root``, else arpc's cwd). When the
  child exits, whatever is left of its process group is killed, so nothing outlives a run.
- Retention: at most ``max_kept_sessions`` sessions are kept. Starting one more evicts the
  oldest finished ones (as a delete would: their stored files go too); a 429 comes only when
  every kept session is running. A restart with a lower bound evicts the oldest likewise.
- Storage, when ``data_dir`` is set: ``<data_dir>/sessions/<session_id>/session.json`` (state,
  rewritten atomically on each change) and ``events.jsonl`` (one event a line). `start()` loads
  them; a session that was ``running`` becomes ``interrupted``, and if the agent that arpc
  left behind is still alive (same pid, start time and boot, read from /proc) its process group
  is killed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from arp.agents.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    ManagerClosed,
    PromptTooLarge,
    SessionNotFound,
    TooManySessions,
)
from arp.agents.eventlog import EventLog
from arp.agents.events import Draft, Event, StreamParser, Usage
from arp.agents.executors import Executor, RunSpec, get_executor
from arp.agents.spawn import Child, spawn
from arp.lifecycle import Service

_READER_LIMIT = 2**16
"""A child's stdout/stderr reader buffer (asyncio's default for subprocess pipes)."""

log = logging.getLogger(__name__)

Status = Literal["running", "completed", "failed", "cancelled", "interrupted"]
STATUSES: Final = ("running", "completed", "failed", "cancelled", "interrupted")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Bounds, deadlines and places of the session manager (arpc's flags build one)."""

    data_dir: Path | None = None
    """Where sessions are stored (``<data_dir>/sessions/``); None keeps them in memory only."""
    binaries: Mapping[str, str | None] = field(default_factory=dict)
    """Executor name → the binary its flag names (None or missing: look it up)."""
    max_sessions: int = 8
    """Runs going on at once (beyond: 429)."""
    max_kept_sessions: int = 10_000
    """Sessions kept, running or not: a new one beyond this evicts the oldest finished ones
    (their files too); 429 only when every kept session is running."""
    allowed_root: Path | None = None
    """Project paths must lie under this folder (beyond: 403)."""
    max_prompt_bytes: int = 256 * 1024
    """The largest prompt, in UTF-8 bytes (beyond: 413)."""
    memory_events: int = 2000
    """Events of each session kept in memory besides the file."""
    memory_bytes: int = 512 * 1024
    """Bytes of events of each session kept in memory besides the file."""
    max_output_bytes: int = 1024 * 1024 * 1024
    """The most output stored per session (checked per chunk read, so it may overshoot by one);
    beyond it one ``error`` event says so, and nothing more is kept."""
    max_line: int = 8 * 1024 * 1024
    """The longest output line kept whole; a longer one is cut (the rest is dropped)."""
    read_chunk: int = 16 * 1024
    """The read size on a child's stdout/stderr: also the most output parsed in one go, which
    keeps each turn of the event loop short while many sessions print at once."""
    sigint_grace: float = 3.0
    """Cancel: how long after SIGINT before SIGTERM."""
    sigterm_grace: float = 3.0
    """Cancel: how long after SIGTERM before SIGKILL."""
    kill_wait: float = 5.0
    """How long to wait for the child after SIGKILL (and for its pipes to close)."""
    idle_tick: float = 15.0
    """A follower gets an empty batch after this much silence (keep-alives)."""
    follow_batch: int = 1000
    """The most lines a follower gets at once."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to every child's environment."""
    default_project: Path | None = None
    """The cwd of a session that names no project (None: ``allowed_root``, else arpc's cwd)."""


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
            raise BadRequest("'executor' is required: one of claude, codex, gemini")
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
        out = asdict(self)
        out["allowed_tools"] = list(self.allowed_tools)
        out["disallowed_tools"] = list(self.disallowed_tools)
        return out


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
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# ---------------------------------------------------------------------------------------------


class _Run:
    """One child process of a session."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.process: Child | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.interrupt_requested = False
        self.result_error: str | None = None
        self.saw_error_result = False
        self.output_capped = False


class _Entry:
    """The manager's mutable record of one session."""

    def __init__(
        self,
        session_id: str,
        request: StartRequest,
        executor: Executor,
        project_path: str,
        folder: Path | None,
        log_: EventLog,
        now: float,
    ) -> None:
        self.session_id = session_id
        self.request = request
        self.executor = executor
        self.project_path = project_path
        self.folder = folder
        self.log = log_
        self.status: Status = "running"
        self.agent_session_id: str | None = request.resume_id
        self.created_at = now
        self.updated_at = now
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.exit_code: int | None = None
        self.usage = Usage()
        self.runs = 0
        self.error: str | None = None
        self.run: _Run | None = None
        self.deleted = False
        self.deleting = False
        """A delete is under way: no new run may start (it would outlive the entry)."""
        self.child: dict[str, Any] | None = None
        """The running child's identity (pid, start time, boot id), kept so that an arpc that
        died without stopping it can find and stop it at the next start."""
        self._changed = asyncio.Event()

    def snapshot(self) -> Session:
        process = self.run.process if self.run is not None else None
        return Session(
            session_id=self.session_id,
            executor=self.executor.name,
            status=self.status,
            prompt=self.request.prompt,
            model=self.request.model,
            project_path=self.project_path,
            permission_mode=self.request.permission_mode,
            agent_session_id=self.agent_session_id,
            created_at=self.created_at,
            updated_at=self.updated_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            exit_code=self.exit_code,
            usage=self.usage,
            runs=self.runs,
            last_seq=self.log.last_seq,
            error=self.error,
            pid=process.pid if process is not None and self.status == "running" else None,
        )

    def changed(self) -> None:
        """Wakes every follower."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
        # the event fires, and a follower whose client left would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def to_meta(self) -> dict[str, Any]:
        return {
            "version": 1,
            "session_id": self.session_id,
            "request": self.request.to_json(),
            "project_path": self.project_path,
            "status": self.status,
            "agent_session_id": self.agent_session_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "usage": self.usage.to_json(),
            "runs": self.runs,
            "error": self.error,
            "child": self.child if self.status == "running" else None,
        }


class SessionManager(Service):
    """Starts, follows, resumes, cancels and deletes agent sessions (see the module docstring)."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self._entries: dict[str, _Entry] = {}
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Parsing output is the manager's CPU work; one chunk at a time, in turn, so the HTTP
        # API stays responsive however many sessions print at once.
        self._ingest = asyncio.Lock()

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Loads stored sessions (running ones become ``interrupted``)."""
        if self._started:
            return
        self._started = True
        if self.config.data_dir is not None:
            (self.config.data_dir / "sessions").mkdir(mode=0o700, parents=True, exist_ok=True)
            self._load()

    async def _shutdown(self) -> None:
        """Stops every run (they become ``interrupted``) and closes the files (once)."""
        runs = [e.run for e in self._entries.values() if e.run is not None]
        for run in runs:
            run.interrupt_requested = True
        await asyncio.gather(*(self._stop(run) for run in runs), return_exceptions=True)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            deadline = self.config.sigint_grace + self.config.sigterm_grace
            _, late = await asyncio.wait(pending, timeout=deadline + 2 * self.config.kill_wait)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self.config.kill_wait)
        for entry in self._entries.values():
            entry.log.close()
            entry.changed()

    # ----------------------------------------------------------------------------- queries

    def get(self, session_id: str) -> Session:
        return self._entry(session_id).snapshot()

    def list(self, limit: int = 50, offset: int = 0) -> builtins.list[Session]:
        """Sessions newest first."""
        limit = max(0, limit)
        offset = max(0, offset)
        ordered = sorted(self._entries.values(), key=lambda e: e.created_at, reverse=True)
        return [entry.snapshot() for entry in ordered[offset : offset + limit]]

    def count(self) -> int:
        return len(self._entries)

    def running_count(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.run is not None)

    def events_after(
        self, session_id: str, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[Event]:
        return self._entry(session_id).log.events_after(after_seq, limit)

    def lines_after(
        self, session_id: str, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, str]]:
        """Stored event lines (seq, JSON) after ``after_seq``: what the streams send as is."""
        return self._entry(session_id).log.lines_after(after_seq, limit)

    async def follow_lines(
        self, session_id: str, after_seq: int = 0
    ) -> AsyncIterator[builtins.list[tuple[int, str]]]:
        """Batches of stored lines after ``after_seq``: the replay, then live ones.

        Ends once every line is delivered and the session is not running (or was deleted);
        yields an empty batch after ``idle_tick`` seconds of silence.
        """
        entry = self._entry(session_id)
        after = after_seq
        while True:
            batch = entry.log.lines_after(after, self.config.follow_batch)
            if batch:
                after = batch[-1][0]
                yield batch
                continue
            if entry.deleted or entry.run is None:
                # The end is written before the run is cleared; one last look catches it.
                batch = entry.log.lines_after(after, self.config.follow_batch)
                if batch:
                    after = batch[-1][0]
                    yield batch
                    continue
                return
            before = entry.log.last_seq
            await entry.wait_changed(self.config.idle_tick)
            if entry.log.last_seq == before and entry.run is not None and not entry.deleted:
                yield []

    async def follow(self, session_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """Events after ``after_seq``, replayed then live, until the session is not running."""
        async for batch in self.follow_lines(session_id, after_seq):
            for _, line in batch:
                yield Event.from_line(line)

    async def wait(self, session_id: str, timeout: float) -> Session:
        """The session once its run ended, or as it is when ``timeout`` seconds have passed."""
        entry = self._entry(session_id)
        run = entry.run
        if run is not None and run.task is not None:
            await _wait_at_most(run.task, timeout)
        return entry.snapshot()

    # ----------------------------------------------------------------------------- commands

    async def start_session(self, request: StartRequest) -> Session:
        """Starts the first run; returns at once with status ``running``."""
        self._check_open()
        executor = get_executor(request.executor)
        request = replace(request, executor=executor.name)
        self._check_prompt(request.prompt)
        spec = self._spec(executor, request, request.prompt, request.resume_id)
        project = self.resolve_project(request.project_path)
        binary = executor.find_binary(self.config.binaries.get(executor.name))
        self._check_capacity(new_session=True)
        evicted = self._evict_for_one_more()
        session_id = str(uuid.uuid4())
        folder = (
            self.config.data_dir / "sessions" / session_id
            if self.config.data_dir is not None
            else None
        )
        entry = _Entry(
            session_id,
            request,
            executor,
            str(project),
            folder,
            self._new_log(folder),
            time.time(),
        )
        self._entries[session_id] = entry
        try:
            self._launch(entry, binary, replace(spec, project_path=str(project)), request.prompt)
        except BaseException:
            # Nothing half-made stays: no entry counting against the limits, no folder.
            self._entries.pop(session_id, None)
            entry.deleted = True
            entry.log.close()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if evicted:
                await asyncio.to_thread(_remove_folders, evicted)
        return entry.snapshot()

    async def send_message(
        self, session_id: str, prompt: str, *, model: str | None = None
    ) -> Session:
        """A follow-up: a new run resuming the CLI's conversation. 409 while a run goes on."""
        self._check_open()
        entry = self._entry(session_id)
        if entry.deleting:
            raise SessionNotFound(f"session {session_id!r} is being deleted")
        if entry.run is not None:
            raise Conflict(f"session {session_id} is still running; wait for it or cancel it")
        if not entry.agent_session_id:
            raise Conflict(
                f"session {session_id} has no {entry.executor.name} conversation id to resume "
                "(its first run ended before the CLI named one)"
            )
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string")
        self._check_prompt(prompt)
        request = replace(entry.request, model=model) if model else entry.request
        spec = self._spec(entry.executor, request, prompt, entry.agent_session_id)
        binary = entry.executor.find_binary(self.config.binaries.get(entry.executor.name))
        _check_still_a_folder(entry.project_path)
        self._check_capacity(new_session=False)
        self._launch(entry, binary, replace(spec, project_path=entry.project_path), prompt)
        return entry.snapshot()

    async def cancel(self, session_id: str) -> Session:
        """Stops the run (SIGINT, SIGTERM, SIGKILL to its group), keeping its output."""
        entry = self._entry(session_id)
        run = entry.run
        if run is None:
            return entry.snapshot()
        run.cancel_requested = True
        await self._stop(run)
        if run.task is not None:
            await _wait_at_most(run.task, 2 * self.config.kill_wait)
        return entry.snapshot()

    async def delete(self, session_id: str) -> None:
        """Stops the session if it runs, then forgets it and removes its stored output."""
        entry = self._entry(session_id)
        entry.deleting = True
        # A loop, not an if: whatever started while we waited is stopped too before we forget
        # it; each run is cancelled once (a run that outlasts its cancel is not waited forever).
        stopped: builtins.list[_Run] = []
        while entry.run is not None and all(entry.run is not run for run in stopped):
            stopped.append(entry.run)
            await self.cancel(session_id)
        entry.deleted = True
        self._entries.pop(session_id, None)
        entry.log.close()
        entry.changed()
        if entry.folder is not None:
            await asyncio.to_thread(shutil.rmtree, entry.folder, True)

    # ----------------------------------------------------------------------------- internals

    def _entry(self, session_id: str) -> _Entry:
        entry = self._entries.get(session_id) if isinstance(session_id, str) else None
        if entry is None:
            raise SessionNotFound(f"no session {session_id!r}")
        return entry

    def _check_open(self) -> None:
        if not self._started or self.closing:
            raise ManagerClosed("the session manager is not running")

    def _check_prompt(self, prompt: str) -> None:
        size = len(prompt.encode("utf-8", errors="surrogatepass"))
        if size > self.config.max_prompt_bytes:
            raise PromptTooLarge(
                f"prompt is {size} bytes; the limit is {self.config.max_prompt_bytes}"
            )
        if not prompt.strip():
            raise BadRequest("'prompt' must not be empty")
        if "\x00" in prompt:
            raise BadRequest("'prompt' must not contain NUL characters")

    def _check_capacity(self, *, new_session: bool) -> None:
        if self.running_count() >= self.config.max_sessions:
            raise TooManySessions(
                f"{self.config.max_sessions} sessions are already running (--max-sessions); "
                "wait for one to end or cancel one"
            )
        if (
            new_session
            and len(self._entries) >= self.config.max_kept_sessions
            and self.running_count() >= self.config.max_kept_sessions
        ):
            raise TooManySessions(
                f"{self.config.max_kept_sessions} sessions are kept and all are running"
            )

    def _evict_for_one_more(self) -> builtins.list[Path]:
        """Forgets the oldest finished sessions so one more fits under ``max_kept_sessions``;
        their folders, returned, are for the caller to remove off the event loop."""
        excess = len(self._entries) + 1 - max(1, self.config.max_kept_sessions)
        if excess <= 0:
            return []
        finished = sorted(
            (e for e in self._entries.values() if e.run is None and not e.deleting),
            key=lambda e: e.created_at,
        )
        folders = []
        for entry in finished[:excess]:
            log.info("session %s: evicted (--max-kept-sessions)", entry.session_id)
            entry.deleted = True
            self._entries.pop(entry.session_id, None)
            entry.log.close()
            entry.changed()
            if entry.folder is not None:
                folders.append(entry.folder)
        return folders

    def resolve_project(self, requested: str | None) -> Path:
        """The folder a run in project `requested` uses, by the one set of rules every adapter
        follows: a relative path lies under ``--allowed-root`` (else the default project),
        containment is checked before existence; `BadRequest` or `Forbidden` otherwise."""
        root = self.config.allowed_root.resolve() if self.config.allowed_root else None
        if requested is None or not requested.strip():
            base = self.config.default_project or root or Path.cwd()
            return base.resolve()
        _check_text("projectPath", requested)
        path = Path(requested).expanduser()
        if not path.is_absolute():
            # Relative to the root (or the default project), never to wherever arpc was started.
            path = (root or self.config.default_project or Path.cwd()) / path
        resolved = path.resolve()
        # Containment first: a path outside the root is a 403 whether or not it exists, so a
        # caller learns nothing about what lies outside.
        if root is not None and not resolved.is_relative_to(root):
            raise Forbidden(f"project path {requested} is outside the allowed root {root}")
        if not resolved.exists():
            raise BadRequest(f"project path {requested} does not exist")
        if not resolved.is_dir():
            raise BadRequest(f"project path {requested} is not a directory")
        return resolved

    def _spec(
        self, executor: Executor, request: StartRequest, prompt: str, resume_id: str | None
    ) -> RunSpec:
        asked = {
            "model": request.model is not None,
            "permission_mode": request.permission_mode is not None,
            "allowed_tools": bool(request.allowed_tools),
            "disallowed_tools": bool(request.disallowed_tools),
            "no_tools": request.no_tools,
            "max_turns": request.max_turns is not None,
            "append_system_prompt": request.append_system_prompt is not None,
        }
        unsupported = sorted(
            name for name, on in asked.items() if on and name not in executor.options
        )
        if unsupported:
            raise BadRequest(f"{executor.name} does not support: {', '.join(unsupported)}")
        _check_text("prompt", prompt)
        if request.append_system_prompt is not None:
            _check_text("appendSystemPrompt", request.append_system_prompt)
        if request.permission_mode is not None:
            _check_text("permissionMode", request.permission_mode)
        if request.model is not None:
            _check_word("model", request.model)
        if resume_id is not None:
            _check_id(resume_id)
        for name, tools in (
            ("allowedTools", request.allowed_tools),
            ("disallowedTools", request.disallowed_tools),
        ):
            for tool in tools:
                _check_tool(name, tool)
        permission = (
            executor.permission_value(request.permission_mode)
            if request.permission_mode is not None
            else None
        )
        return RunSpec(
            prompt=prompt,
            model=request.model,
            permission_mode=permission,
            allowed_tools=request.allowed_tools,
            disallowed_tools=request.disallowed_tools,
            no_tools=request.no_tools,
            max_turns=request.max_turns,
            append_system_prompt=request.append_system_prompt,
            resume_id=resume_id,
        )

    def _new_log(self, folder: Path | None) -> EventLog:
        if folder is not None:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return EventLog(
            folder / "events.jsonl" if folder is not None else None,
            max_memory_events=self.config.memory_events,
            max_memory_bytes=self.config.memory_bytes,
        )

    def _launch(self, entry: _Entry, binary: str, spec: RunSpec, prompt: str) -> None:
        """Marks the entry running and starts the run's task (no await: capacity stays exact).

        All or nothing: when something raises, the entry is left as it was (not running)."""
        argv = entry.executor.build(binary, spec)
        before = (entry.status, entry.started_at, entry.updated_at, entry.ended_at)
        before_end = (entry.exit_code, entry.error)
        run = _Run(entry.runs)
        entry.run = run
        entry.runs += 1
        entry.status = "running"
        entry.started_at = entry.updated_at = time.time()
        entry.ended_at = None
        entry.exit_code = None
        entry.error = None
        try:
            entry.log.append([Draft("prompt", text=prompt)], run=run.number, now=entry.started_at)
            entry.log.flush()
            self._save(entry)
        except BaseException:
            entry.run = None
            entry.runs -= 1
            entry.status, entry.started_at, entry.updated_at, entry.ended_at = before
            entry.exit_code, entry.error = before_end
            raise
        entry.changed()
        run.task = asyncio.ensure_future(self._run(entry, run, argv))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)

    def _child_env(self, entry: _Entry) -> dict[str, str]:
        env = dict(os.environ)
        env.update(entry.executor.env)
        env.update(self.config.extra_env)
        env["ARP_SESSION_ID"] = entry.session_id
        return env

    async def _run(self, entry: _Entry, run: _Run, argv: builtins.list[str]) -> None:
        """Runs one child to its end and records how it ended."""
        exit_code: int | None = None
        error: str | None = None
        try:
            if run.cancel_requested or run.interrupt_requested:
                return  # stopped before it started
            try:
                # Started off the loop: a fork in the loop thread stalled every request.
                process = await spawn(
                    argv,
                    cwd=entry.project_path,
                    env=self._child_env(entry),
                    limit=_READER_LIMIT,
                )
            except OSError as exc:
                error = f"could not start {argv[0]}: {exc}"
                self._emit(entry, run, [Draft("error", text=error)])
                return
            run.process = process
            entry.child = _child_identity(process.pid)
            self._save(entry)
            if run.cancel_requested or run.interrupt_requested:
                # Stopped while it was being spawned: it has done nothing worth a grace period.
                _kill_group(process.pid, signal.SIGKILL)
            entry.changed()
            assert process.stdout is not None and process.stderr is not None
            parser = entry.executor.parser()
            pumps = [
                asyncio.ensure_future(self._pump(entry, run, process.stdout, parser)),
                asyncio.ensure_future(self._pump(entry, run, process.stderr, None)),
            ]
            try:
                exit_code = await self._wait_child(entry, process, pumps)
            finally:
                # Nothing of the run may outlive it: kill what is left of its process group,
                # which also closes pipes a grandchild still held.
                _kill_group(process.pid, signal.SIGKILL)
                _, late = await asyncio.wait(pumps, timeout=self.config.kill_wait)
                for task in late:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except asyncio.CancelledError:
            run.interrupt_requested = True
            raise
        except Exception as exc:  # a bug here must still end the run cleanly
            log.exception("session %s: run failed", entry.session_id)
            error = f"internal error: {exc}"
        finally:
            self._finish(entry, run, exit_code, error)

    async def _wait_child(
        self,
        entry: _Entry,
        process: Child,
        pumps: builtins.list[asyncio.Task[None]],
    ) -> int:
        """The child's exit code, watching its pumps too: a pump that died (it never should)
        cannot drain the pipes, so the child is killed rather than left blocked forever."""
        waiter = asyncio.ensure_future(process.wait())
        try:
            watched: set[asyncio.Future[Any]] = {waiter, *pumps}
            while not waiter.done():
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not waiter and not task.cancelled() and task.exception():
                        log.error(
                            "session %s: an output pump failed: %r; stopping the run",
                            entry.session_id,
                            task.exception(),
                        )
                        _kill_group(process.pid, signal.SIGKILL)
                        # Pipes nobody reads may keep wait() from returning; bound it.
                        async with asyncio.timeout(self.config.kill_wait):
                            return await waiter
            return waiter.result()
        finally:
            waiter.cancel()

    async def _pump(
        self,
        entry: _Entry,
        run: _Run,
        stream: asyncio.StreamReader,
        parser: StreamParser | None,
    ) -> None:
        """Reads a pipe to its end, line by line, bounded by ``max_line``."""
        pending = b""
        skipping = False
        max_line = self.config.max_line
        while True:
            chunk = await stream.read(self.config.read_chunk)
            if not chunk:
                break
            if skipping:
                # The rest of a line already cut: drop it up to its newline.
                newline = chunk.find(b"\n")
                if newline < 0:
                    continue
                chunk = chunk[newline + 1 :]
                skipping = False
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if len(pending) > max_line:
                lines.append(pending[:max_line] + b" [line cut by arp]")
                pending = b""
                skipping = True
            if lines:
                async with self._ingest:
                    self._emit_lines_safely(entry, run, lines, parser)
                    # Held over one turn of the loop: the other pumps queue on the lock rather
                    # than on the loop, so a request waits for one chunk's parsing, not a hundred.
                    await asyncio.sleep(0)
        if pending and not skipping:
            self._emit_lines_safely(entry, run, [pending], parser)

    def _emit_lines_safely(
        self, entry: _Entry, run: _Run, lines: builtins.list[bytes], parser: StreamParser | None
    ) -> None:
        """`_emit_lines`, but a batch that cannot be kept never stops the pump: a pump that
        stopped reading would leave the child blocked on a full pipe and the run never ending."""
        try:
            self._emit_lines(entry, run, lines, parser)
        except Exception as exc:  # a bug or odd output: lose this batch, keep draining
            log.exception("session %s: could not keep a batch of output", entry.session_id)
            try:
                note = f"arp could not keep {len(lines)} line(s) of output: {exc!r}"
                self._emit(entry, run, [Draft("error", text=note)])
            except Exception:
                log.exception("session %s: could not record that", entry.session_id)

    def _emit_lines(
        self, entry: _Entry, run: _Run, lines: builtins.list[bytes], parser: StreamParser | None
    ) -> None:
        drafts: builtins.list[Draft] = []
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if parser is None:
                if text.strip():
                    drafts.append(Draft("stderr", text=text, raw=text))
            else:
                drafts.extend(parser.parse_line(text))
        if drafts:
            self._emit(entry, run, drafts)

    def _emit(self, entry: _Entry, run: _Run, drafts: builtins.list[Draft]) -> None:
        if entry.deleted:
            return
        now = time.time()
        save = False
        for draft in drafts:
            if draft.agent_session_id and draft.kind == "system":
                if entry.agent_session_id != draft.agent_session_id:
                    entry.agent_session_id = draft.agent_session_id
                    save = True
            elif draft.kind == "result":
                if draft.usage is not None:
                    entry.usage = entry.usage + draft.usage
                    save = True
                if draft.agent_session_id and not entry.agent_session_id:
                    entry.agent_session_id = draft.agent_session_id
                if draft.is_error:
                    run.saw_error_result = True
                    run.result_error = draft.text or "the agent reported an error"
        if entry.log.bytes_stored < self.config.max_output_bytes:
            entry.log.append(drafts, run=run.number, now=now)
        elif not run.output_capped:
            run.output_capped = True
            note = (
                f"output beyond {self.config.max_output_bytes} bytes is not kept "
                "(the run goes on; its state is still tracked)"
            )
            entry.log.append([Draft("error", text=note)], run=run.number, now=now)
        entry.log.flush()
        entry.updated_at = now
        if save:
            self._save(entry)
        entry.changed()

    def _finish(self, entry: _Entry, run: _Run, exit_code: int | None, error: str | None) -> None:
        status: Status
        if run.interrupt_requested and not run.cancel_requested:
            status = "interrupted"
        elif run.cancel_requested:
            status = "cancelled"
        elif error is None and exit_code == 0 and not run.saw_error_result:
            status = "completed"
        else:
            status = "failed"
            if error is None:
                error = run.result_error or f"{entry.executor.name} exited with code {exit_code}"
        now = time.time()
        entry.status = status
        entry.child = None
        entry.exit_code = exit_code
        entry.error = error if status == "failed" else None
        entry.ended_at = entry.updated_at = now
        if not entry.deleted:
            text = f"run {run.number} {status}" + (
                f" (exit code {exit_code})" if exit_code is not None else ""
            )
            entry.log.append(
                [Draft("status", text=text, exit_code=exit_code, status=status)],
                run=run.number,
                now=now,
            )
            entry.log.flush()
            self._save(entry)
        if entry.run is run:
            entry.run = None
        entry.changed()

    async def _stop(self, run: _Run) -> None:
        if run.stopping is None:
            run.stopping = asyncio.ensure_future(self._signal_ladder(run))
        await asyncio.shield(run.stopping)

    async def _signal_ladder(self, run: _Run) -> None:
        """SIGINT, then SIGTERM, then SIGKILL to the run's process group, each after a grace."""
        # A run whose child is not spawned yet gets it within a moment; wait for it briefly.
        for _ in range(100):
            if run.process is not None or (run.task is not None and run.task.done()):
                break
            await asyncio.sleep(0.01)
        process = run.process
        if process is None:
            return
        steps = (
            (signal.SIGINT, self.config.sigint_grace),
            (signal.SIGTERM, self.config.sigterm_grace),
            (signal.SIGKILL, self.config.kill_wait),
        )
        for sig, grace in steps:
            if process.returncode is not None:
                return
            _kill_group(process.pid, sig)
            await _wait_at_most(process.wait(), grace)

    # ----------------------------------------------------------------------------- storage

    def _save(self, entry: _Entry) -> None:
        if entry.folder is None or entry.deleted:
            return
        try:
            # Prompts and agent output are private: the folders are the user's alone.
            entry.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = entry.folder / "session.json.tmp"
            # ASCII: an id or prompt holding a lone surrogate must not make the state unsavable.
            tmp.write_text(json.dumps(entry.to_meta()), encoding="utf-8")
            os.replace(tmp, entry.folder / "session.json")
        except OSError as exc:
            log.warning("session %s: could not save its state: %s", entry.session_id, exc)

    def _load(self) -> None:
        assert self.config.data_dir is not None
        base = self.config.data_dir / "sessions"
        if not base.is_dir():
            return
        loaded: builtins.list[_Entry] = []
        for folder in base.iterdir():
            meta_path = folder / "session.json"
            if not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                entry = self._entry_from_meta(folder, meta)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping stored session %s: %s", folder.name, exc)
                continue
            loaded.append(entry)
        loaded.sort(key=lambda e: e.created_at)
        keep = max(1, self.config.max_kept_sessions)
        for entry in loaded[:-keep]:
            # Beyond the bound (it was lowered since): the oldest are evicted, files and all.
            entry.log.close()
            if entry.folder is not None:
                shutil.rmtree(entry.folder, ignore_errors=True)
        for entry in loaded[-keep:]:
            self._entries[entry.session_id] = entry
            if entry.status == "running":
                _stop_leftover(entry)
                entry.status = "interrupted"
                entry.error = "arpc stopped while this session was running"
                entry.ended_at = entry.ended_at or entry.updated_at
                entry.log.append(
                    [Draft("status", text="interrupted by an arpc restart", status="interrupted")],
                    run=max(0, entry.runs - 1),
                    now=time.time(),
                )
                entry.log.flush()
                self._save(entry)

    def _entry_from_meta(self, folder: Path, meta: dict[str, Any]) -> _Entry:
        req = meta["request"]
        request = StartRequest(
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
        executor = get_executor(request.executor)
        entry = _Entry(
            str(meta["session_id"]),
            request,
            executor,
            str(meta["project_path"]),
            folder,
            self._new_log(folder),
            float(meta["created_at"]),
        )
        status = meta.get("status")
        entry.status = status if status in STATUSES else "interrupted"
        entry.agent_session_id = meta.get("agent_session_id")
        entry.updated_at = float(meta.get("updated_at") or entry.created_at)
        entry.started_at = meta.get("started_at")
        entry.ended_at = meta.get("ended_at")
        entry.exit_code = meta.get("exit_code")
        entry.usage = Usage.from_json(meta.get("usage")) or Usage()
        entry.runs = int(meta.get("runs", 1))
        entry.error = meta.get("error")
        child = meta.get("child")
        entry.child = child if isinstance(child, dict) else None
        return entry


# What reaches a CLI's argv besides the prompt: none of it may start with '-' (it would be
# taken for a flag: `--add-dir=/` as a tool name, `-c ...` as a Codex id, ...), nor hold
# whitespace or control characters where the CLI expects one word.
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}", re.ASCII)
_TOOL: Final = re.compile(
    # A name (`Bash`, `mcp__server__tool`, `*`), optionally with a Claude rule in parentheses:
    # `Bash(git log:*)`, `Read(./src/**)`, `WebFetch(domain:example.com)`.
    r"[A-Za-z0-9_*][A-Za-z0-9_.:*/-]{0,255}(?:\([A-Za-z0-9_.:*/~@=+%, -]{0,512}\))?",
    re.ASCII,
)
_MAX_WORD = 256


def _check_text(name: str, value: str) -> None:
    """Free text for a CLI (a prompt): any characters but NUL and lone surrogates."""
    if "\x00" in value:
        raise BadRequest(f"{name!r} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            f"{name!r} holds a lone UTF-16 surrogate (half of a character); send valid text"
        ) from None


def _check_word(name: str, value: str) -> None:
    """One word passed as an option's value (a model name)."""
    _check_text(name, value)
    if value.startswith("-") or len(value) > _MAX_WORD:
        raise BadRequest(f"{name!r} must not start with '-' (nor be that long): {value[:80]!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise BadRequest(f"{name!r} must be one word without spaces or control characters")


def _check_id(value: str) -> None:
    if not _ID.fullmatch(value):
        raise BadRequest(
            f"conversation id {value[:80]!r} is not one: letters, digits and . _ : - only, "
            "starting with a letter or digit"
        )


def _check_tool(name: str, value: str) -> None:
    if not _TOOL.fullmatch(value):
        raise BadRequest(
            f"{name!r} item {value[:80]!r} is not a tool name or rule: use a name such as "
            "Read or mcp__server__tool, optionally with a rule in parentheses such as "
            "Bash(git log:*); never starting with '-'"
        )


async def _wait_at_most(awaitable: Awaitable[Any], timeout: float) -> None:
    """Waits for ``awaitable`` (shielded: it goes on after a timeout) up to ``timeout`` seconds.

    asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands in the turn the
    awaited thing finishes, and the caller (a request whose client left) would carry on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.shield(awaitable)


def _remove_folders(folders: builtins.list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _check_still_a_folder(path: str) -> None:
    if not os.path.isdir(path):
        raise BadRequest(f"project path {path} no longer exists")


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), so a reused pid is never mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _child_identity(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start": _start_ticks(pid), "boot": _boot_id()}


def _stop_leftover(entry: _Entry) -> None:
    """Kills the process group of a child an earlier arpc left running, if it is still there.

    Only when the pid, its start time and the boot all match what was recorded (Linux /proc);
    anything less certain is left alone rather than risk signalling a stranger.
    """
    child = entry.child
    entry.child = None
    if not child or child.get("start") is None or child.get("boot") is None:
        return
    pid = child.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return
    if _boot_id() != child["boot"] or _start_ticks(pid) != child["start"]:
        return
    log.warning(
        "session %s: stopping its agent (pid %d) left by an earlier arpc", entry.session_id, pid
    )
    _kill_group(pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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
