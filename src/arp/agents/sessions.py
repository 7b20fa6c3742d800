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
        manager.page(session_id, after=0, limit=None) -> SessionPage   # state + events after
        manager.events_after(session_id, after_seq=0, limit=1000) -> list[Event]
        manager.lines_after(session_id, after_seq=0, limit=1000) -> list[(seq, JSON line)]
        async for batch in manager.follow_lines(session_id, after_seq): ...   # lines, batched
        await manager.delete(session_id)                    # stops it, removes its files
        manager.approvals() -> list[Approval]               # ask mode: the pending ones
        manager.decide(session_id, approval_id, "allow", message=None, remember=None)
        await manager.changes(session_id, path=None) -> dict   # what the session changed

A prompt may carry attachments (``start_session(request, attachments=[Upload, ...])``, likewise
``send_message``): `arp.agents.attachments` checks and stores them with the session and says how
each agent receives them. What the session changed is `arp.agents.changes`' (its base is taken
as the first run starts, before the agent is spawned).

This module supervises runs: it starts each child, reads its output into the event log, ends it
by the signal ladder and records how it ended. The rest lives by concept next to it: the values
callers exchange (`arp.agents.session_types`), options checked and turned into an argv
(`arp.agents.executors`, `arp.agents.argv`), project-path policy (`arp.agents.projects`), the
mutable records (`arp.agents.records`), storage (`arp.agents.store`), starting a child
(`arp.agents.spawn`), waiting for and stopping one (`arp.agents.reap`), cutting its output into
lines (`arp.agents.lines`), and in ``ask`` mode its stdio protocol (`arp.agents.ask`,
`arp.agents.ask_rpc`) and the approvals a person decides (`arp.agents.desk`,
`arp.agents.approvals`).

- Errors are `arp.agents.errors.SessionError` subclasses carrying the HTTP status: 400 bad
  request (unknown executor, binary not found, missing project folder, option the executor does
  not honour), 403 project outside the allowed root, 404 unknown session, 409 wrong state,
  413 prompt too large, 429 too many running sessions, 503 manager closed. Project paths follow
  `arp.agents.projects`; options that could be taken for a CLI flag are refused as
  `arp.agents.argv` says.
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
- Storage, when ``data_dir`` is set, is `arp.agents.store`'s. `start()` loads it; a session
  that was ``running`` becomes ``interrupted``, and if the agent that arpc left behind is still
  alive (`arp.agents.reap.stop_leftover`) its process group is killed.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from arp.agents import attachments as attach
from arp.agents import changes
from arp.agents.approvals import CANCELLED, RUN_ENDED, Approval
from arp.agents.argv import RunSpec
from arp.agents.ask import Decision
from arp.agents.availability import login_advice, needs_login
from arp.agents.desk import ApprovalDesk
from arp.agents.errors import (
    BadRequest,
    Conflict,
    ManagerClosed,
    PromptTooLarge,
    SessionNotFound,
    TooManySessions,
)
from arp.agents.eventlog import EventLog
from arp.agents.events import Draft, Event, StreamParser
from arp.agents.executors import get_executor
from arp.agents.lines import LineFramer
from arp.agents.projects import check_still_a_folder, resolve_project
from arp.agents.reap import (
    child_identity,
    kill_group,
    signal_ladder,
    stop_leftover,
    wait_at_most,
    wait_child,
)
from arp.agents.records import RunRecord, SessionRecord
from arp.agents.session_types import (
    STATUSES,
    Notice,
    Session,
    SessionConfig,
    SessionPage,
    StartRequest,
    Status,
)
from arp.agents.spawn import spawn
from arp.agents.store import SessionStore, evict_oldest, remove_folders
from arp.lifecycle import Service

__all__ = [
    "STATUSES",
    "Session",
    "SessionConfig",
    "SessionManager",
    "SessionPage",
    "StartRequest",
    "Status",
]

_READER_LIMIT = 2**16
"""A child's stdout/stderr reader buffer (asyncio's default for subprocess pipes)."""

CUT_MARKER = b" [line cut by arp]"
"""Ends an output line longer than ``max_line`` (the rest of it is dropped)."""

log = logging.getLogger(__name__)


