"""Everything the gateway keeps in Redis: the agent registry, task outboxes, and the streams.

Keys (all under `redis.prefix`):

    agents                  SET   of registered agent ids
    agent:<id>              HASH  name, labels (JSON), token_hash, registered_at, status,
                                  last_heartbeat
    outbox:<id>             HASH  message_id → JSON of a task/task_cancel not yet acked by the agent
    tasks:<id>              HASH  task_id → unix time it was handed over (the agent's running
                                  tasks: only these may send log/status/result; removed by the
                                  task's result)
    marks:<id>:<task_id>    HASH, with a TTL: `log` → the highest log seq written, and one field
                                  per status message id written; the task's result replaces
                                  them all with `done`
    agent_logs, agent_results, agent_status   STREAMs, trimmed with MAXLEN ~

With several gateway nodes (`arps --cluster --with-gateway`), also:

    agent:<id> field `node`  the node holding the agent's WebSocket ("" when none)
    node:<node_id>:deliver   STREAM of {agent, message_id}: tasks and cancels posted to another
                             node for an agent this node holds (`Gateway` reads it; the message
                             itself is the one in the agent's outbox)
    request:<request_id>     STRING with a TTL: an HMAC-signed request id already used, on any
                             node (the replay window, cluster-wide)

A stream write and its marks are one Lua script, so a message is in its stream exactly once however
often an agent resends it; the marks are one small hash per running task, not one key per message.
Every command has a deadline; a failure raises `RedisUnavailable` (503) and flips the `redis_up`
gauge, and the next success flips it back.
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


# One call writes a whole batch: ARGV[5] is a JSON array of [stream index, task id, mark,
# seq, final, field, value, ...]; one argument keeps redis-py's per-argument packing off the hot
# path. Keys are built in the script, so the gateway needs one Redis (not Redis Cluster).
#
# Per entry, in this order (a mid-script error, e.g. OOM, must never leave a mark without its entry,
# or the resend would be taken for a duplicate and lost):
#   1. check: a task id not in tasks:<agent> → '0' if its result was written, else 'x' (never
#      handed to this agent); a log whose seq is not above the task's high-water mark, or a
#      status already marked → '0';
#   2. XADD;
#   3. mark: the log high-water mark or the status id in marks:<agent>:<task> (expiring), or, for a
#      result, forget the task and its marks but `done`: later resends are duplicates by step 1.
# An empty task id is the gateway's own agent-level status: written, never checked or marked.
# The answer per entry: '1' written, '0' duplicate, 'x' refused; a written result adds when its
# task was handed over ('1<unix time>').
_WRITE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local maxlen = ARGV[2]
local tasks = ARGV[3]
local marks = ARGV[4]
local batch = cjson.decode(ARGV[5])
local out = {}
for i, e in ipairs(batch) do
  local task, mark, seq, final = e[2], e[3], tonumber(e[4]), e[5]
  local key = marks .. task
  local verdict = '1'
  if task ~= '' then
    if redis.call('HEXISTS', tasks, task) == 0 then
      if redis.call('HEXISTS', key, 'done') == 1 then verdict = '0' else verdict = 'x' end
    elseif seq >= 0 then
      local hwm = redis.call('HGET', key, 'log')
      if hwm and seq <= tonumber(hwm) then verdict = '0' end
    elseif redis.call('HEXISTS', key, mark) == 1 then
      verdict = '0'
    end
  end
  if verdict == '1' then
    local args = {KEYS[e[1]], 'MAXLEN', '~', maxlen, '*'}
    for j = 6, #e do args[#args + 1] = e[j] end
    redis.call('XADD', unpack(args))
    if task ~= '' then
      if final == 1 then
        local started = redis.call('HGET', tasks, task)
        redis.call('HDEL', tasks, task)
        redis.call('DEL', key)
        redis.call('HSET', key, 'done', '1')
        redis.call('EXPIRE', key, ttl)
        verdict = '1' .. (started or '')
      else
        if seq >= 0 then
          redis.call('HSET', key, 'log', seq)
        else
          redis.call('HSET', key, mark, '1')
        end
        redis.call('EXPIRE', key, ttl)
      end
    end
  end
  out[i] = verdict
end
return out
"""

# KEYS[1] agent hash; ARGV: the node it left, now. Offline only if no other node took it.
_OFFLINE_SCRIPT = """
local node = redis.call('HGET', KEYS[1], 'node')
if node and node ~= '' and node ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'offline', 'last_heartbeat', ARGV[2], 'node', '')
return 1
"""

