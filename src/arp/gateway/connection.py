"""One agent's live WebSocket on the gateway: its bounded queues, its writer, its Redis flusher.

Kept apart from `arp.gateway.server` (the HTTP API and the gateway's lifecycle): a connection
needs only the few parts of the gateway that `Hub` names, so it imports nothing of the server.
An agent's log/status/result is acked only after its Redis write succeeded; a failed write is
retried at the head of the line, so an outage does not reorder one agent's entries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from arp.gateway import messages as m
from arp.gateway.config import GatewayConfig
from arp.gateway.metrics import GatewayMetrics
from arp.gateway.store import DUPLICATE, REFUSED, RedisUnavailable, Store

log = logging.getLogger(__name__)


class Hub(Protocol):
    """What a connection uses of its gateway."""

    config: GatewayConfig
    store: Store
    metrics: GatewayMetrics
    seen: m.DedupWindow
    write_slots: asyncio.Semaphore
    clock: Callable[[], float]


AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Matched whole (`fullmatch`: `$` would let a trailing newline through)."""

CLOSE_REPLACED = 4000
CLOSE_HEARTBEAT = 4001
CLOSE_SLOW_CONSUMER = 4002
CLOSE_TOKEN_ROTATED = 4003


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> None:
    """Cancel `tasks` and wait up to `timeout` for them to end (one that will not is logged).

    Every ended task's outcome is collected, so none is reported as never retrieved."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, stuck = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())
    for task in stuck:
        log.error("task %s did not end within %.1fs of being cancelled", task.get_name(), timeout)


class AgentConnection:
    """One agent's live WebSocket: a bounded outbound queue, a writer, a Redis flusher."""

    def __init__(
        self,
        gateway: Hub,
        agent_id: str,
        ws: web.WebSocketResponse,
        now: float,
        token_hash: str = "",
    ) -> None:
        self.gateway = gateway
        self.agent_id = agent_id
        self.token_hash = token_hash
        """The stored hash of the token it authenticated with: a re-registration changes it."""
        self.ws = ws
        self.last_heartbeat = now
        self.connected_at = now
        self.outbound: asyncio.Queue[str] = asyncio.Queue(gateway.config.agent.outbound_queue)
        self.inbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue(
            gateway.config.bounds.inbound_queue
        )
        self.close_reason: tuple[int, str] | None = None
        self.retrying = False
        """A batch of this agent's messages waits for Redis (its write failed)."""
        self.closing = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def send(self, message: dict[str, Any]) -> bool:
        """Queue `message` for the writer; a full queue disconnects the slow consumer."""
        if self.closing.is_set():
            return False
        try:
            self.outbound.put_nowait(m.encode(message))
        except asyncio.QueueFull:
            self.gateway.metrics.drop("outbound_queue_full")
            self.close(CLOSE_SLOW_CONSUMER, "outbound queue full: the agent does not keep up")
            return False
        self.gateway.metrics.count_out(message["type"])
        return True

    @property
    def waiting_on_redis(self) -> bool:
        """Its reader may be held back by us, not by the agent: a Redis write keeps failing, or
        its inbound queue is full (then pings and heartbeats wait unread in the socket)."""
        return self.retrying or self.inbound.full()

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to end with `code`/`reason` (the reader loop does the closing)."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self.closing.set()

    async def writer(self) -> None:
        while True:
            text = await self.outbound.get()
            await self.ws.send_str(text)

    async def _write(
        self, batch: list[dict[str, Any]], now: float
    ) -> list[tuple[str, float | None]] | None:
        """Each message's verdict, or None when Redis failed (nothing acked: agents resend)."""
        try:
            return await self.gateway.store.write_messages(self.agent_id, batch, now)
        except RedisUnavailable as exc:
            log.warning("agent %s: %d messages not acked: %s", self.agent_id, len(batch), exc)
            return None

    async def flusher(self) -> None:
        """Write received log/status/result messages to Redis in batches; ack what was written."""
        gateway = self.gateway
        bounds = gateway.config.bounds
        while True:
            batch = [await self.inbound.get()]
            pause = bounds.redis_retry_pause
            while True:
                # Few writes at once: the rest wait here, outside the Redis deadline, and
                # meanwhile their batches grow, so a flood costs fewer, larger script calls.
                async with gateway.write_slots:
                    while len(batch) < bounds.max_write_batch and not self.inbound.empty():
                        batch.append(self.inbound.get_nowait())
                    now = gateway.clock()
                    verdicts = await self._write(batch, now)
                if verdicts is not None:
                    self.retrying = False
                    break
                self.retrying = True
                # Head of line: this batch is retried before anything later from this agent,
                # so a Redis outage does not reorder its entries. The bounded queue behind it
                # pushes back on the agent's socket meanwhile.
                await asyncio.sleep(pause)
                pause = min(pause * 2, bounds.redis_retry_max)
            for message, (verdict, started) in zip(batch, verdicts, strict=True):
                gateway.seen.add(seen_key(self.agent_id, message["message_id"]))
                if verdict == DUPLICATE:
                    gateway.metrics.duplicates += 1
                elif verdict == REFUSED:
                    # Acked all the same: resending it could never make it this agent's task.
                    gateway.metrics.drop("unassigned_task")
                    log.warning(
                        "agent %s: %s for task %s dropped: the task is not (or no longer) "
                        "this agent's",
                        self.agent_id,
                        message["type"],
                        message["task_id"],
                    )
                elif message["type"] == m.RESULT and started is not None:
                    gateway.metrics.task_duration.observe(max(0.0, now - started))
            self.send(m.ack([message["message_id"] for message in batch]))


def seen_key(agent_id: str, message_id: str) -> str:
    """The in-memory duplicate window's key: message ids are only unique per agent."""
    return f"{agent_id} {message_id}"
