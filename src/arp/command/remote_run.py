"""One remote request that runs an agent, from its attachments to its one answer line.

The remote server (`arp.command.remote`) reads, admits and dispatches request lines; what a
request does once it runs an agent lives here: attachments handed to the session as the HTTP
API's are (`arp.agents.attachments`), or written into the project; the session started through
the shared `SessionManager`, its events followed into an `Answer` (streamed in pieces when
asked), the deadline kept and the agent stopped when the request ends early. It sees its
connection only as a ``send`` callable, so it needs nothing from the server module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from arp.agents.attachments import Upload, check_uploads
from arp.agents.errors import BadRequest, SessionError
from arp.agents.events import Usage
from arp.agents.sessions import SessionManager
from arp.command.remote_config import RemoteConfig
from arp.command.remote_protocol import (
    Answer,
    Attachment,
    ErrorKind,
    RemoteRequest,
    RequestError,
    TextInput,
    approval_line,
    attachment_note,
    image_filename,
    plan_run,
    response_line,
)
from arp.config import ATTACHMENT_BOUNDS
from arp.errors import ArpError


class AgentRun:
    """One request that runs an agent: attachments written, session started, answer gathered."""

    def __init__(
        self,
        manager: SessionManager,
        config: RemoteConfig,
        send: Callable[[bytes], Awaitable[None]],
        request: RemoteRequest,
    ) -> None:
        self.manager = manager
        self.config = config
        self.send = send
        """Writes one answer line to the request's connection."""
        self.request = request
        self.answer: Answer | None = None
        self.session_id: str | None = None
        self.folder: Path | None = None

    async def go(self) -> None:
        """Runs the request to its answer within its deadline; cancelled, it stops the agent.

        The agent's events are followed in a task of their own and this one waits on it with
        `asyncio.wait`: stopping the agent is what ends the follow, so a deadline or a client
        that left never depends on a cancellation reaching the manager's waits.
        """
        request = self.request
        limit = self.config.request_timeout
        timeout = min(request.config.timeout or limit, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        timed_out = (
            f"timeout_error: the request took longer than {timeout:g}s; its agent was stopped"
        )
        follow: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    session_id = await self._start()
            except TimeoutError:
                await self._stop_agent()
                await self._reply(timed_out)
                return
            follow = asyncio.ensure_future(self._follow(session_id))
            await asyncio.wait({follow}, timeout=max(0.0, deadline - loop.time()))
            if not follow.done():
                await self._stop_agent()
                await asyncio.wait({follow}, timeout=self.config.stop_timeout)
                await self._reply(timed_out)
                return
            try:
                follow.result()
                error, usage = self._outcome(session_id)
            except SessionError as exc:  # deleted meanwhile (through the HTTP API)
                error, usage = f"processing_error: {exc.message}", None
            await self._clean_up()
            await self._reply(error, usage=usage)
        except asyncio.CancelledError:
            await self._stop_agent()
            raise
        finally:
            if follow is not None and not follow.done():
                follow.cancel()
            await self._clean_up()

    async def _start(self) -> str:
        request = self.request
        defaults = self.config.defaults
        # Which executor and project first, so attachments can go to the project when asked.
        probe = plan_run(request, "-", defaults)
        prompt, uploads = await self._prompt(probe.project_path)
        start = plan_run(request, prompt, defaults)
        try:
            session = await self.manager.start_session(start, uploads)
        except SessionError as exc:
            kind: ErrorKind = "connection_error" if exc.status == 503 else "processing_error"
            raise RequestError(kind, f"{exc.message} ({exc.status})") from None
        self.session_id = session.session_id
        self.answer = Answer(session.executor, stream=request.stream)
        return session.session_id

    async def _follow(self, session_id: str) -> None:
        request = self.request
        answer = self.answer
        assert answer is not None
        incremental = request.stream_mode == "incremental"
        async for event in self.manager.follow(session_id):
            if event.kind == "approval_request":
                # Whatever the stream mode: the peer must see it while it can still answer.
                await self.send(approval_line(request.request_id, session_id, event))
                continue
            pieces = answer.feed(event)
            if incremental:
                for piece in pieces:
                    await self.send(
                        response_line(
                            request.request_id,
                            piece,
                            extra={"session_id": session_id, "done": False},
                        )
                    )

    def _outcome(self, session_id: str) -> tuple[str | None, Usage]:
        """The ``error`` of a run that ended (None when it completed) and its token usage."""
        session = self.manager.get(session_id)
        error = None
        if session.status == "failed":
            error = f"processing_error: {session.error or 'the agent failed'}"
        elif session.status == "cancelled":
            error = "processing_error: the agent run was cancelled"
        elif session.status == "interrupted":
            error = "connection_error: arpc is shutting down; the agent run was interrupted"
        return error, session.usage

    async def _reply(self, error: str | None, *, usage: Usage | None = None) -> None:
        answer = self.answer or Answer("", stream=self.request.stream)
        extra: dict[str, Any] = {}
        if self.session_id is not None:
            extra["session_id"] = self.session_id
        if self.request.stream_mode == "incremental":
            extra["done"] = True
        await self.send(
            response_line(
                self.request.request_id, answer.content(), error=error, usage=usage, extra=extra
            )
        )

    async def _prompt(self, project_path: str | None) -> tuple[str, list[Upload]]:
        """The prompt's text, and the attachments that go with it as the HTTP API's do
        (stored with the session, each agent given them natively). With ``save_files_to:
        "project"`` they are written into the project instead and named in the prompt; so is,
        in a private temporary folder, a File that is no image or UTF-8 text (the protocol
        has always taken any file)."""
        parts: list[str] = []
        uploads: list[Upload] = []
        images = 0
        for leaf in self.request.inputs:
            if isinstance(leaf, TextInput):
                parts.append(leaf.text)
            elif isinstance(leaf, Attachment):
                if leaf.kind == "image":
                    images += 1
                    leaf = replace(leaf, filename=image_filename(images, leaf.content_type))
                upload = Upload(leaf.filename, leaf.content_type, leaf.data)
                if self.request.config.save_files_to != "project" and self._attachable(upload):
                    uploads.append(upload)
                    continue
                path = await self._save(leaf, project_path)
                parts.append(attachment_note(leaf, str(path)))
        return "\n\n".join(part for part in parts if part) or "(see the attachments)", uploads

    def _attachable(self, upload: Upload) -> bool:
        """Whether the session manager takes ``upload`` as an attachment (an image or text;
        its bounds are the manager's to enforce)."""
        try:
            check_uploads([upload], replace(ATTACHMENT_BOUNDS, max_bytes=len(upload.data)))
        except BadRequest:
            return False
        return True

    async def _save(self, attachment: Attachment, project_path: str | None) -> Path:
        if self.request.config.save_files_to == "project":
            path = project_folder(self.manager, project_path) / attachment.filename
            if path.exists():
                raise RequestError("processing_error", f"{path} exists already; not overwriting it")
        else:
            if self.folder is None:
                self.folder = Path(
                    await asyncio.to_thread(
                        tempfile.mkdtemp, prefix="arp-remote-", dir=self.config.upload_dir
                    )
                )
            path = self.folder / attachment.filename
            if path.exists():
                raise RequestError(
                    "parse_error", f"two attachments are named {attachment.filename!r}"
                )
        try:
            await asyncio.to_thread(write_private, path, attachment.data)
        except OSError as exc:
            raise RequestError("processing_error", f"could not write {path}: {exc}") from None
        return path

    async def _stop_agent(self) -> None:
        if self.session_id is None:
            return
        # Shielded: the agent must stop even though this request was cancelled.
        stop = asyncio.ensure_future(self.manager.cancel(self.session_id))
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(stop), self.config.stop_timeout)

    async def _clean_up(self) -> None:
        folder, self.folder = self.folder, None
        if folder is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)


def project_folder(manager: SessionManager, requested: str | None) -> Path:
    """The folder the agent will run in, where a ``save_files_to: "project"`` attachment goes:
    checked by the session manager's own rules before anything is written."""
    try:
        return manager.resolve_project(requested)
    except ArpError as exc:
        raise RequestError("processing_error", exc.message) from None


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


__all__ = ["AgentRun"]
