"""Command mode says what it can run: `GET /api/agents` and arpc's start-up lines.

Both read one `AgentCatalog` per session manager (its binaries: ``--command-path``,
``--codex-path``, ``--gemini-path``), so the versions asked at start are not asked again until a
binary changes.
"""

from __future__ import annotations

import weakref
from typing import Any

from arp.agents.availability import AgentCatalog, AgentInfo
from arp.agents.sessions import SessionManager
from arp.config import Timeouts

_CATALOGS: weakref.WeakKeyDictionary[SessionManager, AgentCatalog] = weakref.WeakKeyDictionary()


def catalog(manager: SessionManager) -> AgentCatalog:
    found = _CATALOGS.get(manager)
    if found is None:
        found = AgentCatalog(manager.config.binaries, Timeouts().version_probe)
        _CATALOGS[manager] = found
    return found


async def agents_json(manager: SessionManager) -> list[dict[str, Any]]:
    """`GET /api/agents`'s list: the table's order, each with found, path, version, install."""
    return [info.to_json() for info in await catalog(manager).describe()]


async def startup_lines(manager: SessionManager) -> list[str]:
    """What arpc prints at start: each CLI's path and version, or how to install it."""
    infos: list[AgentInfo] = await catalog(manager).describe()
    lines = [info.line() for info in infos]
    if not any(info.found for info in infos):
        lines.append("⚠️  no agent CLI found: command mode can browse nothing and run nothing yet")
    return lines
