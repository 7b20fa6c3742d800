"""arpc as a gateway agent: one WebSocket to the gateway, tasks run through the session manager.

    arpc --gateway-url ws://host:8080 --agent-id ID --agent-token-file FILE

The loop connects (token in `Sec-WebSocket-Protocol: agent-token, <token>`), heartbeats, and for
each `task` starts a session with the same session manager and executors as command mode. Each
session event becomes a `log` message (`seq` = the event's seq, `stream` = its kind, `data` = the
event as one JSON line); the task's state changes become `status` messages and its end one
`result`. `task_cancel` cancels the session.

Reliability: every log/status/result waits in an `Outbox` until the gateway acks it, is written
again after a reconnect, and again after `ack_timeout` without an ack (Redis may be down). A small
state file per task (`<state_dir>/tasks/<task_id>.json`: its session id) is written before the
task is acked and removed once its result is acked; an agent restarted after a crash replays each
such task's events from the session's stored log. Message ids derive from (task, seq), so replays
are dropped as duplicates by the gateway: nothing lost, nothing doubled. It reconnects forever.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import platformdirs

from arp.agents.events import Event
from arp.agents.session_types import Session, SessionConfig, StartRequest
from arp.config import AgentBounds
from arp.errors import ArpError, ConfigError
from arp.gateway import auth
from arp.gateway import messages as m
from arp.gateway.agent_flags import add_agent_arguments as add_agent_arguments
from arp.lifecycle import Service
from arp.net.backoff import Backoff

if TYPE_CHECKING:
    # Imported where the agent loop runs: arpc without --gateway-url never loads aiohttp.
    import aiohttp

log = logging.getLogger(__name__)

CLOSE_FATAL = frozenset({401, 403})


class TaskSessions(Protocol):
    """What the agent needs of `arp.agents.sessions.SessionManager` (which satisfies it)."""

    async def start_session(self, request: StartRequest) -> Session: ...

    def get(self, session_id: str) -> Session: ...

    def follow(self, session_id: str, after_seq: int = 0) -> AsyncIterator[Event]: ...

    async def cancel(self, session_id: str) -> Session: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions(AgentBounds):
    """Where the gateway is and who we are; the agent's own deadlines and bounds are
    `arp.config.AgentBounds` (inherited)."""

    gateway: str
    agent_id: str
    token: str
    state_dir: Path

    @property
    def url(self) -> str:
        base = self.gateway.rstrip("/")
        if base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        elif base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        return f"{base}/ws/agent/{self.agent_id}"


def agent_options_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AgentOptions:
    """Flags over env; a missing id or token is a `ConfigError` saying what to pass."""
    environ = os.environ if environ is None else environ
    gateway = getattr(args, "gateway", None) or environ.get("ARP_GATEWAY", "")
    agent_id = getattr(args, "agent_id", None) or environ.get("ARP_AGENT_ID", "")
    if not gateway.startswith(("ws://", "wss://", "http://", "https://")):
        raise ConfigError(f"--gateway-url: {gateway!r} is not a ws:// or wss:// URL")
    if not agent_id:
        raise ConfigError("--agent-id (or env ARP_AGENT_ID) is required with --gateway-url")
    token_file = getattr(args, "agent_token_file", None) or environ.get("ARP_AGENT_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--agent-token-file {token_file}: {exc.strerror}") from None
    else:
        token = environ.get("ARP_AGENT_TOKEN", "").strip()
    if not token:
        raise ConfigError("an agent token is required: --agent-token-file or env ARP_AGENT_TOKEN")
    state = getattr(args, "agent_state_dir", None) or environ.get("ARP_AGENT_STATE_DIR")
    state_dir = (
        Path(state)
        if state
        else Path(platformdirs.user_data_dir("arpc", appauthor=False)) / "agent" / agent_id
    )
    interval = getattr(args, "agent_heartbeat_interval", None)
    options = AgentOptions(gateway=gateway, agent_id=agent_id, token=token, state_dir=state_dir)
    if interval is not None:
        if interval <= 0:
            raise ConfigError("--agent-heartbeat-interval must be more than zero")
        options = dataclasses.replace(options, heartbeat_interval=interval)
    return options


class TaskState:
    """The small file that lets a restarted agent finish reporting a task."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, task_id: str) -> Path:
        return self.folder / f"{task_id}.json"

    def save(self, task_id: str, session_id: str | None, error: str | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(task_id)
        temporary = path.with_suffix(".tmp")
        data = {"task_id": task_id, "session_id": session_id, "error": error}
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, path)

    def remove(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(task_id).unlink()

    def load(self) -> list[dict[str, Any]]:
        if not self.folder.is_dir():
            return []
        states = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                states.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("task state %s unreadable, skipped: %s", path, exc)
        return states


def _start_request(message: dict[str, Any]) -> StartRequest:
    """A `task` message → the session manager's request (options may add any of its fields)."""
    body: dict[str, Any] = dict(message.get("options") or {})
    body.update(executor=message.get("executor") or "claude", prompt=message.get("prompt", ""))
    if message.get("model"):
        body["model"] = message["model"]
    if message.get("project_path"):
        body["project_path"] = message["project_path"]
    return StartRequest.from_json(body)


class AgentLoop(Service):
    """The agent's connection and its tasks (an async context manager)."""

    def __init__(
        self, options: AgentOptions, sessions: TaskSessions, *, clock: Any = time.monotonic
    ) -> None:
        self.options = options
        self.sessions = sessions
        self.clock = clock
        self.outbox = m.Outbox(options.max_unacked, options.ack_timeout)
        self.state = TaskState(options.state_dir / "tasks")
        self.seen = m.DedupWindow(options.dedup_window)
        self.tasks: dict[str, str | None] = {}
        """task id → session id (None: the task failed to start), until its result is acked."""
        self.connected = asyncio.Event()
        self.connections = 0
        self._wake = asyncio.Event()
        self._immediate: list[dict[str, Any]] = []
        self._starting: set[str] = set()
        self._cancel_early: set[str] = set()
        self._space = asyncio.Event()
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._helpers: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        import aiohttp

        if self._main is not None:
            return
        for saved in self.state.load():
            task_id = str(saved.get("task_id"))
            session_id = saved.get("session_id")
            self.tasks[task_id] = session_id
            self._pump(task_id, session_id, saved.get("error"))
        self._http = aiohttp.ClientSession()
        self._main = asyncio.create_task(self._run(), name="gateway-agent")

    async def _shutdown(self) -> None:
        pending = [t for t in (self._main, *self._pumps.values(), *self._helpers) if t]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # -- the connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        import aiohttp

        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        while True:
            started = self.clock()
            try:
                await self._connect_once()
            except aiohttp.WSServerHandshakeError as exc:
                level = logging.ERROR if exc.status in CLOSE_FATAL else logging.WARNING
                log.log(level, "gateway refused the agent (%s %s)", exc.status, exc.message)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("gateway connection failed: %s", exc or type(exc).__name__)
            except Exception:  # reconnecting forever means surviving the unexpected too
                log.exception("gateway connection broke")
            self.connected.clear()
            if self.clock() - started > self.options.backoff_max:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _connect_once(self) -> None:
        import aiohttp

        assert self._http is not None
        ws = await self._http.ws_connect(
            self.options.url,
            protocols=(auth.SUBPROTOCOL, self.options.token),
            timeout=aiohttp.ClientWSTimeout(ws_close=self.options.connect_timeout),
            heartbeat=self.options.heartbeat_interval,
            # Twice the limit: a larger task is still read, to be acked and dropped (never
            # redelivered forever); beyond this the connection closes.
            max_msg_size=2 * self.options.max_message_size,
            autoclose=True,
        )
        self.connections += 1
        log.info("connected to the gateway as %s", self.options.agent_id)
        self.outbox.disconnected()
        self.connected.set()
        sender = asyncio.create_task(self._send_loop(ws), name="agent-sender")
        reader = asyncio.create_task(self._read_loop(ws), name="agent-reader")
        try:
            done, _ = await asyncio.wait([sender, reader], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("gateway link failed: %s", task.exception())
            log.warning("gateway connection ended (%s %s)", ws.close_code, frame_reason(ws))
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            await ws.close()

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import aiohttp

        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self._receive(frame.data)
            elif frame.type == aiohttp.WSMsgType.ERROR:
                return

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        next_beat = 0.0
        tick = min(self.options.heartbeat_interval, self.options.ack_timeout) / 2
        while True:
            now = self.clock()
            if now >= next_beat:
                running = [t for t, s in self.tasks.items() if s is not None]
                await ws.send_str(m.encode(m.heartbeat(time.time(), running)))
                next_beat = now + self.options.heartbeat_interval
            while self._immediate:
                await ws.send_str(m.encode(self._immediate[0]))
                del self._immediate[0]
            for message, _again in self.outbox.due(now):
                await ws.send_str(m.encode(message))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    def _receive(self, raw: str) -> None:
        try:
            if m.oversize(raw, self.options.max_message_size):
                raise m.too_large(raw, self.options.max_message_size)
            message = m.parse(raw, allowed=m.TO_AGENT)
        except m.DroppedMessage as exc:
            log.warning("gateway message dropped: %s", exc.message)
            if exc.message_id is not None:
                self._send_now(m.ack([exc.message_id]))  # it can never be processed: no resend
            return
        kind = message["type"]
        if kind == m.ACK:
            self._acked(message["ack_ids"])
            return
        if kind == m.TASK:
            self._spawn(self._on_task(message))
        elif kind == m.TASK_CANCEL:
            self._spawn(self._on_cancel(message))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helper_done)

    def _helper_done(self, task: asyncio.Task[Any]) -> None:
        self._helpers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task handling failed", exc_info=task.exception())

    def _send_now(self, message: dict[str, Any]) -> None:
        """Send once, not kept (acks: a lost one makes the gateway resend, acked again then)."""
        if len(self._immediate) >= self.options.max_immediate:
            del self._immediate[0]
        self._immediate.append(message)
        self._wake.set()

    def _acked(self, ids: list[str]) -> None:
        self.outbox.acked(ids)
        self._space.set()
        for message_id in ids:
            if message_id.endswith(":result"):
                task_id = message_id[: -len(":result")]
                if task_id in self.tasks:
                    del self.tasks[task_id]
                    self.state.remove(task_id)

    # -- tasks ---------------------------------------------------------------------------------

    async def _on_task(self, message: dict[str, Any]) -> None:
        task_id = message["task_id"]
        known = task_id in self.tasks or task_id in self._starting
        if known or message["message_id"] in self.seen:
            if task_id not in self._starting:
                self._send_now(m.ack([message["message_id"]]))
            return
        session_id: str | None = None
        error: str | None = None
        self._starting.add(task_id)
        try:
            session = await self.sessions.start_session(_start_request(message))
            session_id = session.session_id
        except ArpError as exc:
            error = exc.message
            log.warning("task %s not started: %s", task_id, error)
        finally:
            self._starting.discard(task_id)
        self.state.save(task_id, session_id, error)
        self.tasks[task_id] = session_id
        self.seen.add(message["message_id"])
        self._send_now(m.ack([message["message_id"]]))
        self._pump(task_id, session_id, error)
        if task_id in self._cancel_early and session_id is not None:
            self._cancel_early.discard(task_id)
            with contextlib.suppress(ArpError):
                await self.sessions.cancel(session_id)

    async def _on_cancel(self, message: dict[str, Any]) -> None:
        task_id = message["task_id"]
        session_id = self.tasks.get(task_id)
        self._send_now(m.ack([message["message_id"]]))
        if task_id in self._starting:
            self._cancel_early.add(task_id)  # honoured as soon as its session exists
        elif session_id is not None:
            log.info("task %s: cancel requested", task_id)
            with contextlib.suppress(ArpError):
                await self.sessions.cancel(session_id)

    def _pump(self, task_id: str, session_id: str | None, error: str | None) -> None:
        task = asyncio.create_task(self._report(task_id, session_id, error), name=f"task-{task_id}")
        self._pumps[task_id] = task
        task.add_done_callback(lambda done: self._pump_done(task_id, done))

    def _pump_done(self, task_id: str, task: asyncio.Task[None]) -> None:
        if self._pumps.get(task_id) is task:
            del self._pumps[task_id]
        if not task.cancelled() and task.exception() is not None:
            # Its state file stays: the next start of the agent reports the task again.
            log.error("task %s: reporting failed", task_id, exc_info=task.exception())

    async def _queue(self, message: dict[str, Any]) -> None:
        """Keep `message` until acked, waiting while the outbox is full; cut to fit the gateway's
        message limit first (a message the gateway refuses would be resent forever)."""
        try:
            message = m.fit(message, self.options.max_message_size)
        except m.DroppedMessage as exc:
            log.error("not sent: %s", exc.message)
            return
        while self.outbox.full:
            self._space.clear()
            await self._space.wait()
        self.outbox.add(message)
        self._wake.set()

    def _log_message(self, task_id: str, event: Event) -> dict[str, Any]:
        """The event's `log` message, its data still one valid JSON line when cut to fit."""
        message = m.log(
            task_id, event.seq, _event_data(event, self.options.max_log_data), event.kind
        )
        limit = self.options.max_message_size
        if m.encoded_size(message) <= limit:
            return message
        text = event.text or event.to_line()

        def build(n: int) -> dict[str, Any]:
            return m.log(task_id, event.seq, _short_data(event, text[:n]), event.kind)

        return m.largest_fitting(build, len(text), limit) or message  # else `fit` cuts `data`

    async def _report(self, task_id: str, session_id: str | None, error: str | None) -> None:
        """Stream one task's events, then its final state and one result."""
        if session_id is None:
            await self._queue(m.status(task_id, "failed", error or "not started"))
            await self._queue(m.result(task_id, -1, error or "the task could not start"))
            return
        await self._queue(m.status(task_id, "running"))
        final_text = ""
        usage: dict[str, Any] = {}
        try:
            async for event in self.sessions.follow(session_id, 0):
                await self._queue(self._log_message(task_id, event))
                if event.kind == "result":
                    final_text = event.text or ""
                    if event.usage is not None:
                        usage = event.usage.to_json()
            session = self.sessions.get(session_id)
        except ArpError as exc:
            await self._queue(m.status(task_id, "failed", exc.message))
            await self._queue(m.result(task_id, -1, exc.message))
            return
        state = session.status
        exit_code = session.exit_code if session.exit_code is not None else -1
        await self._queue(m.status(task_id, state, session.error or ""))
        text = final_text or session.error or f"the task {state}"
        await self._queue(m.result(task_id, exit_code, text, usage or session.usage.to_json()))


def _event_data(event: Event, limit: int) -> str:
    """The event as one JSON line; an oversize one keeps its head, still valid JSON."""
    line = event.to_line()
    if len(line) <= limit:
        return line
    return _short_data(event, (event.text or line)[: limit // 2])


def _short_data(event: Event, text: str) -> str:
    """An event cut short: its place in the log, `truncated`, and the head of its text."""
    short: dict[str, Any] = {"seq": event.seq, "ts": event.ts, "run": event.run, "kind": event.kind}
    short.update(truncated=True, text=text)
    return json.dumps(short, ensure_ascii=False, separators=(",", ":"))


async def run_agent(
    options: AgentOptions, session_config: SessionConfig, *, stop: asyncio.Event | None = None
) -> None:
    """What arpc runs for `--gateway`: a session manager and the agent loop, until `stop`.

    Sessions are stored under `<state_dir>/sessions` unless `session_config.data_dir` says
    otherwise; a stored log is what lets a restarted agent report a task it was running.
    """
    if session_config.data_dir is None:
        session_config = dataclasses.replace(
            session_config, data_dir=options.state_dir / "sessions"
        )
    stop = stop or asyncio.Event()
    from arp.agents.sessions import SessionManager

    async with SessionManager(session_config) as sessions, AgentLoop(options, sessions):
        await stop.wait()


def frame_reason(ws: aiohttp.ClientWebSocketResponse) -> str:
    exc = ws.exception()
    return str(exc) if exc else ""
