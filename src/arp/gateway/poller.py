"""Optional polling of the control plane for pending tasks (when `control_plane.url` is set).

Contract (docs/gateway.md): every `task_poll_interval` the gateway sends

    GET {control_plane.url}/api/agent-server/tasks/pending/?scope=<control_plane.scope>
    Authorization: Bearer <control_plane.token>         (when a token is set)
    X-ARP-Timestamp / X-ARP-Request-Id / X-ARP-Signature (when auth.shared_secret is set)

and expects 200 with `{"tasks": [{"agent_id": "...", "task_id": "...", "executor": "...",
"prompt": "...", "project_path": "...", "model": "...", "options": {}}]}` (at most
`bounds.max_tasks_per_poll`). Tasks for agents connected to this node are handed over exactly like a
POST; the others are skipped and expected again in a later poll. A task id handed over once is
not handed over again by polling (the control plane stops listing it once it sees its status).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import aiohttp
from yarl import URL

from arp.errors import ArpError
from arp.gateway import auth
from arp.gateway import messages as m
from arp.gateway.config import GatewayConfig

log = logging.getLogger(__name__)

POLL_PATH = "/api/agent-server/tasks/pending/"


class TaskPoller:
    def __init__(
        self,
        config: GatewayConfig,
        dispatch: Callable[[str, m.TaskSpec], Awaitable[bool]],
        connected: Callable[[], Iterable[str]],
    ) -> None:
        self.config = config
        self.dispatch = dispatch
        self.connected = connected
        self.handed_over = m.DedupWindow(65536)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        interval = self.config.control_plane.task_poll_interval
        while True:
            try:
                await self.poll_once()
            except (aiohttp.ClientError, TimeoutError, ArpError, ValueError) as exc:
                log.warning("polling %s failed: %s", self.config.control_plane.url, exc)
            except Exception:  # polling must outlive any one response, however malformed
                log.exception("polling %s failed", self.config.control_plane.url)
            await asyncio.sleep(interval)

    async def poll_once(self) -> int:
        """One poll; returns how many tasks were handed over."""
        plane = self.config.control_plane
        bounds = self.config.bounds
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=plane.timeout)
            )
        url = URL(plane.url.rstrip("/") + POLL_PATH).with_query({"scope": plane.scope})
        headers: dict[str, str] = {}
        if plane.token:
            headers["Authorization"] = f"Bearer {plane.token}"
        if self.config.auth.shared_secret:
            # Signed over the path and query exactly as they go on the request line.
            headers.update(
                auth.signed_headers(
                    self.config.auth.shared_secret, "GET", url.raw_path_qs, b"", time.time()
                )
            )
        async with self._session.get(url, headers=headers) as response:
            if response.status != 200:
                raise ArpError(f"the control plane answered {response.status}")
            body = await response.content.read(bounds.max_poll_response + 1)
        if len(body) > bounds.max_poll_response:
            raise ArpError(f"the poll response is larger than {bounds.max_poll_response} bytes")
        data = json.loads(body)
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, list):
            raise ArpError('the poll response must be {"tasks": [...]}')
        here = set(self.connected())
        handed = 0
        for item in tasks[: bounds.max_tasks_per_poll]:
            agent_id = item.get("agent_id") if isinstance(item, dict) else None
            if not isinstance(agent_id, str):
                log.warning("polled task skipped: each task needs a string agent_id")
                continue
            if agent_id not in here:
                continue
            try:
                spec = m.TaskSpec.from_json(item)
            except ArpError as exc:
                log.warning("polled task skipped: %s", exc.message)
                continue
            key = f"{agent_id}/{spec.task_id}"
            if key in self.handed_over:
                continue
            if await self.dispatch(agent_id, spec):
                self.handed_over.add(key)
                handed += 1
        return handed
