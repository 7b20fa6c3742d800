"""`CommandServer`: command mode's HTTP API on a loopback port.

arpc's forward mode splices each tunnel connection to this port, so the API is reachable only
with the client's token through the relay, and locally only on 127.0.0.1::

    async with CommandServer(config) as server:
        server.port      # the bound port (config.command_port, or a free one when 0)

Closing: stop accepting, stop every running session (it becomes ``interrupted``, as after a
restart) so the open event streams send their end and close, then cancel what is left within
``shutdown_timeout``. A manager passed in (not owned) keeps running; streams over it are cut.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionManager
from arp.command.app import create_app
from arp.command.config import CommandConfig
from arp.command.web import STREAMS_KEY, CommandContext
from arp.lifecycle import Service

LOOPBACK = "127.0.0.1"


class CommandServer(Service):
    """Serves `create_app` on ``host:port``; owns the session manager unless one is given.

    ``history`` reads the agents' own stored sessions (default: the usual folders in ``~``).
    `context` is what every face shares (HTTP API, MCP, remote protocol): the config, the
    session manager and the one `HistoryReaders`.
    """

    def __init__(
        self,
        config: CommandConfig,
        *,
        manager: SessionManager | None = None,
        history: HistoryReaders | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.history = history
        self.host = host
        self._requested_port = config.command_port if port is None else port
        self._owns_manager = manager is None
        self.manager = manager if manager is not None else SessionManager(config.session_config())
        self.context = CommandContext(
            config, self.manager, history if history is not None else HistoryReaders()
        )
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the command server is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._owns_manager:
            await self.manager.start()
        self.app = create_app(self.context)
        runner = web.AppRunner(
            self.app,
            shutdown_timeout=self.config.shutdown_timeout,
            handle_signals=False,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            if self._owns_manager:
                await self.manager.close()
            raise
        self._runner = runner
        for server in runner.addresses:
            self._port = int(server[1])
            break

    async def _shutdown(self) -> None:
        """Runs once, on the first `close()`; see the module docstring for the order."""
        runner = self._runner
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()
        if self._owns_manager:
            # Its runs end as `interrupted`, so every open stream sends its end and closes.
            await self.manager.close()
        if self.app is not None:
            streams = self.app[STREAMS_KEY]
            if streams:
                await asyncio.wait(tuple(streams), timeout=self.config.shutdown_timeout / 2)
            for task in tuple(streams):
                task.cancel()
        if runner is not None:
            await runner.cleanup()
