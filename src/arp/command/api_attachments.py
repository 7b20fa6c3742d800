"""Attachments on the HTTP API: prompts sent as JSON (base64) or multipart/form-data, and the
stored files served back (the console's thumbnails).

``POST /api/sessions`` and ``POST /api/sessions/{id}/messages`` take either

- ``application/json`` with ``"attachments": [{"name", "content_type", "data"}]`` (``data``
  base64), or
- ``multipart/form-data``: the same fields as text parts (``executor``, ``prompt``, ``model``,
  ``projectPath``, ``permissionMode``, ``allowedTools`` comma-separated, ``maxTurns``,
  ``noTools`` ``true``/``false`` …) and each attachment as a file part (its file name and
  Content-Type are the attachment's).

The bounds are `arp.config.AttachmentBounds` (count and decoded bytes together, 413 beyond);
`arp.agents.attachments` checks the rest. A cross-site form cannot post here: the
``same_origin`` middleware refuses a state change whose ``Origin`` is another host.

``GET /api/sessions/{id}/attachments/{attachment_id}`` serves a stored attachment: an image
as its type, anything else as ``text/plain`` (never as HTML), with ``nosniff`` and a sandbox CSP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from aiohttp import BodyPartReader, web

from arp.agents.attachments import (
    AttachmentsTooLarge,
    Upload,
    uploads_from_json,
)
from arp.agents.errors import BadRequest, SessionNotFound
from arp.command.web import context
from arp.config import ATTACHMENT_BOUNDS
from arp.protocol.json_depth import check_json_depth

_TEXT_FIELDS_MAX: Final = 8 * 1024 * 1024
"""The most bytes of text parts one multipart body may hold (the prompt bound applies after)."""
_BOOLEAN_FIELDS: Final = frozenset({"noTools", "no_tools", "useTools", "use_tools"})
_INT_FIELDS: Final = frozenset({"maxTurns", "max_turns"})


async def read_prompt_body(request: web.Request) -> tuple[Any, list[Upload]]:
    """The body's fields and its attachments, from JSON or multipart/form-data."""
    bounds = context(request).sessions.config.attachments
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    if request.content_type != "application/json":
        raise BadRequest(
            "send the body as JSON with Content-Type: application/json "
            "(or multipart/form-data with attachments)",
            status=415,
        )
    try:
        text = await request.text()
        check_json_depth(text)  # deep nesting would raise RecursionError, not ValueError
        body = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if isinstance(body, dict):
        uploads = uploads_from_json(body.pop("attachments", None), bounds)
    else:
        uploads = []
    return body, uploads


async def _read_multipart(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    bounds = context(request).sessions.config.attachments
    reader = await request.multipart()
    fields: dict[str, Any] = {}
    uploads: list[Upload] = []
    total = 0
    text_bytes = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        name = part.name or ""
        if part.filename is not None:
            if len(uploads) >= bounds.max_count:
                raise AttachmentsTooLarge(
                    f"more than {bounds.max_count} attachments; at most that many may come "
                    "with one prompt"
                )
            data = await _read_part(part, bounds.max_bytes - total)
            total += len(data)
            ctype = part.headers.get("Content-Type", "")
            uploads.append(Upload(part.filename or f"attachment-{len(uploads) + 1}", ctype, data))
            continue
        raw = await _read_part(part, _TEXT_FIELDS_MAX - text_bytes, text=True)
        text_bytes += len(raw)
        try:
            value: Any = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"form field {name!r} is not UTF-8 text") from None
        if name in _BOOLEAN_FIELDS:
            value = value.strip().lower() in ("1", "true", "yes", "on")
        elif name in _INT_FIELDS:
            value = int(value) if value.strip().isdigit() else value
        if name == "attachments":  # a JSON list of base64 attachments as a field: accepted too
            try:
                uploads += uploads_from_json(json.loads(value), bounds)
            except ValueError:
                raise BadRequest("the 'attachments' field must be a JSON list") from None
            continue
        if name:
            fields[name] = value
    return fields, uploads


async def _read_part(part: BodyPartReader, budget: int, *, text: bool = False) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > budget:
            if text:
                raise AttachmentsTooLarge("the form's text fields are too large")
            raise AttachmentsTooLarge(
                f"attachments hold more than {ATTACHMENT_BOUNDS.max_bytes} bytes together; "
                "that is the most one prompt may carry"
                if budget >= 0
                else "too many attachment bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def get_attachment(request: web.Request) -> web.StreamResponse:
    manager = context(request).sessions
    session = manager.get(request.match_info["session_id"])
    wanted = request.match_info["attachment_id"]
    item = next((a for a in session.attachments if a.get("id") == wanted), None)
    if item is None:
        raise SessionNotFound(f"session {session.session_id} has no attachment {wanted!r}")
    path = Path(str(item["path"]))
    ctype = str(item["content_type"]) if item.get("kind") == "image" else "text/plain"
    headers = {
        "Content-Type": ctype + ("; charset=utf-8" if ctype == "text/plain" else ""),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, max-age=3600",
    }
    try:
        return web.FileResponse(path, headers=headers)
    except OSError:  # pragma: no cover - FileResponse opens the file lazily
        raise SessionNotFound(f"attachment {wanted!r} is no longer stored") from None


ATTACHMENTS_DOC: Final[dict[str, Any]] = {
    "/api/sessions/{session_id}/attachments/{attachment_id}": {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("session_id", "attachment_id")
        ],
        "get": {
            "summary": "A stored attachment's bytes (images as their type, others as text/plain)",
            "responses": {
                "200": {"description": "the file"},
                "404": {"description": "no such session or attachment"},
            },
        },
    }
}
ATTACHMENTS_NOTE: Final = (
    f"Attachments: JSON 'attachments' [{{name, content_type, data (base64)}}] or "
    f"multipart/form-data (fields as text parts, attachments as file parts). Images "
    f"png/jpeg/gif/webp and UTF-8 text files; at most {ATTACHMENT_BOUNDS.max_count} per prompt "
    f"and {ATTACHMENT_BOUNDS.max_bytes} bytes together (arp.config AttachmentBounds); 413 beyond."
)
