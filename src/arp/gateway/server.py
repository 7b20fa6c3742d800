"""The agent gateway: control-plane HTTP API, one WebSocket per agent, Redis Streams out.

    control plane ──HTTP──► Gateway ──WS (task, task_cancel)──► agent
                                    ◄─WS (heartbeat, log, status, result)──
                            Redis ◄─ streams, registry, outboxes

An agent's log/status/result is acked only after its Redis write succeeded, so while Redis is down
the agent keeps (and later resends) everything; the gateway retries the batch it holds first, so
an outage does not reorder an agent's entries. Tasks handed to an agent wait in its Redis outbox
until the agent acks them and are sent again whenever it reconnects, to whichever gateway node.
Tasks for an agent that is not connected to this node are refused with 409 (not queued).

Several nodes (`arps --cluster --with-gateway`, `node_id` set): each agent's hash names the node
holding its WebSocket. A task or cancel posted to another node goes into the agent's outbox as
usual, and that node appends {agent, message_id} to the holding node's *deliver stream* in
Redis, which the holder reads and sends on. A stream rather than pub/sub: an entry waits while
the holder's Redis connection blips (pub/sub drops what is published meanwhile), entries are
read in order, and reading one twice is harmless (the message comes from the outbox, and the
agent drops a message id it has seen). The outbox stays the truth: an agent that moved to yet
another node gets everything unacked there when it connects. Signed request ids are remembered
in Redis too, so a replay to another node is refused as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from arp.config import CLUSTER_BOUNDS
from arp.errors import (
    ArpError,
    ConfigError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RemoteProtocolError,
    TooManyRequests,
    Unavailable,
)
from arp.gateway import auth
from arp.gateway import messages as m
from arp.gateway.config import GatewayConfig, control_api_open, is_loopback, open_control_api
from arp.gateway.connection import (
    AGENT_ID,
    CLOSE_HEARTBEAT,
    CLOSE_REPLACED,
    CLOSE_TOKEN_ROTATED,
    AgentConnection,
    cancel_and_wait,
    seen_key,
)
from arp.gateway.metrics import GatewayMetrics
from arp.gateway.poller import TaskPoller
from arp.gateway.store import FINISHED, FULL, RedisUnavailable, Store
from arp.lifecycle import Service
from arp.protocol.json_depth import check_json_depth
from arp.web_errors import answer_errors

log = logging.getLogger(__name__)


class Gateway(Service):
    """The gateway server (an async context manager). `.port` is the bound port after start."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        node_id: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.node_id = node_id
        """This node's id in a relay cluster (None: a single gateway)."""
        self.metrics = GatewayMetrics()
        self.store = Store(
            config.redis, self.metrics, max_connections=config.bounds.max_redis_connections
        )
        self.verifier = auth.RequestVerifier(
            shared_secret=config.auth.shared_secret,
            require_signature=config.auth.require_signature,
            clock_skew=config.auth.clock_skew,
            bearer=config.control_plane.token,
        )
        self.connections: dict[str, AgentConnection] = {}
        self.seen = m.DedupWindow(config.agent.dedup_window)
        self.write_slots = asyncio.Semaphore(config.bounds.max_concurrent_writes)
        self.metrics.connected = lambda: len(self.connections)
        self.metrics.acks_pending = self._acks_pending
        self.port: int | None = None
        self._pending_out: dict[str, set[str]] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._background: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._agent_tasks: set[asyncio.Task[None]] = set()
        """Every agent connection's writer and flusher: reaped at shutdown even when the
        handler that owns them was cancelled in the middle of its own clean-up."""
        self._poller: TaskPoller | None = None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; on failure (port taken, bad host) everything opened is closed again."""
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        problem = open_control_api(self.config)
        if problem is not None:
            raise ConfigError(problem)
        if control_api_open(self.config) and not is_loopback(self.config.server.host):
            log.warning(
                "SECURITY: auth.allow_open is set: the control API on %s:%s accepts requests "
                "from anyone, who can run tasks on every agent. Set auth.shared_secret or "
                "control_plane.token.",
                self.config.server.host or "*",
                self.config.server.port,
            )
        await self.store.start()
        if not await self.store.ping():
            log.warning("Redis at %s is not answering; the gateway starts degraded", self._redis)
        app = web.Application(
            client_max_size=self.config.bounds.max_body, middlewares=[self._errors]
        )
        app.add_routes(
            [
                web.post("/api/agents/register/", self._register),
                web.get("/api/agents/", self._list_agents),
                web.get("/api/agents/{agent_id}/", self._get_agent),
                web.post("/api/agents/{agent_id}/tasks/", self._post_task),
                web.post("/api/agents/{agent_id}/tasks/{task_id}/cancel/", self._cancel_task),
                web.get("/ws/agent/{agent_id}", self._websocket),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._health),
            ]
        )
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.bounds.shutdown_grace,
        )
        await self._runner.setup()
        server = self.config.server
        self._site = web.TCPSite(self._runner, server.host, server.port, backlog=4096)
        await self._site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else server.port
        self._background.append(asyncio.create_task(self._cleanup_loop(), name="gateway-cleanup"))
        if self.node_id is not None:
            self._background.append(
                asyncio.create_task(self._deliver_loop(self.node_id), name="gateway-deliver")
            )
        if self.config.control_plane.url:
            self._poller = TaskPoller(self.config, self.dispatch_polled, self.connections.keys)
            self._background.append(asyncio.create_task(self._poller.run(), name="gateway-poll"))
        log.info("agent gateway listening on %s:%s", server.host, self.port)

    @property
    def _redis(self) -> str:
        return self.config.redis.url.rsplit("@", 1)[-1]

    async def _shutdown(self) -> None:
        """Stop accepting, close every agent with going-away, wait briefly, cancel the rest."""
        grace = self.config.bounds.shutdown_grace
        await self._bounded("background tasks", cancel_and_wait(self._background, grace))
        if self._site is not None:
            await self._bounded("listener", self._site.stop())
        for connection in list(self.connections.values()):
            connection.close(WSCloseCode.GOING_AWAY, "gateway shutting down")
        if self._handlers:
            _done, pending = await asyncio.wait(self._handlers, timeout=grace)
            await self._bounded("open requests", cancel_and_wait(pending, grace))
        if self._agent_tasks:
            await self._bounded("agent tasks", cancel_and_wait(self._agent_tasks, grace))
        if self._runner is not None:
            await self._bounded("HTTP server", self._runner.cleanup())
        if self._poller is not None:
            await self._bounded("poller", self._poller.close())
        await self._bounded("Redis client", self.store.close())

    async def _bounded(self, what: str, step: Awaitable[None]) -> None:
        """One shutdown step, given at most the grace period: closing never hangs."""
        try:
            async with asyncio.timeout(self.config.bounds.shutdown_grace):
                await step
        except TimeoutError:
            log.warning("closing the gateway: %s did not finish in time", what)

    # -- HTTP plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await answer_errors(request, handler)  # aiohttp's errors too, one shape
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _authorized_body(self, request: web.Request) -> bytes:
        body = await request.read()
        self.verifier.verify(request.method, request.raw_path, request.headers, body, self.clock())
        request_id = request.headers.get(auth.REQUEST_ID_HEADER)
        if self.node_id is not None and request_id and request.headers.get(auth.SIGNATURE_HEADER):
            # Verified, so the id is the signer's: refused if any node has seen it.
            window = 2 * self.config.auth.clock_skew
            if not await self.store.first_use_of(request_id, window):
                raise auth.AuthError(f"{auth.REQUEST_ID_HEADER} was already used")
        return body

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            check_json_depth(body)  # deep nesting would raise RecursionError, not ValueError
            return json.loads(body or b"{}")
        except ValueError:
            raise RemoteProtocolError("the body is not valid JSON") from None

    @staticmethod
    def _agent_id(raw: str) -> str:
        if not AGENT_ID.fullmatch(raw):
            raise RemoteProtocolError("agent_id must be 1..128 of letters, digits, '.', '_' or '-'")
        return raw

    def _acks_pending(self) -> int:
        return sum(len(ids) for ids in self._pending_out.values())

    # -- control-plane API ---------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        data = self._json(await self._authorized_body(request))
        if not isinstance(data, dict):
            raise RemoteProtocolError("the body must be a JSON object")
        agent_id = self._agent_id(str(data.get("agent_id") or m.new_message_id()))
        name = data.get("name", agent_id)
        labels = data.get("labels") or {}
        if not isinstance(name, str) or not isinstance(labels, dict):
            raise RemoteProtocolError("name must be a string and labels an object")
        labels = {str(key): str(value) for key, value in labels.items()}
        existing = await self.store.get_agent(agent_id)
        limit = self.config.bounds.max_agents
        if existing is None and await self.store.agent_count() >= limit:
            raise TooManyRequests(f"at most {limit} agents can be registered")
        token = auth.new_agent_token()
        await self.store.register_agent(
            agent_id, name, labels, auth.hash_token(token), self.clock()
        )
        log.info("agent %s registered%s", agent_id, " again (new token)" if existing else "")
        connection = self.connections.get(agent_id)
        if connection is not None:
            # The old token is revoked: its live WebSocket goes too (other nodes close theirs at
            # their next cleanup pass, which compares token hashes).
            connection.close(CLOSE_TOKEN_ROTATED, "re-registered: the agent token changed")
        return web.json_response(
            {"agent_id": agent_id, "name": name, "labels": labels, "token": token},
            status=200 if existing else 201,
        )

    def _describe(self, agent_id: str, data: dict[str, str], running: list[str]) -> dict[str, Any]:
        now = self.clock()
        last = float(data.get("last_heartbeat") or 0) or None
        recent = last is not None and now - last <= self.config.agent.heartbeat_timeout
        online = agent_id in self.connections or (data.get("status") == "online" and recent)
        connection = self.connections.get(agent_id)
        if connection is not None:
            last = connection.last_heartbeat
        return {
            "agent_id": agent_id,
            "name": data.get("name", agent_id),
            "labels": json.loads(data.get("labels") or "{}"),
            "status": "online" if online else "offline",
            "last_heartbeat": last,
            "running_tasks": running,
            **({"node": (data.get("node") or None) if online else None} if self.node_id else {}),
        }

    async def _list_agents(self, request: web.Request) -> web.Response:
        await self._authorized_body(request)
        agents = await self.store.list_agents(self.config.bounds.max_agents)
        return web.json_response(
            {"agents": [self._describe(agent_id, data, run) for agent_id, data, run in agents]}
        )

    async def _get_agent(self, request: web.Request) -> web.Response:
        await self._authorized_body(request)
        agent_id = self._agent_id(request.match_info["agent_id"])
        data = await self.store.get_agent(agent_id)
        if data is None:
            raise NotFound(f"agent {agent_id} is not registered")
        running = await self.store.running_tasks(agent_id)
        return web.json_response(self._describe(agent_id, data, running))

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await self._authorized_body(request)
        agent_id = self._agent_id(request.match_info["agent_id"])
        spec = m.TaskSpec.from_json(self._json(body))
        await self.dispatch(agent_id, spec.to_message())
        return web.json_response(
            {"agent_id": agent_id, "task_id": spec.task_id, "status": "dispatched"}, status=202
        )

    async def _cancel_task(self, request: web.Request) -> web.Response:
        await self._authorized_body(request)
        agent_id = self._agent_id(request.match_info["agent_id"])
        task_id = m.check_task_id(request.match_info["task_id"])
        await self.dispatch(agent_id, m.task_cancel(task_id))
        return web.json_response(
            {"agent_id": agent_id, "task_id": task_id, "status": "cancelling"}, status=202
        )

    async def dispatch(self, agent_id: str, message: dict[str, Any]) -> None:
        """Hand a task or cancel to a connected agent, kept in its outbox until acked."""
        size, limit = m.encoded_size(message), self.config.agent.max_message_size
        if size > limit:
            # The agent could never read it; queued, it would be redelivered forever.
            raise PayloadTooLarge(
                f"the task is {size} bytes as a WebSocket message; agents accept at most {limit} "
                "(agent.max_message_size)"
            )
        connection = self.connections.get(agent_id)
        holder: str | None = None
        if connection is None:
            data = await self.store.get_agent(agent_id)
            if data is None:
                raise NotFound(f"agent {agent_id} is not registered")
            holder = self._other_holder(data)
            if holder is None:
                raise Conflict(f"agent {agent_id} is offline; tasks are not queued for it")
        queued = await self.store.queue_outbound(
            agent_id, message, self.clock(), self.config.agent.max_pending_tasks
        )
        if queued == FINISHED:
            raise Conflict(
                f"task {message['task_id']} already ran on agent {agent_id}; task ids are not "
                "reused for the same agent"
            )
        if queued == FULL:
            raise TooManyRequests(
                f"agent {agent_id} already has {self.config.agent.max_pending_tasks} "
                "unacknowledged messages"
            )
        if holder is not None:
            await self.store.hand_to_node(
                holder, agent_id, message["message_id"], CLUSTER_BOUNDS.relay_maxlen
            )
            return
        assert connection is not None
        self._pending_out.setdefault(agent_id, set()).add(message["message_id"])
        if not connection.send(message):
            raise Conflict(f"agent {agent_id} disconnected; the message waits in its outbox")

    def _other_holder(self, data: dict[str, str]) -> str | None:
        """The other node holding the agent's WebSocket, if it is live there (cluster only)."""
        node = data.get("node")
        if self.node_id is None or not node or node == self.node_id:
            return None
        last = float(data.get("last_heartbeat") or 0)
        if data.get("status") != "online":
            return None
        if self.clock() - last > self.config.agent.heartbeat_timeout:
            return None
        return node

    async def _deliver_loop(self, node_id: str) -> None:
        """Send this node's agents the outbox messages other nodes handed over to it."""
        stream = self.store.deliver_stream(node_id)
        block = max(0.05, min(CLUSTER_BOUNDS.relay_block, self.config.redis.timeout / 2))
        last: str | None = None
        pause = self.config.bounds.redis_retry_pause
        while True:
            try:
                if last is None:
                    newest = await self.store.call(
                        "deliver", lambda: self.store.redis.xrevrange(stream, count=1)
                    )
                    last = newest[0][0] if newest else "0-0"
                replies = await self.store.call(
                    "deliver",
                    functools.partial(
                        self.store.redis.xread,
                        {stream: last},
                        count=CLUSTER_BOUNDS.relay_batch,
                        block=int(block * 1000),
                    ),
                )
                pause = self.config.bounds.redis_retry_pause
            except RedisUnavailable as exc:
                log.warning("deliver stream of node %s not read: %s", node_id, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.config.bounds.redis_retry_max)
                continue
            for _name, entries in replies or []:
                for entry_id, fields in entries:
                    last = entry_id
                    await self._deliver(fields.get("agent", ""), fields.get("message_id", ""))

    async def _deliver(self, agent_id: str, message_id: str) -> None:
        connection = self.connections.get(agent_id)
        if connection is None:
            return  # it moved on: its next node redelivers the outbox
        try:
            message = await self.store.outbound_message(agent_id, message_id)
        except RedisUnavailable as exc:
            log.warning("agent %s: handed-over message not read: %s", agent_id, exc)
            return
        if message is None:
            return  # acked already
        self._pending_out.setdefault(agent_id, set()).add(message_id)
        connection.send(message)

    async def dispatch_polled(self, agent_id: str, spec: m.TaskSpec) -> bool:
        try:
            await self.dispatch(agent_id, spec.to_message())
        except ArpError as exc:
            log.info("polled task %s for %s not handed over: %s", spec.task_id, agent_id, exc)
            return False
        return True

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def _health(self, request: web.Request) -> web.Response:
        redis_ok = await self.store.ping()
        return web.json_response(
            {
                "status": "ok" if redis_ok else "degraded",
                "redis": "up" if redis_ok else "down",
                "connected_agents": len(self.connections),
            },
            status=200 if redis_ok else 503,
        )

    # -- the agent WebSocket -------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> tuple[str, str]:
        """(agent id, stored token hash) of an agent whose token matches; 401/403 if not."""
        agent_id = self._agent_id(request.match_info["agent_id"])
        token = auth.token_from_subprotocols(request.headers.get("Sec-WebSocket-Protocol", ""))
        if token is None:
            self.metrics.refuse("no_token")
            raise auth.AuthError(
                "send the agent token as Sec-WebSocket-Protocol: agent-token, <token>"
            )
        data = await self.store.get_agent(agent_id)
        if data is None:
            self.metrics.refuse("unknown_agent")
            raise auth.ForbiddenError(f"agent {agent_id} is not registered")
        if not auth.token_matches(token, data.get("token_hash", "")):
            self.metrics.refuse("bad_token")
            raise auth.AuthError("wrong agent token")
        return agent_id, data.get("token_hash", "")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.closing:
            raise Unavailable("the gateway is shutting down; reconnect shortly")
        agent_id, token_hash = await self._authenticate(request)
        ws = web.WebSocketResponse(
            protocols=(auth.SUBPROTOCOL,),
            # Twice the limit: a message over it is still read, to be acked and dropped (an agent
            # would otherwise resend it forever); beyond twice the connection closes with 1009.
            max_msg_size=2 * self.config.agent.max_message_size,
            autoping=True,
            heartbeat=None,
        )
        await ws.prepare(request)
        limit = self.config.agent.max_connections
        if agent_id not in self.connections and len(self.connections) >= limit:
            self.metrics.refuse("max_connections")
            await ws.close(
                code=WSCloseCode.TRY_AGAIN_LATER,
                message=f"gateway full: max_connections={limit}".encode(),
            )
            return ws
        previous = self.connections.get(agent_id)
        if previous is not None:
            previous.close(CLOSE_REPLACED, "replaced by a newer connection")
        connection = AgentConnection(self, agent_id, ws, self.clock(), token_hash)
        self.connections[agent_id] = connection
        try:
            await self._serve(connection)
        finally:
            if self.connections.get(agent_id) is connection:
                del self.connections[agent_id]
                self._pending_out.pop(agent_id, None)
                await self._mark(agent_id, "offline", connection.close_reason)
        return ws

    async def _mark(self, agent_id: str, state: str, reason: tuple[int, str] | None) -> None:
        now = self.clock()
        detail = reason[1] if reason else ("connected" if state == "online" else "disconnected")
        try:
            if self.node_id is None:
                await self.store.set_presence([agent_id], state, now)
            elif state == "online":
                await self.store.mark_connected(agent_id, self.node_id, now)
            elif not await self.store.mark_disconnected(agent_id, self.node_id, now):
                return  # it is connected to another node by now
            await self.store.write_agent_status(agent_id, state, detail, now)
        except RedisUnavailable as exc:
            log.warning("agent %s %s, not recorded: %s", agent_id, state, exc)

    async def _serve(self, connection: AgentConnection) -> None:
        ws = connection.ws
        agent_id = connection.agent_id
        log.info("agent %s connected", agent_id)
        connection.tasks = [
            asyncio.create_task(connection.writer(), name=f"ws-writer-{agent_id}"),
            asyncio.create_task(connection.flusher(), name=f"ws-flusher-{agent_id}"),
        ]
        for task in connection.tasks:
            self._agent_tasks.add(task)
            task.add_done_callback(self._agent_tasks.discard)
        reader = asyncio.create_task(self._read(connection), name=f"ws-reader-{agent_id}")
        closing = asyncio.create_task(connection.closing.wait())
        try:
            await self._mark(agent_id, "online", None)
            await self._redeliver(connection)
            await asyncio.wait(
                [reader, closing, *connection.tasks], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            grace = self.config.bounds.shutdown_grace
            await cancel_and_wait([reader, closing, *connection.tasks], grace)
            code, reason = connection.close_reason or (WSCloseCode.OK, "")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.bounds.shutdown_grace):
                    await ws.close(code=code, message=reason.encode()[:120])
            log.info("agent %s disconnected %s", agent_id, reason)

    async def _redeliver(self, connection: AgentConnection) -> None:
        try:
            waiting = await self.store.outbound(connection.agent_id)
        except RedisUnavailable as exc:
            log.warning("agent %s: outbox not read: %s", connection.agent_id, exc)
            return
        pending = self._pending_out.setdefault(connection.agent_id, set())
        for message in waiting:
            pending.add(message["message_id"])
            self.metrics.redeliveries += 1
            connection.send(message)

    async def _read(self, connection: AgentConnection) -> None:
        async for frame in connection.ws:
            if frame.type == WSMsgType.TEXT:
                await self._receive(connection, frame.data)
            elif frame.type == WSMsgType.BINARY:
                self.metrics.drop("binary")
            elif frame.type == WSMsgType.ERROR:
                exc = connection.ws.exception()
                connection.close(WSCloseCode.MESSAGE_TOO_BIG, f"receive error: {exc}")
                return

    async def _receive(self, connection: AgentConnection, raw: str) -> None:
        try:
            limit = self.config.agent.max_message_size
            if m.oversize(raw, limit):
                raise m.too_large(raw, limit)
            message = m.parse(raw, allowed=m.FROM_AGENT)
        except m.DroppedMessage as exc:
            self.metrics.drop(exc.reason)
            log.warning("agent %s: message dropped: %s", connection.agent_id, exc.message)
            if exc.message_id is not None:
                # Acked: it can never be processed, so it must not be resent forever.
                connection.send(m.ack([exc.message_id]))
            return
        kind = message["type"]
        self.metrics.count_in(kind)
        # Any message proves the agent alive, so a busy agent is never swept for a late beat.
        connection.last_heartbeat = self.clock()
        if kind == m.ACK:
            ids = message["ack_ids"]
            pending = self._pending_out.get(connection.agent_id)
            if pending is not None:
                pending.difference_update(ids)
            try:
                await self.store.acked_outbound(connection.agent_id, ids)
            except RedisUnavailable as exc:
                log.warning(
                    "agent %s: ack not recorded (resent later): %s", connection.agent_id, exc
                )
        elif kind == m.HEARTBEAT:
            pass
        elif seen_key(connection.agent_id, message["message_id"]) in self.seen:
            self.metrics.duplicates += 1
            connection.send(m.ack([message["message_id"]]))
        else:
            await connection.inbound.put(message)

    # -- the periodic sweep --------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        interval = self.config.agent.cleanup_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.cleanup()
            except Exception:  # the sweep must survive anything one pass meets
                log.exception("gateway cleanup pass failed")

    async def cleanup(self) -> None:
        """Close agents silent past heartbeat_timeout; record the rest's last heartbeat."""
        now = self.clock()
        timeout = self.config.agent.heartbeat_timeout
        beats: dict[str, float] = {}
        for agent_id, connection in list(self.connections.items()):
            if now - connection.last_heartbeat > timeout and connection.waiting_on_redis:
                # Its silence is ours: we stopped reading while Redis was down or slow.
                continue
            if now - connection.last_heartbeat > timeout:
                log.warning("agent %s: no heartbeat for %.0fs, offline", agent_id, timeout)
                connection.close(CLOSE_HEARTBEAT, "heartbeat timeout")
            else:
                beats[agent_id] = connection.last_heartbeat
        try:
            await self.store.set_heartbeats(beats)
            hashes = await self.store.token_hashes(list(beats))
        except RedisUnavailable as exc:
            log.warning("heartbeats not recorded: %s", exc)
            return
        for agent_id, stored in hashes.items():
            live = self.connections.get(agent_id)
            if live is not None and live.token_hash != stored:
                log.warning("agent %s: token changed (re-registered), disconnected", agent_id)
                live.close(CLOSE_TOKEN_ROTATED, "re-registered: the agent token changed")