class SessionManager(Service):
    """Starts, follows, resumes, cancels and deletes agent sessions (see the module docstring)."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self._entries: dict[str, SessionRecord] = {}
        self._store = SessionStore(self.config.data_dir, self._new_log)
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Parsing output is the manager's CPU work; one chunk at a time, in turn, so the HTTP
        # API stays responsive however many sessions print at once.
        self._ingest = asyncio.Lock()
        self._desk = ApprovalDesk(self.config.approval_timeout, self._emit, self._asked)
        self._listeners: builtins.list[Callable[[Notice], None]] = []

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Loads stored sessions (running ones become ``interrupted``)."""
        if self._started:
            return
        self._started = True
        self._store.open()
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
        self._desk.close()
        for entry in self._entries.values():
            entry.log.close()
            entry.changed()

    # ----------------------------------------------------------------------------- queries

    def get(self, session_id: str) -> Session:
        return self._snapshot(self._entry(session_id))

    def list(self, limit: int = 50, offset: int = 0) -> builtins.list[Session]:
        """Sessions newest first."""
        limit = max(0, limit)
        offset = max(0, offset)
        ordered = sorted(self._entries.values(), key=lambda e: e.created_at, reverse=True)
        return [self._snapshot(entry) for entry in ordered[offset : offset + limit]]

    def count(self) -> int:
        return len(self._entries)

    def running_count(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.run is not None)

    def subscribe(self, listener: Callable[[Notice], None]) -> Callable[[], None]:
        """Calls ``listener`` (at once, in the loop; it must not block) when an approval waits
        for a person or a run ends; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _tell(self, notice: Notice) -> None:
        for listener in builtins.list(self._listeners):
            try:
                listener(notice)
            except Exception:  # a listener's bug must not touch the run
                log.exception("a session listener failed on %s", notice.kind)

    def _asked(self, entry: SessionRecord, approval: Approval) -> None:
        self._tell(Notice("approval_requested", self._snapshot(entry), approval.to_json()))

    def approvals(self) -> builtins.list[Approval]:
        """Every pending approval of this manager, oldest first (the person's inbox)."""
        return self._desk.pending()

    def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: Decision,
        *,
        message: str | None = None,
        remember: Literal["session"] | None = None,
    ) -> Approval:
        """A person's decision on a pending approval: the first wins (409 after it, 404 for an
        unknown session or id); the agent gets the answer at once."""
        self._entry(session_id)
        return self._desk.decide(
            session_id, approval_id, decision, message=message, remember=remember
        )

    def page(self, session_id: str, after: int = 0, limit: int | None = None) -> SessionPage:
        """The session's state and its events after seq ``after``: the one page the HTTP API,
        MCP and the remote protocol serve. ``limit`` (default ``page_events``) is held to
        ``max_page_events``; 0 gives an empty page that still says whether there is more."""
        session = self.get(session_id)
        wanted = self.config.page_events if limit is None else limit
        wanted = max(0, min(wanted, self.config.max_page_events))
        lines = self._entry(session_id).log.lines_after(after, wanted)
        return SessionPage(session, after, tuple(lines))

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
            await wait_at_most(run.task, timeout)
        return self._snapshot(entry)

    # ----------------------------------------------------------------------------- commands

    async def start_session(
        self, request: StartRequest, attachments: Sequence[attach.Upload] = ()
    ) -> Session:
        """Starts the first run; returns at once with status ``running``."""
        self._check_open()
        executor = get_executor(request.executor)
        request = replace(request, executor=executor.name)
        self._check_prompt(request.prompt)
        attach.check_uploads(attachments, self.config.attachments)
        spec = executor.prepare(request.run_spec(request.prompt, request.resume_id))
        project = self.resolve_project(request.project_path)
        binary = executor.find_binary(self.config.binaries.get(executor.name))
        self._check_capacity(new_session=True)
        evicted = self._evict_for_one_more()
        session_id = str(uuid.uuid4())
        folder = self._store.folder(session_id)
        entry = SessionRecord(
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
            spec = replace(spec, project_path=str(project))
            self._launch(entry, binary, spec, request.prompt, attachments)
        except BaseException:
            # Nothing half-made stays: no entry counting against the limits, no folder.
            self._entries.pop(session_id, None)
            entry.deleted = True
            entry.log.close()
            for place in (folder, entry.scratch):
                if place is not None:
                    shutil.rmtree(place, ignore_errors=True)
            raise
        finally:
            if evicted:
                await asyncio.to_thread(remove_folders, evicted)
        return self._snapshot(entry)

    async def send_message(
        self,
        session_id: str,
        prompt: str,
        *,
        model: str | None = None,
        attachments: Sequence[attach.Upload] = (),
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
        attach.check_uploads(attachments, self.config.attachments)
        request = replace(entry.request, model=model) if model else entry.request
        spec = entry.executor.prepare(request.run_spec(prompt, entry.agent_session_id))
        binary = entry.executor.find_binary(self.config.binaries.get(entry.executor.name))
        check_still_a_folder(entry.project_path)
        self._check_capacity(new_session=False)
        spec = replace(spec, project_path=entry.project_path)
        self._launch(entry, binary, spec, prompt, attachments)
        return self._snapshot(entry)

    async def cancel(self, session_id: str) -> Session:
        """Stops the run (SIGINT, SIGTERM, SIGKILL to its group), keeping its output."""
        entry = self._entry(session_id)
        run = entry.run
        if run is None:
            return self._snapshot(entry)
        run.cancel_requested = True
        self._desk.close_session(session_id, CANCELLED)
        await self._stop(run)
        if run.task is not None:
            await wait_at_most(run.task, 2 * self.config.kill_wait)
        return self._snapshot(entry)

    async def delete(self, session_id: str) -> None:
        """Stops the session if it runs, then forgets it and removes its stored output."""
        entry = self._entry(session_id)
        entry.deleting = True
        # A loop, not an if: whatever started while we waited is stopped too before we forget
        # it; each run is cancelled once (a run that outlasts its cancel is not waited forever).
        stopped: builtins.list[RunRecord] = []
        while entry.run is not None and all(entry.run is not run for run in stopped):
            stopped.append(entry.run)
            await self.cancel(session_id)
        entry.deleted = True
        self._desk.forget_session(session_id)
        self._entries.pop(session_id, None)
        entry.log.close()
        entry.changed()
        for place in (entry.folder, entry.scratch):
            if place is not None:
                await asyncio.to_thread(shutil.rmtree, place, True)

    async def changes(self, session_id: str, path: str | None = None) -> dict[str, Any]:
        """What the session changed in its project since its first run started
        (`arp.agents.changes`); ``path``: that one file's full diff (404 if unchanged)."""
        entry = self._entry(session_id)
        named: builtins.list[str] = []
        if entry.changes_base is not None and entry.changes_base.get("kind") == "files":
            after = 0
            for _ in range(100):  # bounded: 100 pages of events at most
                events = entry.log.events_after(after, self.config.max_page_events)
                if not events:
                    break
                named += changes.tool_paths(events)
                after = events[-1].seq
        return await changes.report(
            entry.changes_base, self._files_dir(entry), named, self.config.changes, path
        )

    # ----------------------------------------------------------------------------- internals

    def _snapshot(self, entry: SessionRecord) -> Session:
        return entry.snapshot(self._desk.pending_json(entry.session_id))

    def _entry(self, session_id: str) -> SessionRecord:
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
        return evict_oldest(self._entries, excess)

    def resolve_project(self, requested: str | None) -> Path:
        """The folder a run in project `requested` uses (`arp.agents.projects`' rules, with this
        manager's allowed root and default project); `BadRequest` or `Forbidden` otherwise."""
        return resolve_project(
            requested,
            allowed_root=self.config.allowed_root,
            default_project=self.config.default_project,
        )

    def _new_log(self, folder: Path | None) -> EventLog:
        if folder is not None:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return EventLog(
            folder / "events.jsonl" if folder is not None else None,
            max_memory_events=self.config.memory_events,
            max_memory_bytes=self.config.memory_bytes,
        )

    def _files_dir(self, entry: SessionRecord) -> Path:
        """Where a session keeps its attachments and snapshot: its folder, or (sessions kept
        in memory) a private temporary folder removed with it."""
        if entry.folder is not None:
            return entry.folder
        if entry.scratch is None:
            entry.scratch = Path(tempfile.mkdtemp(prefix="arp-session-"))
        return entry.scratch

    def _launch(
        self,
        entry: SessionRecord,
        binary: str,
        spec: RunSpec,
        prompt: str,
        uploads: Sequence[attach.Upload] = (),
    ) -> None:
        """Marks the entry running and starts the run's task (no await: capacity stays exact).

        All or nothing: when something raises, the entry is left as it was (not running)."""
        planned = (
            attach.plan(uploads, self._files_dir(entry), entry.runs, self.config.attachments)
            if uploads
            else []
        )
        stored = tuple(item for item, _ in planned)
        spec = replace(spec, prompt=attach.with_note(spec.prompt, stored), attachments=stored)
        argv = entry.executor.build(binary, spec)
        before = (entry.status, entry.started_at, entry.updated_at, entry.ended_at)
        before_end = (entry.exit_code, entry.error)
        run = RunRecord(entry.runs, entry.executor.stdio(spec))
        run.uploads = planned
        entry.run = run
        entry.runs += 1
        entry.status = "running"
        entry.started_at = entry.updated_at = time.time()
        entry.ended_at = None
        entry.exit_code = None
        entry.error = None
        listed = {"attachments": [item.to_json() for item in stored]} if stored else None
        entry.attachments += stored
        try:
            entry.log.append(
                [Draft("prompt", text=prompt, approval=listed)],
                run=run.number,
                now=entry.started_at,
            )
            entry.log.flush()
            self._save(entry)
        except BaseException:
            entry.attachments = entry.attachments[: len(entry.attachments) - len(stored)]
            entry.run = None
            entry.runs -= 1
            entry.status, entry.started_at, entry.updated_at, entry.ended_at = before
            entry.exit_code, entry.error = before_end
            raise
        entry.changed()
        run.task = asyncio.ensure_future(self._run(entry, run, argv, spec.prompt))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)

    def _child_env(self, entry: SessionRecord) -> dict[str, str]:
        env = dict(os.environ)
        env.update(entry.executor.env)
        env.update(self.config.extra_env)
        env["ARP_SESSION_ID"] = entry.session_id
        return env

    async def _run(
        self, entry: SessionRecord, run: RunRecord, argv: builtins.list[str], prompt: str
    ) -> None:
        """Runs one child to its end and records how it ended."""
        exit_code: int | None = None
        error: str | None = None
        try:
            delay = run.protocol.start_delay(entry.created_at, time.time()) if run.protocol else 0
            if delay > 0 and run.number > 0:
                note = f"waiting {delay:.0f} s before resuming ({entry.executor.name}'s own rule)"
                self._emit(entry, run, [Draft("system", text=note)])
                await run.hold(delay)
            if run.cancel_requested or run.interrupt_requested:
                return  # stopped before it started
            if not await self._prepare_run(entry, run):
                return
            try:
                # Started off the loop: a fork in the loop thread stalled every request.
                process = await spawn(
                    argv,
                    cwd=entry.project_path,
                    env=self._child_env(entry),
                    limit=_READER_LIMIT,
                    stdin=subprocess.PIPE if run.protocol is not None else subprocess.DEVNULL,
                )
            except OSError as exc:
                error = f"could not start {argv[0]}: {exc}"
                self._emit(entry, run, [Draft("error", text=error)])
                return
            run.process = process
            if run.protocol is not None:
                run.stdin = process.stdin
                # Off the loop: the opening may hold attached images in base64.
                run.write_input(await asyncio.to_thread(run.protocol.opening, prompt))
            entry.child = child_identity(process.pid)
            self._save(entry)
            if run.cancel_requested or run.interrupt_requested:
                # Stopped while it was being spawned: it has done nothing worth a grace period.
                kill_group(process.pid, signal.SIGKILL)
            entry.changed()
            assert process.stdout is not None and process.stderr is not None
            parser = entry.executor.parser()
            pumps = [
                asyncio.ensure_future(self._pump(entry, run, process.stdout, parser)),
                asyncio.ensure_future(self._pump(entry, run, process.stderr, None)),
            ]
            try:
                exit_code = await wait_child(
                    process, pumps, self.config.kill_wait, f"session {entry.session_id}"
                )
            finally:
                # Nothing of the run may outlive it: kill what is left of its process group,
                # which also closes pipes a grandchild still held.
                kill_group(process.pid, signal.SIGKILL)
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

    async def _prepare_run(self, entry: SessionRecord, run: RunRecord) -> bool:
        """Before the child starts: its attachments written, and for the first run the base
        of the session's changes taken. False (the run failed, it says why) when an
        attachment cannot be written."""
        if run.uploads:
            try:
                await asyncio.to_thread(attach.write, run.uploads)
            except OSError as exc:
                self._emit(entry, run, [Draft("error", text=f"could not store attachments: {exc}")])
                return False
            run.uploads = []
        if run.number == 0 and entry.changes_base is None:
            folder = self._files_dir(entry)
            entry.changes_base = await changes.take_base(
                entry.project_path, folder, self.config.changes
            )
            self._save(entry)
        return True

    async def _pump(
        self,
        entry: SessionRecord,
        run: RunRecord,
        stream: asyncio.StreamReader,
        parser: StreamParser | None,
    ) -> None:
        """Reads a pipe to its end, line by line, bounded by ``max_line``."""
        framer = LineFramer(self.config.max_line, cut_marker=CUT_MARKER)
        while True:
            chunk = await stream.read(self.config.read_chunk)
            if not chunk:
                break
            lines = [line for line in framer.feed(chunk) if isinstance(line, bytes)]
            if lines:
                async with self._ingest:
                    self._emit_lines_safely(entry, run, lines, parser)
                    # Held over one turn of the loop: the other pumps queue on the lock rather
                    # than on the loop, so a request waits for one chunk's parsing, not a hundred.
                    await asyncio.sleep(0)
        last = framer.end()
        if last is not None:
            self._emit_lines_safely(entry, run, [last], parser)

    def _emit_lines_safely(
        self,
        entry: SessionRecord,
        run: RunRecord,
        lines: builtins.list[bytes],
        parser: StreamParser | None,
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
        self,
        entry: SessionRecord,
        run: RunRecord,
        lines: builtins.list[bytes],
        parser: StreamParser | None,
    ) -> None:
        drafts, asks = run.read_output(lines, parser)
        if drafts:
            self._emit(entry, run, drafts)
        for ask in asks:
            self._desk.ask(entry, run, ask)

    def _emit(self, entry: SessionRecord, run: RunRecord, drafts: builtins.list[Draft]) -> None:
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
            elif draft.kind in ("stderr", "error") and needs_login(entry.executor.name, draft.text):
                run.result_error = draft.text  # the run's error says so (`login_advice`)
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

    def _finish(
        self, entry: SessionRecord, run: RunRecord, exit_code: int | None, error: str | None
    ) -> None:
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
            error = login_advice(entry.executor.name, error)
        run.close_input()
        self._desk.close_session(entry.session_id, RUN_ENDED)
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
        if status in ("completed", "failed", "cancelled") and not entry.deleted:
            self._tell(Notice(status, self._snapshot(entry)))

    async def _stop(self, run: RunRecord) -> None:
        if run.stopping is None:
            run.stopping = asyncio.ensure_future(self._signal_ladder(run))
        await asyncio.shield(run.stopping)

    async def _signal_ladder(self, run: RunRecord) -> None:
        """SIGINT, then SIGTERM, then SIGKILL to the run's process group, each after a grace."""
        run.release()  # a run still holding before its start starts nothing
        # A run whose child is not spawned yet gets it within a moment; wait for it briefly.
        for _ in range(100):
            if run.process is not None or (run.task is not None and run.task.done()):
                break
            await asyncio.sleep(0.01)
        if run.process is not None:
            steps = (
                (signal.SIGINT, self.config.sigint_grace),
                (signal.SIGTERM, self.config.sigterm_grace),
                (signal.SIGKILL, self.config.kill_wait),
            )
            await signal_ladder(run.process, steps)

    # ----------------------------------------------------------------------------- storage

    def _save(self, entry: SessionRecord) -> None:
        self._store.save(entry)

    def _load(self) -> None:
        for entry in self._store.load(keep=max(1, self.config.max_kept_sessions)):
            self._entries[entry.session_id] = entry
            if entry.status == "running":
                stop_leftover(entry.child, entry.session_id)
                entry.mark_interrupted(time.time())
                self._save(entry)
