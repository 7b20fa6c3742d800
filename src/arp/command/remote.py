"""The remote TCP server: newline-delimited JSON requests to the agents (``arpc --remote``).

A plain TCP socket speaks the Agent CLI remote protocol (docs/remote-protocol.md; the pure core
is `arp.command.remote_protocol`). Each request line starts an agent session through command
mode's `SessionManager` (or runs a built-in Instruction), and its answer is one line with the
same ``request_id``. arpc wires it in two lines::

    add_remote_arguments(parser)                       # --remote HOST:PORT, --remote-executor …
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

This module holds the serving: the server, its connections and the built-in instructions. The
flags and the config are `arp.command.remote_config` (re-exported here); what one request that
runs an agent does is `arp.command.remote_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from arp.agents.approvals import parse_decision
from arp.agents.executors import AGENTS
from arp.agents.history import HistoryReaders
from arp.agents.lines import Abandoned, LineFramer, Oversize
from arp.agents.sessions import SessionManager
from arp.command.remote_config import RemoteConfig, add_remote_arguments, config_from_args
from arp.command.remote_protocol import (
    Answer,
    Instruction,
    MemoryBudget,
    RemoteRequest,
    RequestError,
    error_line,
    parse_request,
    request_size,
    response_line,
)
from arp.command.remote_run import AgentRun
from arp.config import API_BOUNDS, SESSION_BOUNDS
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
    config = config_from_args(args)
    if config is None:
        return None
    return RemoteServer(config, server.manager, server.context.history)


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
            self._accept, self.config.host, self.config.port, limit=self.config.stream_limit
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("remote protocol on %s:%d", self.config.host, self._port)

    @property
    def memory_in_use(self) -> int:
        """Bytes of the ``max_memory`` budget held by lines and requests now."""
        return self.budget.used

    async def _shutdown(self) -> None:
        """Stop accepting, cancel every connection (their agents stop), wait."""
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
        if self.closing or len(self._connections) >= self.config.max_connections:
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
# Instructions: built-in commands that start no agent


def _int_param(params: dict[str, Any], name: str, default: int, top: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArpError(f"parameter {name!r} must be a whole number of at least 0")
    return min(value, top)


def _str_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ArpError(f"parameter {name!r} is required (a string)")
    return value


async def _list_sessions(server: RemoteServer, params: dict[str, Any]) -> Any:
    limit = _int_param(params, "limit", API_BOUNDS.default_list, API_BOUNDS.max_list)
    offset = _int_param(params, "offset", 0, 1_000_000)
    sessions = server.manager.list(limit=limit, offset=offset)
    return {"sessions": [s.to_json() for s in sessions], "total": server.manager.count()}


async def _session_output(server: RemoteServer, params: dict[str, Any]) -> Any:
    session_id = _str_param(params, "session_id")
    after = _int_param(params, "after_seq", 0, 1 << 62)
    page_events = SESSION_BOUNDS.page_events
    limit = _int_param(params, "limit", page_events, page_events)
    # The manager's one page (as the HTTP API's and MCP's get_session), plus the answer text.
    page = server.manager.page(session_id, after, limit)
    answer = Answer(page.session.executor, stream=False)
    for event in page.events():
        answer.feed(event)
    body = page.to_json()
    return {"session": body.pop("session"), "text": answer.text, **body}


async def _cancel_session(server: RemoteServer, params: dict[str, Any]) -> Any:
    session = await server.manager.cancel(_str_param(params, "session_id"))
    return {"session": session.to_json()}


async def _list_projects(server: RemoteServer, params: dict[str, Any]) -> Any:
    agent = params.get("agent", "claude")
    if agent not in AGENTS:
        raise ArpError(f"parameter 'agent' must be one of {', '.join(AGENTS)}")
    history = server.history
    projects = await server.in_thread(lambda: history.projects(agent))
    limit = _int_param(params, "limit", server.config.default_projects, API_BOUNDS.max_list)
    return {"projects": [p.to_json() for p in projects[:limit]], "total": len(projects)}


async def _list_approvals(server: RemoteServer, params: dict[str, Any]) -> Any:
    return {"approvals": [a.to_json(with_session=True) for a in server.manager.approvals()]}


async def _decide_approval(server: RemoteServer, params: dict[str, Any]) -> Any:
    decision, message, remember = parse_decision(params)
    approval = server.manager.decide(
        _str_param(params, "session_id"),
        _str_param(params, "approval_id"),
        decision,
        message=message,
        remember=remember,
    )
    return approval.decision_json()


async def _help(server: RemoteServer, params: dict[str, Any]) -> Any:
    defaults = server.config.defaults
    return {
        "commands": sorted(INSTRUCTIONS),
        "defaults": {
            "executor": defaults.executor,
            "model": defaults.model,
            "project_path": defaults.project_path,
            "permission_mode": defaults.permission_mode,
        },
        "limits": {
            "max_line": server.config.max_line,
            "max_concurrent": server.config.max_concurrent,
            "max_memory": server.config.max_memory,
            "request_timeout": server.config.request_timeout,
        },
    }


INSTRUCTIONS: Final[dict[str, Callable[[RemoteServer, dict[str, Any]], Awaitable[Any]]]] = {
    "list_sessions": _list_sessions,
    "session_output": _session_output,
    "cancel_session": _cancel_session,
    "list_projects": _list_projects,
    "list_approvals": _list_approvals,
    "decide_approval": _decide_approval,
    "help": _help,
}


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
                await AgentRun(self.server.manager, self.config, self.send, request).go()
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


__all__ = [
    "INSTRUCTIONS",
    "RemoteConfig",
    "RemoteServer",
    "add_remote_arguments",
    "config_from_args",
    "remote_service",
]
