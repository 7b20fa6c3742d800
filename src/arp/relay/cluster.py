"""The cluster registry: what this relay node holds, recorded in the Redis every node shares.

Only `arps --cluster` imports this module (and with it redis); a single relay keeps nothing in
Redis. The rules (who may claim a client, a TCP port; what a renewal does) are written, and
tested, in `arp.relay.lease`; here they run as Lua scripts so each claim is atomic across nodes,
and every Redis call has the deadline `ClusterBounds.redis`.

Keys, under `ClusterSettings.prefix` (default ``arp:cluster:``; docs/cluster.md):

    node:<node_id>      HASH    peer (HOST:PORT other nodes dial), started (unix s); lease
    nodes               ZSET    node ids, scored by their last renewal (unix s)
    client:<client_id>  STRING  JSON {"node": …, "rk": sha256(resume key)}; lease
    tcp:<port>          STRING  the client_id granted the port; lease
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from arp.errors import Unavailable
from arp.relay.lease import (
    Claimed,
    ClaimOutcome,
    Holder,
    Keys,
    LeaseClock,
    lease_ms,
    read_claim_reply,
    resume_hash,
)
from arp.relay.settings import ClusterSettings

log = logging.getLogger(__name__)

# KEYS[1] client key, KEYS[2..] tcp:<port> keys.
# ARGV: node, lease ms, presented resume hash, the record to write, client_id, tcp key prefix.
# Rule 1 then rule 2 of arp.relay.lease; nothing is written unless both pass.
_CLAIM = """
local node, ttl, presented, record, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local moved = ''
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and rec.node and rec.node ~= node then
    if presented == '' or rec.rk ~= presented then
      return {'held', rec.node}
    end
    moved = rec.node
  end
end
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= cid then
    return {'port', string.sub(KEYS[i], string.len(ARGV[6]) + 1), holder}
  end
end
redis.call('SET', KEYS[1], record, 'PX', ttl)
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], cid, 'PX', ttl)
end
return {'ok', moved}
"""

# KEYS: client keys then tcp keys; ARGV: lease ms, count of client keys, then per client key
# the record this node wrote, then per tcp key its client_id. A record still ours is renewed,
# one that expired (Redis was away) is written again, any other is lost.
# Answers the indexes (1-based) of the lost client keys.
_RENEW = """
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local lost = {}
for i = 1, #KEYS do
  local mine = ARGV[2 + i]
  local raw = redis.call('GET', KEYS[i])
  if not raw then
    redis.call('SET', KEYS[i], mine, 'PX', ttl)
  elseif raw == mine then
    redis.call('PEXPIRE', KEYS[i], ttl)
  elseif i <= n then
    table.insert(lost, i)
  end
end
return lost
"""

# KEYS[1] client key, KEYS[2..] tcp keys; ARGV: the record this node wrote, client_id.
# Deletes only what is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  for i = 2, #KEYS do
    if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
  end
  return 1
end
return 0
"""


