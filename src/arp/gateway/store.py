"""Everything the gateway keeps in Redis: the agent registry, task outboxes, and the streams.

Keys (all under `redis.prefix`):

    agents                  SET   of registered agent ids
    agent:<id>              HASH  name, labels (JSON), token_hash, registered_at, status,
                                  last_heartbeat
    outbox:<id>             HASH  message_id → JSON of a task/task_cancel not yet acked by the agent
    tasks:<id>              HASH  task_id → unix time it was handed over (the agent's running tasks)
    seen:<message_id>       STRING, with a TTL: this agent message is already in its stream
    agent_logs, agent_results, agent_status   STREAMs, trimmed with MAXLEN ~

A stream write and its `seen:` marker are one Lua script, so a message is in its stream exactly
once however often an agent resends it. Every command has a deadline; a failure raises
`RedisUnavailable` (503) and flips the `redis_up` gauge, and the next success flips it back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from arp.errors import ArpError
from arp.gateway import messages as m
from arp.gateway.config import RedisConfig
from arp.gateway.metrics import GatewayMetrics

T = TypeVar("T")


# One call writes a whole batch: ARGV[4] is a JSON array of [stream index, message id, field,
# value, ...]; one argument keeps redis-py's per-argument packing off the hot path. The `seen:`
# keys are built in the script, so the gateway needs one Redis (not Redis Cluster).
_WRITE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local maxlen = ARGV[2]
local seen = ARGV[3]
local batch = cjson.decode(ARGV[4])
local out = {}
for i, entry in ipairs(batch) do
  if redis.call('SET', seen .. entry[2], '1', 'NX', 'EX', ttl) then
    local args = {KEYS[entry[1]], 'MAXLEN', '~', maxlen, '*'}
    for j = 3, #entry do args[#args + 1] = entry[j] end
    redis.call('XADD', unpack(args))
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
"""


class RedisUnavailable(ArpError):
    """Redis did not answer in time or refused; the caller keeps its data and retries later."""

    status = 503


