"""The sessions API: a thin HTTP face over `arp.agents.sessions.SessionManager`.

Served under ``/api`` and, as the originals also used them, under the bare paths::

    POST   /api/sessions                  start (201 + the session)
    GET    /api/sessions                  list, newest first (?limit=&offset=)
    GET    /api/agents                    the agents ARP knows: {"agents": [{name, display_name,
                                          found, path, version, install, problem}]}
    GET    /api/sessions/{id}             state + events (?after=<seq>&limit=)
    GET    /api/sessions/{id}/events      Server-Sent Events (Last-Event-ID or ?after=)
    GET    /api/sessions/{id}/ws          WebSocket, same replay (?after=)
    POST   /api/sessions/{id}/messages    follow-up prompt, resumes the conversation
    (both POSTs take attachments: JSON base64 or multipart, `arp.command.api_attachments`;
    GET /api/sessions/{id}/changes and .../attachments/{aid}: `arp.command.api_changes`)
    POST   /api/sessions/{id}/cancel      stop the run, keep its output
    DELETE /api/sessions/{id}             stop and remove (204)
    GET    /api/approvals                 every pending approval, oldest first (ask mode)
    POST   /api/sessions/{id}/approvals/{approval_id}   {"decision": "allow"|"deny",
                                          "message"?, "remember"?: "session"}: 200 with the
                                          recorded decision, 404 unknown, 409 decided already

The streams send the stored event lines as they are (``id:`` is the seq on SSE), so a replay
costs no re-encoding; when the session is no longer running they send a last ``end`` message
holding the session (SSE ``event: end``; WebSocket ``{"type": "end", "session": {...}}``) and
close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import WSMsgType, web

from arp.agents.approvals import parse_decision
from arp.agents.errors import BadRequest
from arp.agents.executors import AGENTS
from arp.agents.session_types import Session, StartRequest
from arp.agents.sessions import SessionManager
from arp.command import openapi
from arp.command.agents_check import agents_json
from arp.command.api_attachments import read_prompt_body
from arp.command.web import STREAMS_KEY, context, json_response
from arp.config import API_BOUNDS, SESSION_BOUNDS
from arp.protocol.json_depth import check_json_depth

log = logging.getLogger(__name__)

PREFIXES: Final = ("/api", "")


_AGENTS_DOC: Final[dict[str, Any]] = {
    "/api/agents": {
        "get": {
            "summary": "The agents this arpc can run, in the order to list them",
            "responses": {
                "200": {
                    "description": "the executors table's agents",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "agents": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "name": {"type": "string", "enum": list(AGENTS)},
                                                "display_name": {"type": "string"},
                                                "found": {"type": "boolean"},
                                                "path": {"type": ["string", "null"]},
                                                "version": {"type": ["string", "null"]},
                                                "install": {"type": "string"},
                                                "problem": {"type": ["string", "null"]},
                                            },
                                            "required": ["name", "display_name"],
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        }
    }
}


_PENDING_APPROVAL: Final[dict[str, Any]] = {
    "type": "object",
    "description": "a tool use an agent in ask mode waits on a person for",
    "properties": {
        "session_id": {"type": "string", "description": "in GET /api/approvals only"},
        "approval_id": {"type": "string"},
        "tool_name": {"type": "string"},
        "tool_input": {"description": "the tool's arguments, as the agent gave them"},
        "title": {"type": "string", "description": "the command or file it is about"},
        "requested_at": {"type": "string", "format": "date-time"},
        "expires_at": {
            "type": "string",
            "format": "date-time",
            "description": "undecided by then: denied, reason 'timed out' (--approval-timeout)",
        },
    },
    "required": ["approval_id", "tool_name", "tool_input", "title", "requested_at", "expires_at"],
}
_DECISION: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "approval_id": {"type": "string"},
        "session_id": {"type": "string"},
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "by": {"type": "string", "enum": ["person", "timeout", "cancel"]},
        "message": {"type": ["string", "null"]},
        "remember": {"type": ["string", "null"], "enum": ["session", None]},
        "decided_at": {"type": "string", "format": "date-time"},
    },
}
_DECISION_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": ["allow", "deny"]},
        "message": {"type": "string", "description": "given to the agent (at most 4096 chars)"},
        "remember": {
            "type": "string",
            "enum": ["session"],
            "description": "with allow: the same tool runs unasked for the rest of the session",
        },
    },
}


def _json_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_DOC: Final = _json_doc({"$ref": "#/components/schemas/Error"}, "the error")
_APPROVALS_DOC: Final[dict[str, Any]] = {
    "/api/approvals": {
        "get": {
            "summary": "Every pending approval on this machine, oldest first (the inbox)",
            "responses": {
                "200": _json_doc(
                    {
                        "type": "object",
                        "properties": {
                            "approvals": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/PendingApproval"},
                            }
                        },
                    },
                    "the pending approvals, each with its session_id",
                )
            },
        }
    },
    "/api/sessions/{session_id}/approvals/{approval_id}": {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("session_id", "approval_id")
        ],
        "post": {
            "summary": "Decide a pending approval; the first decision wins",
            "description": "The agent gets the answer at once. Events: the session's stream "
            "holds an approval_request event when the agent asks and an approval_decision "
            "event (decision, by: person | timeout | cancel) when it is decided.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _DECISION_BODY}},
            },
            "responses": {
                "200": _json_doc(
                    {"$ref": "#/components/schemas/ApprovalDecision"}, "the recorded decision"
                ),
                "400": _ERROR_DOC,
                "404": _ERROR_DOC,
                "409": _json_doc(
                    {"$ref": "#/components/schemas/Error"},
                    "decided already, or expired (denied at its deadline)",
                ),
            },
        },
    },
}


def setup_session_routes(app: web.Application) -> None:
    app.router.add_get("/api/agents", list_agents)
    app.router.add_get("/api/approvals", list_approvals)
    app.on_startup.append(_document)
    for prefix in PREFIXES:
        base = f"{prefix}/sessions"
        app.router.add_post(base, start_session)
        app.router.add_get(base, list_sessions)
        app.router.add_get(base + "/{session_id}", get_session)
        app.router.add_get(base + "/{session_id}/events", stream_events)
        app.router.add_get(base + "/{session_id}/ws", websocket_events)
        app.router.add_post(base + "/{session_id}/messages", send_message)
        app.router.add_post(base + "/{session_id}/cancel", cancel_session)
        app.router.add_post(base + "/{session_id}/approvals/{approval_id}", decide_approval)
        app.router.add_delete(base + "/{session_id}", delete_session)


async def _document(app: web.Application) -> None:
    """Describe the routes added here since the sessions API's document was written."""
    if openapi.DOCUMENT_KEY in app:
        openapi.add_paths(
            app,
            {**_AGENTS_DOC, **_APPROVALS_DOC},
            {"PendingApproval": _PENDING_APPROVAL, "ApprovalDecision": _DECISION},
        )


