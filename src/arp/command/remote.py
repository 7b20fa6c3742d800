"""The remote TCP server: newline-delimited JSON requests to the agents (``arpc --remote``).

A plain TCP socket speaks the Agent CLI remote protocol (docs/remote-protocol.md; the pure core
is `arp.command.remote_protocol`, the bounds and flags `arp.command.remote_config`, the built-in
commands `arp.command.remote_instructions`). Each request line starts an agent session through
command mode's `SessionManager` (or runs a built-in Instruction), and its answer is one line with
the same ``request_id``. arpc wires it in two lines::

    add_remote_arguments(parser)                       # --remote HOST:PORT, … (remote_config)
    service = remote_service(args, command_server)      # None without --remote
    if service is not None:
        await stack.enter_async_context(service)        # RemoteServer: start/close/wait_closed

Per connection: requests are read as they come (pipelining) and run concurrently up to
``max_concurrent``; beyond it the server stops reading until one ends (TCP pushes back). A line
longer than ``max_line`` is answered with a ``parse_error`` and skipped to its newline. When the
client goes away (EOF or reset) its running requests are cancelled and their agents stopped.

Across connections: one `MemoryBudget` of ``max_memory`` bytes bounds the lines and parsed
requests of all connections together; what does not fit is answered with a
``connection_error`` at once. With ``token`` set, a request must carry it (else ``auth_error``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arp.agents.errors import SessionError
from arp.agents.events import Usage
from arp.agents.history import HistoryReaders
from arp.agents.lines import Abandoned, LineFramer, Oversize
from arp.agents.sessions import SessionManager
from arp.command.remote_config import (
    RemoteConfig,
    add_remote_arguments,
    config_from_args,
)
from arp.command.remote_instructions import INSTRUCTIONS
from arp.command.remote_protocol import (
    Answer,
    Attachment,
    ErrorKind,
    Instruction,
    MemoryBudget,
    RemoteRequest,
    RequestError,
    TextInput,
    approval_line,
    attachment_note,
    error_line,
    image_filename,
    parse_request,
    plan_run,
    request_size,
    response_line,
)
from arp.errors import ArpError
from arp.lifecycle import Service

if TYPE_CHECKING:
    from arp.command.server import CommandServer

log = logging.getLogger(__name__)


def remote_service(args: argparse.Namespace, server: CommandServer) -> RemoteServer | None:
    """The remote server over ``server``'s sessions and history; None without ``--remote``.

    Once ``server`` is started, the history readers are the very ones its HTTP API (and MCP)
    use, so all faces share one cache of parsed sessions.
    """
    from arp.command.api_history import READERS_KEY

    config = config_from_args(args)
    if config is None:
        return None
    history = server.app.get(READERS_KEY) if server.app is not None else None
    return RemoteServer(config, server.manager, history or server.history)


# ---------------------------------------------------------------------------------------------
# The server


class RemoteServer(Service):
    """The asyncio TCP server; shares (never owns) the session manager."""

    def __init__(
        self,
        config: RemoteConfig,
        manager: SessionManager,
        history: HistoryReaders | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self._history = history
        self.budget = MemoryBudget(config.max_memory)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the remote server is not started")
        return self._port

    @property
    def history(self) -> HistoryReaders:
        if self._history is None:
            self._history = HistoryReaders()
        return self._history

    async def start(self) -> None:
        if self._server is not None:
            return
        if not _is_loopback(self.config.host) and self.config.token is None:
            log.warning(
                "remote protocol on %s without --remote-token: anyone who reaches this "
                "address can run agents",
                self.config.host,
            )
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=64 * 1024
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("remote protocol on %s:%d", self.config.host, self._port)

    async def close(self) -> None:
        """Stop accepting, cancel every connection (their agents stop), wait. Idempotent."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._close_task)

    async def wait_closed(self) -> None:
        if self._close_task is not None:
            await asyncio.shield(self._close_task)

    @property
    def memory_in_use(self) -> int:
        """Bytes of the ``max_memory`` budget held by lines and requests now."""
        return self.budget.used

    @property
    def closing(self) -> bool:
        return self._close_task is not None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = tuple(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.shutdown_timeout)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), self.config.shutdown_timeout)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._close_task is not None or len(self._connections) >= self.config.max_connections:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                writer.write(
                    error_line(
                        "connection_error",
                        f"the server holds {self.config.max_connections} connections already "
                        "(or is closing); try again later",
                    )
                )
                await asyncio.wait_for(writer.drain(), self.config.write_timeout)
            writer.close()
            return
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("remote connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    # ------------------------------------------------------------------ instructions

    async def run_instruction(self, instruction: Instruction) -> Any:
        """A built-in command's result (JSON); a `RequestError` when it cannot run."""
        handler = INSTRUCTIONS.get(instruction.command.lower().replace("-", "_"))
        if handler is None:
            known = ", ".join(sorted(INSTRUCTIONS))
            raise RequestError(
                "processing_error", f"unknown command {instruction.command!r}; known: {known}"
            )
        try:
            return await handler(self, instruction.parameters)
        except ArpError as exc:
            raise RequestError("processing_error", exc.message) from None

    async def in_thread(self, call: Callable[[], Any]) -> Any:
        """``call`` (history reading) in a worker thread, within the readers' shared bound."""
        return await self.history.run(call)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# One connection


class _Connection:
    """Reads request lines, runs up to ``max_concurrent`` at once, writes each answer whole.

    Lines beyond the running ones wait in a small queue (``max_pending`` lines, at most
    ``max_line`` bytes together); only when that is full does reading stop. While reading goes
    on, a client that leaves is noticed at once and its requests are cancelled.
    """

    def __init__(
        self, server: RemoteServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        self.running: dict[asyncio.Task[None], str] = {}
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_bytes = 0
        self.room = asyncio.Event()
        self.write_lock = asyncio.Lock()
        self.broken = False
        self.held = 0
        """Bytes of the server's `MemoryBudget` this connection holds."""
        self.closed = False

    def take(self, size: int) -> bool:
        if self.closed or not self.server.budget.take(size):
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        # Capped at what is held: after close every byte went back at once.
        size = min(size, self.held)
        self.held -= size
        self.server.budget.give(size)

    async def serve(self) -> None:
        framer = LineFramer(self.config.max_line)
        framer_held = 0
        try:
            while not self.broken:
                data = await self.reader.read(self.config.read_chunk)
                if not data:
                    break
                items = framer.feed(data)
                # The budget is settled before any await, so no other connection comes between
                # the bytes the framer let go and the complete lines that took them over.
                self.give(framer_held)
                framer_held = 0
                admitted = [self._admit(item) for item in items]
                if framer.buffered:
                    if self.take(framer.buffered):
                        framer_held = framer.buffered
                    else:
                        framer.abandon()
                for item in admitted:
                    if isinstance(item, Oversize):
                        await self.send(
                            error_line(
                                "parse_error",
                                f"request line longer than {self.config.max_line} bytes "
                                "(max line); it was skipped",
                            )
                        )
                    elif isinstance(item, Abandoned):
                        await self.send(self._over_budget(item.size))
                    elif item is not None:
                        await self._queue(item)
        except (ConnectionError, OSError):
            pass
        finally:
            # The client left (or the server closes): its requests and their agents stop.
            self.pending.clear()
            tasks = tuple(self.running)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=self.config.stop_timeout + 1)
            self.closed = True
            self.give(self.held)

    def _admit(self, item: bytes | Oversize | Abandoned) -> bytes | Oversize | Abandoned | None:
        """A complete line takes twice its bytes (itself and its decoding) or is refused."""
        if not isinstance(item, bytes):
            return item
        if not item.strip():
            return None
        return item if self.take(2 * len(item)) else Abandoned(len(item))

    def _over_budget(self, size: int) -> bytes:
        limit = self.config.max_memory
        if 2 * size > limit:
            why = f"it needs {2 * size} bytes of --remote-max-memory ({limit} bytes) alone"
        else:
            why = (
                f"--remote-max-memory ({limit} bytes, shared by all connections) is in use "
                "by other requests; try again later"
            )
        return error_line(
            "connection_error", f"a request line of {size} bytes was dropped unread: {why}"
        )

    async def _queue(self, line: bytes) -> None:
        self.pending.append(line)
        self.pending_bytes += len(line)
        self._dispatch()
        while self.pending and (
            len(self.pending) >= self.config.max_pending
            or self.pending_bytes > self.config.max_line
        ):
            self.room.clear()
            await self.room.wait()

    def _dispatch(self) -> None:
        while self.pending and len(self.running) < self.config.max_concurrent:
            line = self.pending.popleft()
            self.pending_bytes -= len(line)
            task = asyncio.ensure_future(self._serve_line(line))
            self.running[task] = ""
            task.add_done_callback(self._done)
        self.room.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("remote request failed", exc_info=task.exception())
        self._dispatch()

    async def send(self, line: bytes) -> None:
        if self.broken:
            return
        async with self.write_lock:
            try:
                self.writer.write(line)
                await asyncio.wait_for(self.writer.drain(), self.config.write_timeout)
            except (ConnectionError, OSError, TimeoutError, RuntimeError):
                # RuntimeError: the transport is closed already (the client left).
                self.broken = True
                self.reader.feed_eof()

    async def _serve_line(self, line: bytes) -> None:
        """Serves one admitted line; the budget it holds goes back when it is answered."""
        charge = 2 * len(line)
        try:
            request = await self._parse_or_answer(line)
            del line
            if request is None:
                return
            # Parsed: the line and its decoding are gone; its attachments and texts stay.
            kept = min(request_size(request), charge)
            self.give(charge - kept)
            charge = kept
            await self._serve_request(request)
        finally:
            self.give(charge)

    async def _parse_or_answer(self, line: bytes) -> RemoteRequest | None:
        """The request, or None once a line that is no request was answered."""
        try:
            return await self._parse(line)
        except RequestError as exc:
            await self.send(error_line(exc.kind, exc.message, exc.request_id))
        except Exception as exc:
            # parse_request turns every bad line into a RequestError; this is a bug's backstop,
            # so the line still gets its answer and the connection goes on.
            log.exception("parsing a remote request line failed")
            await self.send(error_line("processing_error", f"internal error: {exc!r}"))
        return None

    async def _serve_request(self, request: RemoteRequest) -> None:
        task = asyncio.current_task()
        assert task is not None
        if request.request_id in self.running.values():
            await self.send(
                error_line(
                    "processing_error",
                    "a request with this request_id is still running on this connection",
                    request.request_id,
                )
            )
            return
        self.running[task] = request.request_id
        try:
            if request.instructions:
                try:
                    async with asyncio.timeout(self.config.request_timeout):
                        await self._instructions(request)
                except TimeoutError:
                    raise RequestError(
                        "timeout_error",
                        f"the command took longer than {self.config.request_timeout:g}s",
                    ) from None
            else:
                await _Run(self, request).go()
        except RequestError as exc:
            await self.send(error_line(exc.kind, exc.message, request.request_id))
        except asyncio.CancelledError:
            if self.server.closing:
                await self.send(
                    error_line(
                        "connection_error",
                        "the server is shutting down; the request was stopped",
                        request.request_id,
                    )
                )
            raise
        except Exception as exc:
            log.exception("remote request %s failed", request.request_id)
            await self.send(
                error_line("processing_error", f"internal error: {exc}", request.request_id)
            )

    async def _parse(self, line: bytes) -> RemoteRequest:
        parse = functools.partial(
            parse_request,
            line,
            max_attachment_bytes=self.config.max_attachment_bytes,
            token=self.config.token,
        )
        if len(line) >= self.config.parse_in_thread:
            return await asyncio.to_thread(parse)
        return parse()

    async def _instructions(self, request: RemoteRequest) -> None:
        results = []
        for instruction in request.instructions:
            result = await self.server.run_instruction(instruction)
            results.append({"ToolResult": {"name": instruction.command, "result": result}})
        content = results[0] if len(results) == 1 else {"Multi": results}
        await self.send(response_line(request.request_id, content))


class _Run:
    """One request that runs an agent: attachments written, session started, answer gathered."""

    def __init__(self, connection: _Connection, request: RemoteRequest) -> None:
        self.connection = connection
        self.server = connection.server
        self.config = connection.config
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
        prompt = await self._prompt(probe.project_path)
        start = plan_run(request, prompt, defaults)
        try:
            session = await self.server.manager.start_session(start)
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
        async for event in self.server.manager.follow(session_id):
            if event.kind == "approval_request":
                # Whatever the stream mode: the peer must see it while it can still answer.
                await self.connection.send(approval_line(request.request_id, session_id, event))
                continue
            pieces = answer.feed(event)
            if incremental:
                for piece in pieces:
                    await self.connection.send(
                        response_line(
                            request.request_id,
                            piece,
                            extra={"session_id": session_id, "done": False},
                        )
                    )

    def _outcome(self, session_id: str) -> tuple[str | None, Usage]:
        """The ``error`` of a run that ended (None when it completed) and its token usage."""
        session = self.server.manager.get(session_id)
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
        await self.connection.send(
            response_line(
                self.request.request_id, answer.content(), error=error, usage=usage, extra=extra
            )
        )

    async def _prompt(self, project_path: str | None) -> str:
        parts: list[str] = []
        images = 0
        for leaf in self.request.inputs:
            if isinstance(leaf, TextInput):
                parts.append(leaf.text)
            elif isinstance(leaf, Attachment):
                if leaf.kind == "image":
                    images += 1
                    leaf = replace(leaf, filename=image_filename(images, leaf.content_type))
                path = await self._save(leaf, project_path)
                parts.append(attachment_note(leaf, str(path)))
        return "\n\n".join(part for part in parts if part)

    async def _save(self, attachment: Attachment, project_path: str | None) -> Path:
        if self.request.config.save_files_to == "project":
            path = _project_folder(self.server.manager, project_path) / attachment.filename
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
            await asyncio.to_thread(_write_private, path, attachment.data)
        except OSError as exc:
            raise RequestError("processing_error", f"could not write {path}: {exc}") from None
        return path

    async def _stop_agent(self) -> None:
        if self.session_id is None:
            return
        # Shielded: the agent must stop even though this request was cancelled.
        stop = asyncio.ensure_future(self.server.manager.cancel(self.session_id))
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(stop), self.config.stop_timeout)

    async def _clean_up(self) -> None:
        folder, self.folder = self.folder, None
        if folder is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)


def _project_folder(manager: SessionManager, requested: str | None) -> Path:
    """The folder the agent will run in, where a ``save_files_to: "project"`` attachment goes:
    checked by the session manager's own rules before anything is written."""
    try:
        return manager.resolve_project(requested)
    except ArpError as exc:
        raise RequestError("processing_error", exc.message) from None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


__all__ = [
    "INSTRUCTIONS",
    "RemoteConfig",
    "RemoteServer",
    "add_remote_arguments",
    "config_from_args",
    "remote_service",
]