class Store:
    """The gateway's Redis client: one connection pool, deadlines, health tracking."""

    def __init__(
        self, config: RedisConfig, metrics: GatewayMetrics, *, max_connections: int = 32
    ) -> None:
        self.config = config
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self.metrics = metrics
        # redis-py's annotations mix sync and async return types; the boundary is typed here.
        self._redis: Any = None
        self._script: Any = None
        p = config.prefix
        self.streams = {
            m.LOG: p + config.logs_stream,
            m.STATUS: p + config.status_stream,
            m.RESULT: p + config.results_stream,
        }
        self._stream_keys = list(self.streams.values())
        self._stream_index = {kind: i + 1 for i, kind in enumerate(self.streams)}

    def key(self, *parts: str) -> str:
        return self.config.prefix + ":".join(parts)

    async def start(self) -> None:
        if self._redis is not None:
            return
        # A plain pool, never asked for more connections than it has: `_slots` bounds the
        # commands in flight (a burst waits for a slot within the command's deadline).
        pool = aioredis.ConnectionPool.from_url(
            self.config.url,
            max_connections=self.max_connections,
            socket_timeout=self.config.timeout,
            socket_connect_timeout=self.config.timeout,
            retry=Retry(NoBackoff(), 1),  # once: a pooled connection may predate a restart
            decode_responses=True,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(_WRITE_SCRIPT)

    async def close(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose(close_connection_pool=True)

    @property
    def redis(self) -> Any:
        if self._redis is None:
            raise RedisUnavailable("the Redis client is not started")
        return self._redis

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.config.timeout), self._slots:
                value = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that came with the failure (redis-py or the deadline turned it into
                # an error) must still end the task: swallowing it leaves the task running on.
                raise asyncio.CancelledError from exc
            self.metrics.redis_up = False
            self.metrics.redis_errors += 1
            detail = str(exc) or type(exc).__name__
            raise RedisUnavailable(f"Redis is unavailable ({what}): {detail}") from exc
        self.metrics.redis_up = True
        return value

    async def ping(self) -> bool:
        try:
            await self._call("ping", self.redis.ping)
        except RedisUnavailable:
            return False
        return True

    # -- streams -------------------------------------------------------------------------------

    async def write_messages(
        self, agent_id: str, batch: Sequence[dict[str, Any]], now: float
    ) -> list[bool]:
        """Append each log/status/result to its stream once; True where it was new."""
        if not batch:
            return []
        entries: list[list[str | int]] = []
        for message in batch:
            entry: list[str | int] = [self._stream_index[message["type"]], message["message_id"]]
            for name, value in m.stream_fields(agent_id, message, now).items():
                entry += (name, value)
            entries.append(entry)
        args = [
            int(self.config.dedup_ttl),
            self.config.stream_maxlen,
            self.key("seen", ""),
            json.dumps(entries, separators=(",", ":"), ensure_ascii=False),
        ]
        keys = self._stream_keys
        started = time.perf_counter()
        flags = await self._call("stream write", lambda: self._script(keys=keys, args=args))
        self.metrics.redis_write.observe(time.perf_counter() - started)
        return [flag == "1" for flag in str(flags)]

    async def write_agent_status(self, agent_id: str, state: str, detail: str, now: float) -> None:
        """An agent-level status entry (`task_id` empty): online, offline."""
        message = {
            "type": m.STATUS,
            "message_id": f"agent:{agent_id}:{state}:{now:.6f}",
            "task_id": "",
            "state": state,
            "detail": detail,
        }
        await self.write_messages(agent_id, [message], now)

    # -- the agent registry --------------------------------------------------------------------

    async def register_agent(
        self, agent_id: str, name: str, labels: dict[str, str], token_hash: str, now: float
    ) -> None:
        async def run() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    self.key("agent", agent_id),
                    mapping={
                        "name": name,
                        "labels": json.dumps(labels),
                        "token_hash": token_hash,
                        "registered_at": f"{now:.3f}",
                    },
                )
                pipe.hsetnx(self.key("agent", agent_id), "status", "offline")
                pipe.sadd(self.key("agents"), agent_id)
                await pipe.execute()

        await self._call("register", run)

    async def get_agent(self, agent_id: str) -> dict[str, str] | None:
        data: dict[str, str] = await self._call(
            "get agent", lambda: self.redis.hgetall(self.key("agent", agent_id))
        )
        return data or None

    async def agent_count(self) -> int:
        return int(await self._call("count agents", lambda: self.redis.scard(self.key("agents"))))

    async def list_agents(self, limit: int) -> list[tuple[str, dict[str, str], list[str]]]:
        """(id, hash, running task ids) for up to `limit` registered agents, sorted by id."""

        async def run() -> list[tuple[str, dict[str, str], list[str]]]:
            ids = sorted(await self.redis.smembers(self.key("agents")))[:limit]
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent_id in ids:
                    pipe.hgetall(self.key("agent", agent_id))
                    pipe.hkeys(self.key("tasks", agent_id))
                replies = await pipe.execute()
            return [
                (agent_id, replies[2 * i], sorted(replies[2 * i + 1]))
                for i, agent_id in enumerate(ids)
            ]

        return await self._call("list agents", run)

    async def running_tasks(self, agent_id: str) -> list[str]:
        tasks = await self._call("tasks", lambda: self.redis.hkeys(self.key("tasks", agent_id)))
        return sorted(tasks)

    async def set_presence(self, agent_ids: Sequence[str], status: str, now: float) -> None:
        """Record status and last heartbeat for several agents in one round trip."""
        if not agent_ids:
            return

        async def run() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent_id in agent_ids:
                    pipe.hset(
                        self.key("agent", agent_id),
                        mapping={"status": status, "last_heartbeat": f"{now:.3f}"},
                    )
                await pipe.execute()

        await self._call("presence", run)

    async def set_heartbeats(self, beats: dict[str, float]) -> None:
        if not beats:
            return

        async def run() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent_id, at in beats.items():
                    pipe.hset(
                        self.key("agent", agent_id),
                        mapping={"status": "online", "last_heartbeat": f"{at:.3f}"},
                    )
                await pipe.execute()

        await self._call("heartbeats", run)

    # -- tasks handed to agents ----------------------------------------------------------------

    async def queue_outbound(
        self, agent_id: str, message: dict[str, Any], now: float, limit: int
    ) -> bool:
        """Keep `message` until the agent acks it; False if the agent already has `limit`."""
        outbox = self.key("outbox", agent_id)

        async def run() -> bool:
            if await self.redis.hlen(outbox) >= limit:
                return False
            stored = dict(message, queued_at=now)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(outbox, message["message_id"], m.encode(stored))
                if message["type"] == m.TASK:
                    pipe.hsetnx(self.key("tasks", agent_id), message["task_id"], f"{now:.6f}")
                await pipe.execute()
            return True

        return await self._call("queue task", run)

    async def outbound(self, agent_id: str) -> list[dict[str, Any]]:
        """Messages waiting for this agent's ack, oldest first."""
        raw = await self._call("outbox", lambda: self.redis.hvals(self.key("outbox", agent_id)))
        stored = [json.loads(value) for value in raw]
        stored.sort(key=lambda message: message.get("queued_at", 0.0))
        for message in stored:
            message.pop("queued_at", None)
        return stored

    async def acked_outbound(self, agent_id: str, ids: Sequence[str]) -> None:
        await self._call("ack", lambda: self.redis.hdel(self.key("outbox", agent_id), *ids))

    async def finish_tasks(self, agent_id: str, task_ids: Sequence[str]) -> list[float | None]:
        """Forget finished tasks; returns when each was handed over (None if unknown)."""
        tasks = self.key("tasks", agent_id)

        async def run() -> list[float | None]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hmget(tasks, list(task_ids))
                pipe.hdel(tasks, *task_ids)
                started, _ = await pipe.execute()
            return [float(value) if value is not None else None for value in started]

        return await self._call("finish tasks", run)