def _manager(request: web.Request) -> SessionManager:
    return context(request).sessions


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"?{name}= must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"?{name}= must be between {low} and {high}")
    return value


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise BadRequest(
            "send the body as JSON with Content-Type: application/json",
            status=415,
        )
    try:
        text = await request.text()
        check_json_depth(text)  # deep nesting would raise RecursionError, not ValueError
        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _location(request: web.Request, session: Session) -> str:
    prefix = "/api" if request.path.startswith("/api/") else ""
    return f"{prefix}/sessions/{session.session_id}"


async def start_session(request: web.Request) -> web.Response:
    body, uploads = await read_prompt_body(request)  # JSON or multipart, with attachments
    session = await _manager(request).start_session(StartRequest.from_json(body), uploads)
    return json_response(
        session.to_json(), status=201, headers={"Location": _location(request, session)}
    )


async def list_agents(request: web.Request) -> web.Response:
    """The executors table's agents, in order, each found or not (the console builds its
    pickers from it)."""
    return json_response({"agents": await agents_json(_manager(request))})


async def list_sessions(request: web.Request) -> web.Response:
    manager = _manager(request)
    limit = _int_param(request, "limit", API_BOUNDS.default_list, 1, API_BOUNDS.max_list)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    sessions = manager.list(limit=limit, offset=offset)
    return json_response(
        {
            "sessions": [s.to_json() for s in sessions],
            "total": manager.count(),
            "limit": limit,
            "offset": offset,
        }
    )