class ClusterUnavailable(Unavailable):
    """Redis did not answer the cluster registry in time (503; a registration is retryable)."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    peer: str
    """HOST:PORT of its peer port."""
    alive: bool
    last_seen: float


@dataclass(frozen=True, slots=True)
class Held:
    """One claim this node made: the exact record it wrote, and the TCP ports with it."""

    record: str
    ports: tuple[int, ...]


class Cluster:
    """This node's side of the shared registry: claim, release, renew, locate."""

    def __init__(self, settings: ClusterSettings, *, on_lost: Callable[[str], None]) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.keys = Keys(settings.prefix)
        self.bounds = settings.bounds
        self._on_lost = on_lost
        self.on_renewed: list[Callable[[], Awaitable[None]]] = []
        """Run after each renewal (the node's view of the TCP ports granted elsewhere)."""
        self._redis: aioredis.Redis = aioredis.from_url(
            settings.redis_url,
            socket_timeout=self.bounds.redis,
            socket_connect_timeout=self.bounds.redis,
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._held: dict[str, Held] = {}
        self.clock = LeaseClock(self.bounds.lease, self.bounds.renew_every)
        self.peer_addr = ""
        self._task: asyncio.Task[None] | None = None
        self._located: dict[str, tuple[float, str | None]] = {}
        self.up = False
        """Whether the last Redis call succeeded (the admin port shows it)."""
        self.view: list[NodeInfo] = []
        """The cluster's nodes as last read (each renewal), for the admin port."""
        self.forwarded = 0
        """Connections this node received and handed to the node holding their client."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, peer_addr: str) -> None:
        """Announce this node (raising `ClusterUnavailable` when Redis does not answer) and
        start renewing its leases."""
        self.peer_addr = peer_addr
        await self._call(self._announce())
        self.clock.renewed(time.monotonic())
        self.view = await self.nodes()
        self._task = asyncio.get_running_loop().create_task(self._renew_loop())

    async def close(self) -> None:
        """Stop renewing and give back everything this node holds (a graceful stop)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2 * self.bounds.redis)
        with contextlib.suppress(ClusterUnavailable):
            for client_id in list(self._held):
                await self.release(client_id)
            await self._call(self._redis.delete(self.keys.node(self.node_id)))
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.bounds.redis):
                await self._redis.aclose()

    async def _announce(self) -> None:
        ms = lease_ms(self.bounds.lease)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.node(self.node_id),
                mapping={"peer": self.peer_addr, "started": str(time.time())},
            )
            pipe.pexpire(self.keys.node(self.node_id), ms)
            pipe.zadd(self.keys.nodes, {self.node_id: time.time()})
            # Nodes gone for an hour leave the list the dashboard shows.
            pipe.zremrangebyscore(self.keys.nodes, "-inf", time.time() - 3600)
            await pipe.execute()

    async def _call(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self.bounds.redis):
                result = await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that came with the failure (the deadline or redis-py turned it into
                # an error) must still end the task, or closing would wait for it for ever.
                raise asyncio.CancelledError from exc
            self.up = False
            raise ClusterUnavailable(f"the cluster's Redis did not answer: {exc}") from None
        self.up = True
        return result

    # -- claims -------------------------------------------------------------------------------

    async def claim(
        self,
        client_id: str,
        *,
        presented_resume: str | None,
        resume_key: str,
        tcp_ports: Iterable[int] = (),
    ) -> ClaimOutcome:
        """Claim `client_id` (and its TCP ports) for this node; raises `ClusterUnavailable`."""
        ports = tuple(sorted(set(tcp_ports)))
        keys = [self.keys.client(client_id), *(self.keys.tcp_port(p) for p in ports)]
        record = Holder(self.node_id, resume_hash(resume_key), secrets.token_hex(8)).encode()
        args: list[str | int] = [
            self.node_id,
            lease_ms(self.bounds.lease),
            resume_hash(presented_resume),
            record,
            client_id,
            self.keys.tcp_port(0)[:-1],
        ]
        reply = await self._call(self._claim(keys=keys, args=args))
        outcome = read_claim_reply(list(reply))
        if isinstance(outcome, Claimed):
            self._held[client_id] = Held(record=record, ports=ports)
            self._located.pop(client_id, None)
        return outcome

    def claim_of(self, client_id: str) -> Held | None:
        """The claim this node holds on `client_id` now (for a later `release`)."""
        return self._held.get(client_id)

    async def release(self, client_id: str, held: Held | None = None) -> None:
        """Give back the claim `held` (default: the current one) on `client_id`, its control
        link having ended; nothing when the record in Redis is no longer that claim."""
        held = held or self._held.get(client_id)
        if held is None:
            return
        keys = [self.keys.client(client_id), *(self.keys.tcp_port(p) for p in held.ports)]
        await self._call(self._release(keys=keys, args=[held.record, client_id]))
        # Forgotten once Redis has it: a release cut short is done again by `close`.
        if self._held.get(client_id) is held:
            del self._held[client_id]

    def forget(self, client_id: str) -> None:
        """Stop renewing `client_id` without touching Redis (another node holds it now)."""
        self._held.pop(client_id, None)

    @property
    def held(self) -> list[str]:
        return sorted(self._held)

    # -- renewal ------------------------------------------------------------------------------

    async def renew(self) -> list[str]:
        """Renew every lease of this node once; answers the client_ids it lost (and forgets
        them)."""
        held = dict(self._held)
        client_ids = list(held)
        keys = [self.keys.client(c) for c in client_ids]
        args: list[str | int] = [lease_ms(self.bounds.lease), len(client_ids)]
        args += [held[c].record for c in client_ids]
        for c in client_ids:
            for port in held[c].ports:
                keys.append(self.keys.tcp_port(port))
                args.append(c)
        await self._call(self._announce())
        lost_indexes = await self._call(self._renew(keys=keys, args=args)) if keys else []
        self.clock.renewed(time.monotonic())
        lost = [client_ids[int(i) - 1] for i in lost_indexes]
        for client_id in lost:
            if self._held.get(client_id) is held[client_id]:
                del self._held[client_id]
        return lost

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.bounds.renew_every)
            try:
                lost = await self.renew()
            except ClusterUnavailable as exc:
                if self.clock.stale(time.monotonic()):
                    log.warning(
                        "cluster leases not renewed for over %.0f s: %s",
                        self.bounds.lease,
                        exc.message,
                    )
                continue
            for client_id in lost:
                log.info("client %s moved to another node; letting it go here", client_id)
                self._on_lost(client_id)
            with contextlib.suppress(ClusterUnavailable):
                self.view = await self.nodes()
            for hook in list(self.on_renewed):
                await hook()

    # -- look-ups -----------------------------------------------------------------------------

    async def locate(self, client_id: str) -> str | None:
        """The node id holding `client_id` (None: nobody), cached `ClusterBounds.locate_cache`."""
        now = time.monotonic()
        cached = self._located.get(client_id)
        if cached is not None and now - cached[0] < self.bounds.locate_cache:
            return cached[1]
        raw = await self._call(self._redis.get(self.keys.client(client_id)))
        holder = Holder.decode(raw)
        node = holder.node if holder is not None else None
        if len(self._located) >= self.bounds.locate_cache_size:
            self._located.clear()
        self._located[client_id] = (now, node)
        return node

    def invalidate(self, client_id: str) -> None:
        self._located.pop(client_id, None)

    async def peer_of(self, node_id: str) -> str | None:
        """The HOST:PORT of `node_id`'s peer port, None when its lease ran out."""
        raw = await self._call(self._redis.hget(self.keys.node(node_id), "peer"))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def all_clients(self) -> dict[str, str]:
        """Every client claimed in the cluster and the node holding it."""
        found: dict[str, str] = {}
        prefix = self.keys.client("")

        async def scan() -> None:
            batch: list[str] = []

            async def flush() -> None:
                values = await self._redis.mget(batch)
                for name, raw in zip(batch, values, strict=True):
                    holder = Holder.decode(raw)
                    if holder is not None:
                        found[name[len(prefix) :]] = holder.node
                batch.clear()

            async for key in self._redis.scan_iter(match=self.keys.client_pattern, count=1000):
                batch.append(key.decode() if isinstance(key, bytes) else str(key))
                if len(batch) >= 1000:
                    await flush()
            if batch:
                await flush()

        await self._call(scan())
        return found

    async def tcp_grants(self) -> dict[int, str]:
        """Every dedicated TCP port granted in the cluster and its client_id."""
        found: dict[int, str] = {}
        prefix = self.keys.tcp_port(0)[:-1]

        async def scan() -> None:
            async for key in self._redis.scan_iter(match=prefix + "*", count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                value = await self._redis.get(name)
                if value is not None:
                    with contextlib.suppress(ValueError):
                        found[int(name[len(prefix) :])] = (
                            value.decode() if isinstance(value, bytes) else str(value)
                        )

        await self._call(scan())
        return found

    async def nodes(self) -> list[NodeInfo]:
        """Every node seen (alive: its lease lives), this one included."""

        async def read() -> list[NodeInfo]:
            seen: list[Any] = await self._redis.zrange(self.keys.nodes, 0, -1, withscores=True)
            out = []
            for raw_id, score in seen:
                node_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                peer = await self._redis.hget(self.keys.node(node_id), "peer")
                out.append(
                    NodeInfo(
                        node_id=node_id,
                        peer=(peer.decode() if isinstance(peer, bytes) else str(peer or "")),
                        alive=peer is not None,
                        last_seen=float(score),
                    )
                )
            return out

        result: list[NodeInfo] = await self._call(read())
        return result
