"""The OpenAPI 3.1 document of the sessions API, served at ``/api/openapi.json``.

Other parts of command mode (history, console) may add their paths with `add_paths`.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from aiohttp import web

from arp import __version__
from arp.agents.events import EVENT_KINDS
from arp.agents.executors import EXECUTORS
from arp.agents.sessions import STATUSES
from arp.command.api_attachments import ATTACHMENTS_NOTE
from arp.command.web import json_response

DOCUMENT_KEY: Final[web.AppKey[dict[str, Any]]] = web.AppKey("arp_openapi_document")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "error")
_SID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
_AFTER = {
    "name": "after",
    "in": "query",
    "schema": {"type": "integer", "minimum": 0},
    "description": "only events with a greater seq",
}


def build_document() -> dict[str, Any]:
    executors = sorted(EXECUTORS)
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "description": "every error, in one shape (the gateway's too)",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "integer", "description": "the HTTP status"},
                        "code": {
                            "type": "string",
                            "description": "a stable snake_case name, e.g. session_not_found",
                        },
                        "message": {"type": "string", "description": "what went wrong"},
                    },
                    "required": ["status", "code", "message"],
                }
            },
            "required": ["error"],
        },
        "Usage": {
            "type": "object",
            "properties": {
                "input_tokens": {"type": ["integer", "null"]},
                "output_tokens": {"type": ["integer", "null"]},
                "cost_usd": {"type": ["number", "null"]},
            },
        },
        "StartRequest": {
            "type": "object",
            "required": ["executor", "prompt"],
            "properties": {
                "executor": {
                    "type": "string",
                    "description": f"one of {', '.join(executors)}, any case",
                },
                "prompt": {"type": "string"},
                "model": {"type": "string"},
                "projectPath": {
                    "type": "string",
                    "description": "the agent's cwd (also project_path)",
                },
                "permissionMode": {
                    "type": "string",
                    "description": "default, acceptEdits, plan, bypassPermissions, ask (a "
                    "person decides each tool use), or the executor's own value",
                },
                "allowedTools": {"type": ["array", "string"], "items": {"type": "string"}},
                "disallowedTools": {"type": ["array", "string"], "items": {"type": "string"}},
                "noTools": {"type": "boolean", "description": "claude only"},
                "maxTurns": {"type": "integer", "minimum": 1, "description": "claude only"},
                "appendSystemPrompt": {"type": "string", "description": "claude only"},
                "resume": {
                    "type": "string",
                    "description": "continue this earlier conversation of the CLI (its own "
                    "session or thread id; also agentSessionId)",
                },
                "attachments": {"type": "array", "items": _ref("Upload")},
            },
        },
        "Upload": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "name": {"type": "string"},
                "content_type": {
                    "type": "string",
                    "description": "image/png, image/jpeg, image/gif, image/webp, or a text type",
                },
                "data": {"type": "string", "format": "byte", "description": "the bytes, base64"},
            },
        },
        "Attachment": {
            "type": "object",
            "description": "an image or text file sent with a prompt, stored 0600 with the "
            "session and deleted with it",
            "properties": {
                "id": {"type": "string", "description": "<run>-<n>"},
                "run": {"type": "integer"},
                "name": {"type": "string"},
                "content_type": {"type": "string"},
                "size": {"type": "integer"},
                "kind": {"type": "string", "enum": ["image", "file"]},
                "path": {"type": "string", "description": "where the agent reads it"},
            },
        },
        "Session": {
            "type": "object",
            "properties": {
                "session_id": {"type": "string"},
                "executor": {"type": "string", "enum": executors},
                "status": {"type": "string", "enum": list(STATUSES)},
                "prompt": {"type": "string"},
                "model": {"type": ["string", "null"]},
                "project_path": {"type": "string"},
                "permission_mode": {"type": ["string", "null"]},
                "agent_session_id": {
                    "type": ["string", "null"],
                    "description": "the CLI's own conversation id, from its first event",
                },
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "started_at": {"type": ["string", "null"], "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time"},
                "exit_code": {"type": ["integer", "null"]},
                "usage": _ref("Usage"),
                "cost_usd": {"type": ["number", "null"]},
                "runs": {"type": "integer"},
                "last_seq": {"type": "integer"},
                "error": {"type": ["string", "null"]},
                "pid": {"type": ["integer", "null"]},
                # issue 15: the paths and this schema are added by api_sessions (add_paths)
                "pending_approvals": {"type": "array", "items": _ref("PendingApproval")},
                "attachments": {"type": "array", "items": _ref("Attachment")},
            },
        },
        "Event": {
            "type": "object",
            "required": ["seq", "ts", "run", "kind"],
            "properties": {
                "seq": {"type": "integer", "description": "1, 2, 3, … without gaps"},
                "ts": {"type": "number", "description": "Unix time, seconds"},
                "run": {"type": "integer", "description": "0 for the first prompt, then 1, …"},
                "kind": {"type": "string", "enum": sorted(EVENT_KINDS)},
                "text": {"type": "string"},
                "tool_name": {"type": "string"},
                "tool_id": {"type": "string"},
                "tool_input": {},
                "is_error": {"type": "boolean"},
                "usage": _ref("Usage"),
                "agent_session_id": {"type": "string"},
                "exit_code": {"type": "integer"},
                "status": {"type": "string"},
                "raw": {"description": "the CLI's own line (JSON, or the text of a non-JSON line)"},
                "attachments": {
                    "type": "array",
                    "items": _ref("Attachment"),
                    "description": "a prompt event: the attachments sent with it",
                },
            },
        },
        "SessionWithEvents": {
            "allOf": [
                _ref("Session"),
                {
                    "type": "object",
                    "properties": {
                        "events": {"type": "array", "items": _ref("Event")},
                        "next_after": {"type": "integer"},
                        "has_more": {"type": "boolean"},
                    },
                },
            ]
        },
    }
    session_ok = _json(_ref("Session"), "the session")
    errors = {str(code): _ERROR for code in (400, 404)}
    paths: dict[str, Any] = {
        "/api/sessions": {
            "post": {
                "summary": "Start a session",
                "description": ATTACHMENTS_NOTE,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("StartRequest")},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "description": "StartRequest's fields as text parts; each "
                                "attachment a file part (its filename and Content-Type)",
                            }
                        },
                    },
                },
                "responses": {
                    "201": _json(_ref("Session"), "started"),
                    **{str(c): _ERROR for c in (400, 403, 413, 415, 429)},
                },
            },
            "get": {
                "summary": "List sessions, newest first",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "sessions": {"type": "array", "items": _ref("Session")},
                                "total": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        },
                        "a page of sessions",
                    )
                },
            },
        },
        "/api/sessions/{session_id}": {
            "parameters": [_SID],
            "get": {
                "summary": "A session's state and its events after ?after=",
                "parameters": [
                    _AFTER,
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": _json(_ref("SessionWithEvents"), "state and events"),
                    **errors,
                },
            },
            "delete": {
                "summary": "Stop the session if it runs, then remove it and its output",
                "responses": {"204": {"description": "deleted"}, **errors},
            },
        },
        "/api/sessions/{session_id}/events": {
            "parameters": [_SID],
            "get": {
                "summary": "Server-Sent Events: replay from Last-Event-ID or ?after=, then live",
                "description": "Each event is `id: <seq>` and `data: <Event JSON>`; when the "
                "session is not running a last `event: end` carries the Session.",
                "parameters": [
                    _AFTER,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "the stream", "content": {"text/event-stream": {}}},
                    **errors,
                },
            },
        },
        "/api/sessions/{session_id}/ws": {
            "parameters": [_SID],
            "get": {
                "summary": "WebSocket: each text message one Event JSON, replayed from ?after=",
                "description": 'The last message is {"type": "end", "session": Session}.',
                "parameters": [_AFTER],
                "responses": {"101": {"description": "switching protocols"}, **errors},
            },
        },
        "/api/sessions/{session_id}/messages": {
            "parameters": [_SID],
            "post": {
                "summary": "A follow-up prompt resuming the same agent conversation",
                "description": ATTACHMENTS_NOTE,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["prompt"],
                                "properties": {
                                    "prompt": {"type": "string"},
                                    "model": {"type": "string"},
                                    "attachments": {"type": "array", "items": _ref("Upload")},
                                },
                            }
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "description": "prompt and model as text parts; each "
                                "attachment a file part",
                            }
                        },
                    },
                },
                "responses": {
                    "200": session_ok,
                    **{str(c): _ERROR for c in (400, 404, 409, 413, 429)},
                },
            },
        },
        "/api/sessions/{session_id}/cancel": {
            "parameters": [_SID],
            "post": {
                "summary": "Stop the run (SIGINT, SIGTERM, SIGKILL), keep its output",
                "responses": {"200": session_ok, **errors},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ARP command mode",
            "version": __version__,
            "description": "Agent sessions (Claude Code, Codex, Gemini CLI) on an arpc in "
            "--command-mode. Through the relay add ?token=<client_id>. Every path is also "
            "served without the /api prefix.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


def add_paths(app: web.Application, paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Lets another module of command mode document its own routes in the same document."""
    document = app[DOCUMENT_KEY]
    document["paths"].update(copy.deepcopy(paths))
    document["components"]["schemas"].update(copy.deepcopy(schemas))


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[DOCUMENT_KEY])


def setup_openapi_route(app: web.Application) -> None:
    app[DOCUMENT_KEY] = build_document()
    app.router.add_get("/api/openapi.json", openapi_document)
    app.router.add_get("/openapi.json", openapi_document)