async def get_session(request: web.Request) -> web.Response:
    """State plus the events after ``?after=`` (the body is assembled from the stored lines)."""
    manager = _manager(request)
    session_id = request.match_info["session_id"]
    manager.get(session_id)  # 404 before the query is read, as always
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(
        request, "limit", SESSION_BOUNDS.page_events, 1, SESSION_BOUNDS.max_page_events
    )
    page = manager.page(session_id, after, limit)
    state = page.session.to_json()
    state["has_more"] = page.has_more
    state["next_after"] = page.next_after
    head = json.dumps(state, ensure_ascii=False)
    body = head[:-1] + ',"events":[' + ",".join(line for _, line in page.lines) + "]}"
    return web.Response(text=body, content_type="application/json")


async def send_message(request: web.Request) -> web.Response:
    body, uploads = await read_prompt_body(request)  # JSON or multipart, with attachments
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with a 'prompt'")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' is required and must be a string")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    session = await _manager(request).send_message(
        request.match_info["session_id"], prompt, model=model or None, attachments=uploads
    )
    return json_response(session.to_json())


async def list_approvals(request: web.Request) -> web.Response:
    approvals = _manager(request).approvals()
    return json_response({"approvals": [a.to_json(with_session=True) for a in approvals]})


async def decide_approval(request: web.Request) -> web.Response:
    decision, message, remember = parse_decision(await _json_body(request))
    approval = _manager(request).decide(
        request.match_info["session_id"],
        request.match_info["approval_id"],
        decision,
        message=message,
        remember=remember,
    )
    return json_response(approval.decision_json())


async def cancel_session(request: web.Request) -> web.Response:
    session = await _manager(request).cancel(request.match_info["session_id"])
    return json_response(session.to_json())


async def delete_session(request: web.Request) -> web.Response:
    await _manager(request).delete(request.match_info["session_id"])
    return web.Response(status=204)


def _replay_from(request: web.Request) -> int:
    """Last-Event-ID (a reconnecting EventSource) wins over ``?after=``."""
    last = request.headers.get("Last-Event-ID", "").strip()
    if last:
        try:
            value = int(last)
        except ValueError:
            raise BadRequest(f"Last-Event-ID must be an event seq, not {last!r}") from None
        return max(0, value)
    return _int_param(request, "after", 0, 0, 2**62)


@contextlib.asynccontextmanager
async def _owned_stream(request: web.Request) -> AsyncIterator[None]:
    """Registers the handler's task so closing the server can end the stream."""
    task = asyncio.current_task()
    streams = request.app[STREAMS_KEY]
    if task is not None:
        streams.add(task)
    try:
        yield
    finally:
        if task is not None:
            streams.discard(task)


def _end_message(manager: SessionManager, session_id: str) -> dict[str, Any] | None:
    try:
        return manager.get(session_id).to_json()
    except Exception:  # deleted while streaming
        return None


async def stream_events(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    session_id = request.match_info["session_id"]
    manager.get(session_id)  # 404 before the stream starts
    after = _replay_from(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    async with _owned_stream(request):
        try:
            await response.write(b"retry: 2000\n\n")
            async for batch in manager.follow_lines(session_id, after):
                if not batch:
                    await response.write(b": keep-alive\n\n")
                    continue
                chunk = "".join(f"id: {seq}\ndata: {line}\n\n" for seq, line in batch)
                await response.write(chunk.encode("utf-8"))
            state = _end_message(manager, session_id)
            payload = json.dumps(state if state is not None else {"deleted": True})
            await response.write(f"event: end\ndata: {payload}\n\n".encode())
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
    return response


async def websocket_events(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    session_id = request.match_info["session_id"]
    manager.get(session_id)
    after = _int_param(request, "after", 0, 0, 2**62)
    ws = web.WebSocketResponse(
        heartbeat=API_BOUNDS.ws_heartbeat, max_msg_size=API_BOUNDS.ws_max_message
    )
    await ws.prepare(request)
    async with _owned_stream(request):
        sender = asyncio.ensure_future(_ws_send(ws, manager, session_id, after))
        try:
            # Reading is what notices the peer's close; messages from the client are ignored.
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            await ws.close()
    return ws


async def _ws_send(
    ws: web.WebSocketResponse, manager: SessionManager, sid: str, after: int
) -> None:
    try:
        async for batch in manager.follow_lines(sid, after):
            for _, line in batch:
                await ws.send_str(line)
        state = _end_message(manager, sid)
        await ws.send_str(json.dumps({"type": "end", "session": state}, ensure_ascii=False))
    except ConnectionError:
        return
    await ws.close()