NEW = "new"
DUPLICATE = "duplicate"
REFUSED = "refused"
QUEUED = "queued"
FULL = "full"
FINISHED = "finished"


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
        self._offline_script: Any = None
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
        self._offline_script = self._redis.register_script(_OFFLINE_SCRIPT)

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

    async def call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """One Redis operation under the store's deadline and health tracking."""
        return await self._call(what, operation)

    async def ping(self) -> bool:
        try:
            await self._call("ping", self.redis.ping)
        except RedisUnavailable:
            return False
        return True

    # -- streams -------------------------------------------------------------------------------

    async def write_messages(
        self, agent_id: str, batch: Sequence[dict[str, Any]], now: float
    ) -> list[tuple[str, float | None]]:
        """Append each log/status/result to its stream once: (NEW, when its task was handed over
        if it was a result), (DUPLICATE, None) or (REFUSED, None) for a task not this agent's."""
        if not batch:
            return []
        entries: list[list[str | int]] = []
        for message in batch:
            kind = message["type"]
            seq = int(message["seq"]) if kind == m.LOG else -1
            entry: list[str | int] = [
                self._stream_index[kind],
                str(message["task_id"]),
                str(message["message_id"]),
                seq,
                1 if kind == m.RESULT else 0,
            ]
            for name, value in m.stream_fields(agent_id, message, now).items():
                entry += (name, value)
            entries.append(entry)
        args = [
            int(self.config.dedup_ttl),
            self.config.stream_maxlen,
            self.key("tasks", agent_id),
            self.key("marks", agent_id, ""),
            json.dumps(entries, separators=(",", ":"), ensure_ascii=False),
        ]
        keys = self._stream_keys
        started = time.perf_counter()
        flags = await self._call("stream write", lambda: self._script(keys=keys, args=args))
        self.metrics.redis_write.observe(time.perf_counter() - started)
        verdicts: list[tuple[str, float | None]] = []
        for flag in flags:
            text = str(flag)
            if text.startswith("1"):
                verdicts.append((NEW, float(text[1:]) if len(text) > 1 else None))
            else:
                verdicts.append((DUPLICATE if text == "0" else REFUSED, None))
        return verdicts

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

    async def token_hashes(self, agent_ids: Sequence[str]) -> dict[str, str]:
        """The stored token hash of each agent ("" if it is no longer registered)."""
        if not agent_ids:
            return {}

        async def run() -> list[str | None]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for agent_id in agent_ids:
                    pipe.hget(self.key("agent", agent_id), "token_hash")
                replies: list[str | None] = await pipe.execute()
            return replies

        replies = await self._call("token hashes", run)
        return {agent_id: value or "" for agent_id, value in zip(agent_ids, replies, strict=True)}

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
    ) -> str:
        """Keep `message` until the agent acks it: QUEUED; FULL if the agent already has `limit`;
        FINISHED for a task whose result this agent already reported (ids are not reused: its
        output would be taken for duplicates)."""
        outbox = self.key("outbox", agent_id)
        marks = self.key("marks", agent_id, str(message["task_id"]))

        async def run() -> str:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hlen(outbox)
                pipe.hexists(marks, "done")
                waiting, finished = await pipe.execute()
            if waiting >= limit:
                return FULL
            if finished and message["type"] == m.TASK:
                return FINISHED
            stored = dict(message, queued_at=now)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(outbox, message["message_id"], m.encode(stored))
                if message["type"] == m.TASK:
                    pipe.hsetnx(self.key("tasks", agent_id), message["task_id"], f"{now:.6f}")
                await pipe.execute()
            return QUEUED

        return await self._call("queue task", run)

    async def outbound(self, agent_id: str) -> list[dict[str, Any]]:
        """Messages waiting for this agent's ack, oldest first."""
        raw = await self._call("outbox", lambda: self.redis.hvals(self.key("outbox", agent_id)))
        stored = [json.loads(value) for value in raw]
        stored.sort(key=lambda message: message.get("queued_at", 0.0))
        for message in stored:
            message.pop("queued_at", None)
        return stored

    # -- several gateway nodes -----------------------------------------------------------------

    async def mark_connected(self, agent_id: str, node: str, now: float) -> None:
        """The agent's WebSocket is on `node` now."""
        await self._call(
            "presence",
            lambda: self.redis.hset(
                self.key("agent", agent_id),
                mapping={"status": "online", "last_heartbeat": f"{now:.3f}", "node": node},
            ),
        )

    async def mark_disconnected(self, agent_id: str, node: str, now: float) -> bool:
        """The agent left `node`: offline, unless it is connected to another node by now
        (its new node wrote itself first); True when it was marked offline."""
        marked = await self._call(
            "presence",
            lambda: self._offline_script(
                keys=[self.key("agent", agent_id)], args=[node, f"{now:.3f}"]
            ),
        )
        return bool(marked)

    async def agent_node(self, agent_id: str) -> str | None:
        node = await self._call(
            "agent node", lambda: self.redis.hget(self.key("agent", agent_id), "node")
        )
        return str(node) if node else None

    def deliver_stream(self, node: str) -> str:
        return self.key("node", node, "deliver")

    async def hand_to_node(self, node: str, agent_id: str, message_id: str, maxlen: int) -> None:
        """Ask `node`, which holds the agent's WebSocket, to send it this outbox message."""
        await self._call(
            "hand over",
            lambda: self.redis.xadd(
                self.deliver_stream(node),
                {"agent": agent_id, "message_id": message_id},
                maxlen=maxlen,
                approximate=True,
            ),
        )

    async def outbound_message(self, agent_id: str, message_id: str) -> dict[str, Any] | None:
        """One message of the agent's outbox, None once acked."""
        raw = await self._call(
            "outbox", lambda: self.redis.hget(self.key("outbox", agent_id), message_id)
        )
        if raw is None:
            return None
        message: dict[str, Any] = json.loads(raw)
        message.pop("queued_at", None)
        return message

    async def first_use_of(self, request_id: str, ttl: float) -> bool:
        """Remember a signed request id for `ttl` seconds, cluster-wide; False if it was used."""
        created = await self._call(
            "request id",
            lambda: self.redis.set(
                self.key("request", request_id), "1", nx=True, px=max(1, int(ttl * 1000))
            ),
        )
        return bool(created)

    async def acked_outbound(self, agent_id: str, ids: Sequence[str]) -> None:
        await self._call("ack", lambda: self.redis.hdel(self.key("outbox", agent_id), *ids))
