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
in the package's one shape (`arp.errors.error_body`) with the status the `ArpError` carries.
A `token` query parameter (the relay's routing) is ignored. Where the app serves an OpenAPI document
(`arp.command.openapi`), these paths are added to it at startup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from arp.agents.history import AGENTS, KINDS, HistoryReaders, HistoryRequestError
from arp.command import openapi
from arp.command.web import arp_error_response, json_response
from arp.errors import ArpError

_T = TypeVar("_T")

READERS_KEY = web.AppKey("history_readers", HistoryReaders)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_history_routes(app: web.Application, readers: HistoryReaders) -> None:
    """Add every history route to `app`, served by `readers`."""
    app[READERS_KEY] = readers
    for prefix in ("/api", ""):
        for agent in AGENTS:
            base = f"{prefix}/{agent}"
            app.router.add_get(f"{base}/projects", _projects(agent))
            app.router.add_get(f"{base}/projects/working-directories", _directories(agent))
            app.router.add_get(f"{base}/projects/{{project_id}}/sessions", _project_sessions(agent))
            app.router.add_get(f"{base}/sessions", _sessions(agent))
            app.router.add_get(f"{base}/sessions/{{session_id}}", _messages(agent))
            app.router.add_delete(f"{base}/sessions/{{session_id}}", _delete(agent))
    app.on_startup.append(_document)


async def _document(app: web.Application) -> None:
    """Describe these routes in the app's OpenAPI document, when it has one."""
    if openapi.DOCUMENT_KEY in app:
        openapi.add_paths(app, _openapi_paths(), _OPENAPI_SCHEMAS)


async def _run(request: web.Request, call: Callable[[], _T]) -> _T:
    """`call` in a worker thread, within the readers' bound on concurrent history work."""
    return await request.app[READERS_KEY].run(call)


def _reply(handler: Callable[[web.Request], Awaitable[Any]]) -> Handler:
    """Wrap a handler returning JSON-able data: ArpErrors become their status and a message."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            body = await handler(request)
        except ArpError as error:
            return arp_error_response(error)
        return json_response(body)

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


_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]
_ERRORS = {
    status: {
        "description": reason,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, reason in (("400", "bad paging"), ("404", "no such agent, project or session"))
}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        **_ERRORS,
    }


def _openapi_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    session_id = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    project_id = {
        "name": "project_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    project_path = {"name": "projectPath", "in": "query", "schema": {"type": "string"}}
    for agent in AGENTS:
        base = f"/api/{agent}"
        tags = [f"{agent} history"]
        paths[f"{base}/projects"] = {
            "get": {
                "tags": tags,
                "summary": "projects, newest first, with recent sessions",
                "responses": _ok("HistoryProjects", "projects"),
            }
        }
        paths[f"{base}/projects/working-directories"] = {
            "get": {
                "tags": tags,
                "summary": "distinct real working directories, newest first",
                "responses": _ok("HistoryDirectories", "paths"),
            }
        }
        paths[f"{base}/projects/{{project_id}}/sessions"] = {
            "get": {
                "tags": tags,
                "summary": "one project's sessions, newest first",
                "parameters": [project_id, *_PAGE],
                "responses": _ok("HistorySessionPage", "a page of sessions"),
            }
        }
        paths[f"{base}/sessions"] = {
            "get": {
                "tags": tags,
                "summary": "all sessions, newest first",
                "parameters": [*_PAGE, project_path],
                "responses": _ok("HistorySessionPage", "a page of sessions"),
            }
        }
        paths[f"{base}/sessions/{{session_id}}"] = {
            "get": {
                "tags": tags,
                "summary": "one session's messages in order, paged",
                "parameters": [session_id, *_PAGE],
                "responses": _ok("HistoryMessagePage", "a page of messages"),
            },
            "delete": {
                "tags": tags,
                "summary": "delete the session's file and side folder",
                "parameters": [session_id],
                "responses": _ok("HistoryDeleted", "deleted"),
            },
        }
    return paths


_NULLABLE_STRING = {"type": ["string", "null"]}
_OPENAPI_SCHEMAS: dict[str, Any] = {
    "HistorySession": {
        "type": "object",
        "properties": {
            "agent": {"type": "string"},
            "id": {"type": "string"},
            "projectId": {"type": "string"},
            "projectPath": _NULLABLE_STRING,
            "title": {"type": "string"},
            "createdAt": _NULLABLE_STRING,
            "lastActivity": {"type": "string", "format": "date-time"},
            "messageCount": {"type": "integer"},
            "sizeBytes": {"type": "integer"},
            "gitBranch": _NULLABLE_STRING,
            "version": _NULLABLE_STRING,
        },
    },
    "HistoryProject": {
        "type": "object",
        "properties": {
            "agent": {"type": "string"},
            "id": {"type": "string"},
            "path": _NULLABLE_STRING,
            "sessionCount": {"type": "integer"},
            "lastActivity": _NULLABLE_STRING,
            "recentSessions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/HistorySession"},
            },
        },
    },
    "HistoryProjects": {
        "type": "object",
        "properties": {
            "agent": {"type": "string"},
            "projects": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryProject"}},
        },
    },
    "HistoryDirectories": {
        "type": "object",
        "properties": {
            "agent": {"type": "string"},
            "workingDirectories": {"type": "array", "items": {"type": "string"}},
        },
    },
    "HistorySessionPage": {
        "type": "object",
        "properties": {
            "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/HistorySession"}},
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
            "hasMore": {"type": "boolean"},
        },
    },
    "HistoryMessage": {
        "type": "object",
        "required": ["index", "role", "kind", "text"],
        "properties": {
            "index": {"type": "integer"},
            "role": {"type": "string", "enum": ["user", "assistant", "system"]},
            "kind": {"type": "string", "enum": list(KINDS)},
            "text": {"type": "string"},
            "timestamp": {"type": "string"},
            "id": {"type": "string"},
            "messageId": {"type": "string"},
            "parentId": {"type": "string"},
            "toolName": {"type": "string"},
            "toolInput": {},
            "toolUseId": {"type": "string"},
            "isError": {"type": "boolean"},
            "model": {"type": "string"},
            "extra": {"type": "object"},
        },
    },
    "HistoryMessagePage": {
        "type": "object",
        "properties": {
            "session": {"$ref": "#/components/schemas/HistorySession"},
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryMessage"}},
            "total": {
                "type": "integer",
                "description": "messages known; exact once complete is true",
            },
            "complete": {
                "type": "boolean",
                "description": "false while a long session is still being parsed: ask again",
            },
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
            "hasMore": {"type": "boolean"},
        },
    },
    "HistoryDeleted": {
        "type": "object",
        "properties": {
            "deleted": {"type": "boolean"},
            "agent": {"type": "string"},
            "id": {"type": "string"},
        },
    },
}
