"""The session manager's mutable records: one per session, one per run (child process).

`SessionRecord` is what `arp.agents.sessions.SessionManager` changes as a session starts,
prints, ends and resumes; callers never see it, only its frozen `snapshot()` (`Session`).
Followers wait on `wait_changed`, which `changed()` wakes. Its stored form is
`arp.agents.store`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from arp.agents.ask import AskProtocol, PermissionAsk
from arp.agents.attachments import StoredAttachment
from arp.agents.eventlog import EventLog
from arp.agents.events import Draft, StreamParser, Usage
from arp.agents.executors import Executor
from arp.agents.session_types import Session, StartRequest, Status
from arp.agents.spawn import Child

log = logging.getLogger(__name__)


class RunRecord:
    """One child process of a session."""

    def __init__(self, number: int, protocol: AskProtocol | None = None) -> None:
        self.number = number
        self.protocol = protocol
        """``ask`` mode: the CLI's stdio protocol (None: stdin is /dev/null)."""
        self.stdin: asyncio.StreamWriter | None = None
        self.process: Child | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.interrupt_requested = False
        self.result_error: str | None = None
        self.saw_error_result = False
        self.output_capped = False
        self._released = asyncio.Event()

    async def hold(self, seconds: float) -> None:
        """Waits before the child starts, up to ``seconds`` or until `release` (a cancel)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._released.wait()

    def release(self) -> None:
        self._released.set()
        self.uploads: list[tuple[StoredAttachment, bytes]] = []
        """Attachments to write before the child starts (then emptied)."""

    def read_output(
        self, lines: list[bytes], parser: StreamParser | None
    ) -> tuple[list[Draft], list[PermissionAsk]]:
        """Lines the CLI printed → events to keep and permission requests to put to a person.

        ``parser`` None: stderr, kept line by line. In ask mode stdout goes through the
        protocol, which may also write back to the CLI or end its input."""
        drafts: list[Draft] = []
        asks: list[PermissionAsk] = []
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if parser is None:
                if text.strip():
                    drafts.append(Draft("stderr", text=text, raw=text))
            elif self.protocol is not None:
                step = self.protocol.on_line(text)
                drafts.extend(step.drafts)
                self.write_input(step.writes)
                asks.extend(step.asks)
                if step.close_input:
                    self.close_input()
            else:
                drafts.extend(parser.parse_line(text))
        return drafts, asks

    def write_input(self, lines: list[bytes]) -> None:
        """Writes protocol lines to the CLI's stdin; a CLI that is gone is no error."""
        if self.stdin is None or self.stdin.is_closing() or not lines:
            return
        try:
            self.stdin.writelines(lines)
        except (OSError, RuntimeError) as exc:  # the pipe broke as the CLI ended
            log.debug("could not write to an agent's stdin: %r", exc)

    def close_input(self) -> None:
        """The CLI has all its input (it ends once it answered)."""
        if self.stdin is not None and not self.stdin.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self.stdin.close()


class SessionRecord:
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
        self.run: RunRecord | None = None
        self.deleted = False
        self.deleting = False
        """A delete is under way: no new run may start (it would outlive the record)."""
        self.child: dict[str, Any] | None = None
        """The running child's identity (`arp.agents.reap.child_identity`), kept so that an
        arpc that died without stopping it can find and stop it at the next start."""
        self.attachments: tuple[StoredAttachment, ...] = ()
        """Every run's attachments, oldest first (`arp.agents.attachments`)."""
        self.changes_base: dict[str, Any] | None = None
        """Where the session's changes are counted from (`arp.agents.changes.take_base`)."""
        self.scratch: Path | None = None
        """A session kept in memory: the temporary folder of its attachments and snapshot."""
        self._changed = asyncio.Event()

    def snapshot(self, pending_approvals: tuple[dict[str, Any], ...] = ()) -> Session:
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
            pending_approvals=pending_approvals,
            attachments=tuple(item.to_json() for item in self.attachments),
        )

    def mark_interrupted(self, now: float) -> None:
        """A session loaded as running: arpc stopped while it ran (its child is gone)."""
        self.child = None
        self.status = "interrupted"
        self.error = "arpc stopped while this session was running"
        self.ended_at = self.ended_at or self.updated_at
        self.log.append(
            [Draft("status", text="interrupted by an arpc restart", status="interrupted")],
            run=max(0, self.runs - 1),
            now=now,
        )
        self.log.flush()

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
