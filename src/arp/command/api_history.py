"""Command mode's HTTP face over `HistoryReaders`: browse and delete the agents' own sessions.

Routes, each also served without the `/api` prefix (the original documents use both):

    GET    /api/claude/projects
    GET    /api/claude/projects/working-directories
    GET    /api/claude/projects/{project_id}/sessions?limit=&offset=
    GET    /api/{agent}/sessions?limit=&offset=&projectPath=
    GET    /api/{agent}/sessions/{session_id}?limit=&offset=
    DELETE /api/{agent}/sessions/{session_id}

for agent in claude, codex, gemini (projects and working directories too, for every agent).
The readers block on file I/O, so each request runs them in a worker thread, at most
`HistoryLimits.max_concurrency` at once (beyond that, requests wait their turn). Errors answer
`{"error": message}` with the status the `ArpError` carries. A `token` query parameter (the
relay's routing) is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from arp.agents.history import AGENTS, HistoryReaders, HistoryRequestError
from arp.errors import ArpError

_T = TypeVar("_T")

READERS_KEY = web.AppKey("history_readers", HistoryReaders)
_GATE_KEY = web.AppKey("history_gate", asyncio.Semaphore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_history_routes(app: web.Application, readers: HistoryReaders) -> None:
    """Add every history route to `app`, served by `readers`."""
    app[READERS_KEY] = readers
    app[_GATE_KEY] = asyncio.Semaphore(readers.limits.max_concurrency)
    for prefix in ("/api", ""):
        for agent in AGENTS:
            base = f"{prefix}/{agent}"
            app.router.add_get(f"{base}/projects", _projects(agent))
            app.router.add_get(f"{base}/projects/working-directories", _directories(agent))
            app.router.add_get(f"{base}/projects/{{project_id}}/sessions", _project_sessions(agent))
            app.router.add_get(f"{base}/sessions", _sessions(agent))
            app.router.add_get(f"{base}/sessions/{{session_id}}", _messages(agent))
            app.router.add_delete(f"{base}/sessions/{{session_id}}", _delete(agent))


async def _run(request: web.Request, call: Callable[[], _T]) -> _T:
    """`call` in a worker thread, within the app's bound on concurrent history work."""
    async with request.app[_GATE_KEY]:
        return await asyncio.to_thread(call)


def _reply(handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
    """Wrap a handler returning JSON-able data: ArpErrors become their status and a message."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            body = await handler(request)
        except ArpError as error:
            return web.json_response({"error": error.message}, status=error.status)
        return web.json_response(body)

    return wrapped


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HistoryRequestError(f"{name} must be a whole number, got {raw!r}") from None


def _readers(request: web.Request) -> HistoryReaders:
    return request.app[READERS_KEY]


def _projects(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        projects = await _run(request, lambda: readers.projects(agent))
        return {"agent": agent, "projects": [project.to_json() for project in projects]}

    return _reply(handler)


def _directories(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        directories = await _run(request, lambda: readers.working_directories(agent))
        return {"agent": agent, "workingDirectories": directories}

    return _reply(handler)


def _project_sessions(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        project_id = request.match_info["project_id"]
        limit = _int(request, "limit", None)
        offset = _int(request, "offset", 0) or 0
        page = await _run(
            request,
            lambda: readers.sessions(agent, project_id=project_id, limit=limit, offset=offset),
        )
        return dict(page.to_json(), agent=agent, projectId=project_id)

    return _reply(handler)


def _sessions(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        limit = _int(request, "limit", None)
        offset = _int(request, "offset", 0) or 0
        path = request.query.get("projectPath") or request.query.get("project_path") or None
        page = await _run(
            request,
            lambda: readers.sessions(agent, project_path=path, limit=limit, offset=offset),
        )
        return dict(page.to_json(), agent=agent)

    return _reply(handler)


def _messages(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        session_id = request.match_info["session_id"]
        limit = _int(request, "limit", None)
        offset = _int(request, "offset", 0) or 0
        page = await _run(
            request, lambda: readers.messages(agent, session_id, offset=offset, limit=limit)
        )
        return page.to_json()

    return _reply(handler)


def _delete(agent: str) -> Handler:
    async def handler(request: web.Request) -> Any:
        readers = _readers(request)
        session_id = request.match_info["session_id"]
        deleted = await _run(request, lambda: readers.delete_session(agent, session_id))
        return deleted.to_json()

    return _reply(handler)
