"""What a session changed, on the HTTP API, and its attachments' routes.

    GET /api/sessions/{id}/changes            {"base", "files": [{"path", "status", "additions",
                                              "deletions", "binary", "diff", "old_path"?}],
                                              "truncated"?, "note"?}
    GET /api/sessions/{id}/changes?path=P     the same for file P alone, its diff whole (up to
                                              ChangesBounds.max_file_diff_bytes); 404 unchanged
    GET /api/sessions/{id}/attachments/{aid}  a stored attachment (`arp.command.api_attachments`)

The work is `arp.agents.changes`' (through `SessionManager.changes`); this module is the face.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from arp.command import openapi
from arp.command.api_attachments import ATTACHMENTS_DOC, get_attachment
from arp.command.web import context, json_response
from arp.config import CHANGES_BOUNDS

PREFIXES: Final = ("/api", "")


async def get_changes(request: web.Request) -> web.Response:
    path = request.query.get("path") or None
    answer = await context(request).sessions.changes(request.match_info["session_id"], path)
    return json_response(answer)


def setup_changes_routes(app: web.Application) -> None:
    app.on_startup.append(_document)
    for prefix in PREFIXES:
        base = f"{prefix}/sessions/{{session_id}}"
        app.router.add_get(base + "/changes", get_changes)
        app.router.add_get(base + "/attachments/{attachment_id}", get_attachment)


_FILE_CHANGE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "relative to the repository (or project)"},
        "old_path": {"type": "string", "description": "a renamed file's path before"},
        "status": {"type": "string", "enum": ["added", "modified", "deleted", "renamed"]},
        "additions": {"type": "integer"},
        "deletions": {"type": "integer"},
        "binary": {"type": "boolean", "description": "listed without a diff"},
        "diff": {
            "type": ["string", "null"],
            "description": "unified diff; past "
            f"{CHANGES_BOUNDS.max_diff_bytes} bytes cut with a marker line "
            "'[diff cut by arp: N more bytes …]'",
        },
    },
    "required": ["path", "status", "additions", "deletions", "diff"],
}
_CHANGES: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "base": {
            "type": ["object", "null"],
            "description": "in git: {kind: git, root, commit (HEAD then, null if unborn), "
            "tree (the work tree then, dirty state included), taken_at}; outside git: "
            "{kind: files, root, files, complete, taken_at}; null before the first run",
        },
        "files": {"type": "array", "items": {"$ref": "#/components/schemas/FileChange"}},
        "truncated": {"type": "integer", "description": "files beyond the listing's bound"},
        "note": {"type": "string", "description": "why nothing can be compared"},
    },
    "required": ["base", "files"],
}
_CHANGES_DOC: Final[dict[str, Any]] = {
    "/api/sessions/{session_id}/changes": {
        "parameters": [
            {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "get": {
            "summary": "What the session changed in its project since its first run started",
            "description": "In git: the diff between the work tree when the first run started "
            "(commit and dirty state, recorded without touching the index or stash) and now. "
            "Outside git: the files changed since a bounded snapshot taken then, and every "
            "file the agent's tool calls named. Binary files have no diff.",
            "parameters": [
                {
                    "name": "path",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "one file (its diff whole, up to "
                    f"{CHANGES_BOUNDS.max_file_diff_bytes} bytes); 404 if it did not change",
                }
            ],
            "responses": {
                "200": {
                    "description": "the changes",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Changes"}}
                    },
                },
                "404": {"description": "no such session, or ?path= did not change"},
            },
        },
    }
}


async def _document(app: web.Application) -> None:
    if openapi.DOCUMENT_KEY in app:
        openapi.add_paths(
            app,
            {**_CHANGES_DOC, **ATTACHMENTS_DOC},
            {"FileChange": _FILE_CHANGE, "Changes": _CHANGES},
        )
