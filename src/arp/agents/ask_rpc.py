"""Ask mode over JSON-RPC: Gemini CLI's Agent Client Protocol and Codex's app-server.

`arp.agents.ask` says what an ask protocol is; this module holds the ones that speak JSON-RPC
2.0, one object a line, where ARP is the client and the CLI the agent. Pure: lines in, lines out.

Gemini CLI (``gemini --acp``, 0.61), as driven against the real CLI:

- ``initialize`` (protocolVersion 1, no fs or terminal capability: the agent uses its own tools),
  then ``session/new`` {cwd, mcpServers: []} (its ``sessionId`` is the conversation id, the one
  ``--resume`` and the history readers know) or, for a follow-up, ``session/load`` {sessionId,
  cwd, mcpServers}, whose replay of the earlier conversation is dropped; then ``session/prompt``.
- Output comes as ``session/update`` notifications: ``agent_message_chunk`` (text deltas),
  ``agent_thought_chunk``, ``tool_call`` and ``tool_call_update`` (``completed``/``failed``).
- A tool use that needs asking is a request ``session/request_permission`` {toolCall {toolCallId,
  title, kind, status pending}, options [{optionId, kind allow_once|allow_always|reject_once|…}]}
  answered with {outcome: {outcome: "selected", optionId}}: ARP picks the ``allow_once`` or
  ``reject_once`` option. ACP carries no message with a rejection; the agent is told the user
  refused. No ``tool_call`` update comes before the request, so ARP writes the call's event then.
- The ``session/prompt`` response ({stopReason, _meta.quota.token_count}) ends the turn: it
  becomes the ``result`` event and stdin is closed, after which the CLI exits.
- Any other request from the agent is answered "method not found".
- Gemini 0.61 names a chat file by the minute it began, and ``session/load`` starts recording
  (into a file named by the current minute) before it reads: within the conversation's first
  minute that is the same file, which it overwrites, and the load fails ("No previous sessions
  found"). So a follow-up waits until that minute is over (`GeminiAcp.start_delay`).

Codex (``codex app-server``, 0.169; the protocol's schema is ``codex app-server
generate-json-schema --out DIR``), as driven against the real CLI:

- ``initialize`` {clientInfo}, the ``initialized`` notification, then ``thread/start`` {cwd,
  approvalPolicy "untrusted", sandbox "workspace-write", model?} or, for a follow-up,
  ``thread/resume`` {threadId, …}; the thread's id is the conversation id (as ``codex exec``'s
  ``thread_id``). Then ``turn/start`` {threadId, input [{type text, text}]}.
- "untrusted" asks for every command but the known-safe read-only ones:
  ``item/commandExecution/requestApproval`` {itemId, command, commandActions, cwd} and
  ``item/fileChange/requestApproval`` {itemId, reason} are answered {decision: "accept" |
  "decline"}; a declined command's item completes with status ``declined`` and the model is
  told it was rejected. Approved commands run in the workspace-write sandbox.
- Output: ``item/started``/``item/completed`` notifications (``agentMessage`` text,
  ``reasoning``, ``commandExecution`` with ``aggregatedOutput`` and ``exitCode``,
  ``fileChange``), ``thread/tokenUsage/updated``; ``turn/completed`` {turn {status, error}} ends
  the run: the ``result`` event, and stdin is closed.
"""

from __future__ import annotations

import json
from typing import Any, Final

from arp.agents.argv import RunSpec
from arp.agents.ask import Decision, PermissionAsk, Step, title_of
from arp.agents.attachments import read_base64
from arp.agents.events import Draft, Usage

ACP_VERSION: Final = 1
STARTUP_SLACK: Final = 30.0
"""Seconds allowed between a Gemini session's creation and its ``session/new``."""
METHOD_NOT_FOUND: Final = -32601


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _object(line: str) -> dict[str, Any] | None:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str:
    """The text of an ACP content block, or of a list of them."""
    if isinstance(value, list):
        return "".join(_text(item) for item in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        if "content" in value:
            return _text(value["content"])
    return ""


class JsonRpcClient:
    """The client side's bookkeeping: ids for our requests, the agent's requests kept by key."""

    def __init__(self) -> None:
        self._next = 0
        self.sent: dict[int, str] = {}
        """Our request id → its method, until the answer comes."""
        self.asked: dict[str, tuple[Any, dict[str, Any]]] = {}
        """A permission request's key → (its JSON-RPC id, its params)."""

    def request(self, method: str, params: dict[str, Any]) -> bytes:
        self._next += 1
        self.sent[self._next] = method
        return _line({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params})

    @staticmethod
    def result(request_id: Any, result: Any) -> bytes:
        return _line({"jsonrpc": "2.0", "id": request_id, "result": result})

    @staticmethod
    def error(request_id: Any, code: int, message: str) -> bytes:
        return _line(
            {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        )

    def answered(self, data: dict[str, Any]) -> str | None:
        """The method of ours this message answers (None: it is not an answer of ours)."""
        if "method" in data or not isinstance(data.get("id"), int):
            return None
        return self.sent.pop(data["id"], None)


class GeminiAcp:
    """Gemini CLI's Agent Client Protocol (see the module docstring)."""

    def __init__(self, spec: RunSpec) -> None:
        self.cwd = spec.project_path or "."
        self.resume_id = spec.resume_id
        self.attachments = spec.attachments
        """Attached images go as ACP ``image`` blocks; files are named in the prompt."""
        self.rpc = JsonRpcClient()
        self.prompt = ""
        self.session_id: str | None = None
        self.loading = False
        self.tools: dict[str, str] = {}
        """toolCallId → tool name, for the results."""

    def opening(self, prompt: str) -> list[bytes]:
        self.prompt = prompt
        capabilities = {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False}
        return [
            self.rpc.request(
                "initialize", {"protocolVersion": ACP_VERSION, "clientCapabilities": capabilities}
            )
        ]

    def _prompt_blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.prompt}]
        for item in self.attachments:
            if item.is_image:
                blocks.append(
                    {"type": "image", "mimeType": item.content_type, "data": read_base64(item)}
                )
        return blocks

    def on_line(self, line: str) -> Step:
        data = _object(line)
        if data is None:
            return Step(drafts=[Draft("text", text=line, raw=line)] if line.strip() else [])
        method = data.get("method")
        if isinstance(method, str):
            if "id" in data:
                return self._agent_request(data, method)
            if method == "session/update":
                return self._update(data)
            return Step()
        answered = self.rpc.answered(data)
        if answered is None:
            return Step()
        if "error" in data:
            return _failed(answered, data)
        return self._answer(answered, data)

    def start_delay(self, conversation_started: float, now: float) -> float:
        """A follow-up waits until the minute its chat file is named for is over (see the module
        docstring: within it, ``session/load`` overwrites the file and fails). The file is named
        when ``session/new`` ran, a few seconds after the session was created: up to
        `STARTUP_SLACK` is allowed for."""
        if not self.resume_id:
            return 0.0
        unsafe_until = (int((conversation_started + STARTUP_SLACK) // 60) + 1) * 60.0
        return max(0.0, unsafe_until + 0.5 - now)

    def answer(self, ask: PermissionAsk, decision: Decision, message: str | None) -> list[bytes]:
        pending = self.rpc.asked.pop(ask.key, None)
        if pending is None:
            return []
        request_id, params = pending
        wanted = "allow_once" if decision == "allow" else "reject_once"
        options = [o for o in params.get("options") or [] if isinstance(o, dict)]
        chosen = next((o for o in options if o.get("kind") == wanted), None)
        if chosen is None and decision == "deny":
            chosen = next((o for o in options if str(o.get("kind", "")).startswith("reject")), None)
        if chosen is None:
            return [self.rpc.result(request_id, {"outcome": {"outcome": "cancelled"}})]
        outcome = {"outcome": "selected", "optionId": chosen.get("optionId")}
        return [self.rpc.result(request_id, {"outcome": outcome})]

    # ----------------------------------------------------------------------------- internals

    def _answer(self, method: str, data: dict[str, Any]) -> Step:
        result = data.get("result")
        result = result if isinstance(result, dict) else {}
        if method == "initialize":
            if self.resume_id:
                self.loading = True
                self.session_id = self.resume_id
                params = {"sessionId": self.resume_id, "cwd": self.cwd, "mcpServers": []}
                return Step(writes=[self.rpc.request("session/load", params)])
            params = {"cwd": self.cwd, "mcpServers": []}
            return Step(writes=[self.rpc.request("session/new", params)])
        if method in ("session/new", "session/load"):
            self.loading = False
            if method == "session/new":
                sid = result.get("sessionId")
                self.session_id = sid if isinstance(sid, str) else None
            prompt = {
                "sessionId": self.session_id,
                "prompt": self._prompt_blocks(),
            }
            return Step(
                drafts=[Draft("system", agent_session_id=self.session_id, raw=data)],
                writes=[self.rpc.request("session/prompt", prompt)],
            )
        if method == "session/prompt":
            stop = result.get("stopReason")
            meta = result.get("_meta")
            quota = meta.get("quota") if isinstance(meta, dict) else None
            tokens = quota.get("token_count") if isinstance(quota, dict) else None
            tokens = tokens if isinstance(tokens, dict) else {}
            usage = Usage(
                input_tokens=_int(tokens.get("input_tokens")),
                output_tokens=_int(tokens.get("output_tokens")),
            )
            failed = stop not in ("end_turn", "max_tokens", "max_turn_requests")
            draft = Draft(
                "result",
                text=f"stopped: {stop}" if failed else None,
                is_error=failed,
                usage=usage,
                agent_session_id=self.session_id,
                raw=data,
            )
            return Step(drafts=[draft], close_input=True)
        return Step()

    def _agent_request(self, data: dict[str, Any], method: str) -> Step:
        request_id = data.get("id")
        if method != "session/request_permission":
            error = self.rpc.error(request_id, METHOD_NOT_FOUND, f"arp does not serve {method}")
            return Step(writes=[error])
        params = data.get("params")
        params = params if isinstance(params, dict) else {}
        call = params.get("toolCall")
        call = call if isinstance(call, dict) else {}
        tool_id = call.get("toolCallId") if isinstance(call.get("toolCallId"), str) else None
        name = self._tool_name(call)
        tool_input = call.get("rawInput") or {"title": call.get("title"), "kind": call.get("kind")}
        key = f"acp-{json.dumps(request_id)}"
        self.rpc.asked[key] = (request_id, params)
        drafts = []
        if tool_id is not None and tool_id not in self.tools:
            self.tools[tool_id] = name
            drafts.append(
                Draft("tool_call", tool_name=name, tool_id=tool_id, tool_input=tool_input)
            )
        title = str(call.get("title") or "") or title_of(name, tool_input)
        ask = PermissionAsk(
            key=key,
            tool_name=name,
            tool_input=tool_input,
            title=f"{name}: {title}"[:200] if title != name else name,
            tool_id=tool_id,
        )
        return Step(drafts=drafts, asks=[ask])

    def _update(self, data: dict[str, Any]) -> Step:
        if self.loading:
            return Step()  # the replay of a loaded conversation: stored already
        params = data.get("params")
        update = params.get("update") if isinstance(params, dict) else None
        if not isinstance(update, dict):
            return Step()
        kind = update.get("sessionUpdate")
        if kind == "agent_message_chunk":
            return Step(drafts=[Draft("text", text=_text(update.get("content")))])
        if kind == "agent_thought_chunk":
            return Step(drafts=[Draft("thinking", text=_text(update.get("content")))])
        tool_id = update.get("toolCallId") if isinstance(update.get("toolCallId"), str) else None
        if kind == "tool_call" and tool_id is not None:
            name = self._tool_name(update)
            self.tools[tool_id] = name
            tool_input = update.get("rawInput") or {"title": update.get("title")}
            return Step(
                drafts=[Draft("tool_call", tool_name=name, tool_id=tool_id, tool_input=tool_input)]
            )
        if kind == "tool_call_update" and update.get("status") in ("completed", "failed"):
            return Step(
                drafts=[
                    Draft(
                        "tool_result",
                        tool_id=tool_id,
                        tool_name=self.tools.get(tool_id or ""),
                        text=_text(update.get("content")),
                        is_error=update.get("status") == "failed",
                    )
                ]
            )
        return Step()

    @staticmethod
    def _tool_name(call: dict[str, Any]) -> str:
        """Gemini's tool call ids start with the tool's name (``run_shell_command__…``)."""
        tool_id = call.get("toolCallId")
        if isinstance(tool_id, str) and "__" in tool_id:
            return tool_id.split("__", 1)[0]
        kind = call.get("kind")
        return str(kind) if isinstance(kind, str) and kind else "tool"


def _failed(method: str, data: dict[str, Any]) -> Step:
    """An error answer to one of our requests: the run cannot go on; the CLI's input ends."""
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    text = f"{method} failed: {message or error}"
    return Step(
        drafts=[Draft("error", text=text, raw=data), Draft("result", text=text, is_error=True)],
        close_input=True,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CodexAppServer:
    """Codex's app-server protocol (JSON-RPC; see the module docstring)."""

    def __init__(self, spec: RunSpec) -> None:
        self.cwd = spec.project_path or "."
        self.resume_id = spec.resume_id
        self.model = spec.model
        self.images = spec.images
        """Attached images, sent as ``localImage`` inputs of the turn."""
        self.rpc = JsonRpcClient()
        self.prompt = ""
        self.thread_id: str | None = None
        self.usage = Usage()
        self.items: dict[str, dict[str, Any]] = {}
        """Items started and not completed (their command or changes), by id."""

    def opening(self, prompt: str) -> list[bytes]:
        self.prompt = prompt
        client = {"name": "arp", "title": "ARP", "version": "1"}
        return [self.rpc.request("initialize", {"clientInfo": client})]

    def on_line(self, line: str) -> Step:
        data = _object(line)
        if data is None:
            return Step(drafts=[Draft("text", text=line, raw=line)] if line.strip() else [])
        method = data.get("method")
        if isinstance(method, str):
            if "id" in data:
                return self._server_request(data, method)
            return self._notification(data, method)
        answered = self.rpc.answered(data)
        if answered is None:
            return Step()
        if "error" in data:
            return _failed(answered, data)
        return self._answer(answered, data)

    def start_delay(self, conversation_started: float, now: float) -> float:
        return 0.0

    def answer(self, ask: PermissionAsk, decision: Decision, message: str | None) -> list[bytes]:
        pending = self.rpc.asked.pop(ask.key, None)
        if pending is None:
            return []
        request_id, _ = pending
        return [
            self.rpc.result(
                request_id, {"decision": "accept" if decision == "allow" else "decline"}
            )
        ]

    # ----------------------------------------------------------------------------- internals

    def _thread_params(self) -> dict[str, Any]:
        # untrusted: only known-safe read-only commands run unasked; workspace-write: what a
        # person allows may write in the project (and only there).
        params: dict[str, Any] = {
            "cwd": self.cwd,
            "approvalPolicy": "untrusted",
            "sandbox": "workspace-write",
        }
        if self.model:
            params["model"] = self.model
        return params

    def _answer(self, method: str, data: dict[str, Any]) -> Step:
        result = data.get("result")
        result = result if isinstance(result, dict) else {}
        if method == "initialize":
            initialized = _line({"jsonrpc": "2.0", "method": "initialized"})
            if self.resume_id:
                params = {"threadId": self.resume_id, **self._thread_params()}
                return Step(writes=[initialized, self.rpc.request("thread/resume", params)])
            return Step(
                writes=[initialized, self.rpc.request("thread/start", self._thread_params())]
            )
        if method in ("thread/start", "thread/resume"):
            thread = result.get("thread")
            tid = thread.get("id") if isinstance(thread, dict) else None
            self.thread_id = tid if isinstance(tid, str) else self.resume_id
            turn = {
                "threadId": self.thread_id,
                "input": [
                    {"type": "text", "text": self.prompt},
                    *({"type": "localImage", "path": path} for path in self.images),
                ],
            }
            return Step(
                drafts=[Draft("system", agent_session_id=self.thread_id, raw=_short(data))],
                writes=[self.rpc.request("turn/start", turn)],
            )
        return Step()

    def _server_request(self, data: dict[str, Any], method: str) -> Step:
        request_id = data.get("id")
        params = data.get("params")
        params = params if isinstance(params, dict) else {}
        if method not in (
            "item/commandExecution/requestApproval",
            "item/fileChange/requestApproval",
        ):
            error = self.rpc.error(request_id, METHOD_NOT_FOUND, f"arp does not serve {method}")
            return Step(writes=[error])
        item_id = params.get("itemId") if isinstance(params.get("itemId"), str) else None
        key = f"codex-{json.dumps(request_id)}"
        self.rpc.asked[key] = (request_id, params)
        if method == "item/commandExecution/requestApproval":
            name = "command_execution"
            tool_input: dict[str, Any] = {
                "command": _inner_command(params),
                "cwd": params.get("cwd"),
            }
        else:
            name = "file_change"
            item = self.items.get(item_id or "", {})
            tool_input = {"changes": item.get("changes"), "reason": params.get("reason")}
        ask = PermissionAsk(key, name, tool_input, title_of(name, tool_input), item_id)
        return Step(asks=[ask])

    def _notification(self, data: dict[str, Any], method: str) -> Step:
        params = data.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "item/started":
            return self._item(params.get("item"), started=True)
        if method == "item/completed":
            return self._item(params.get("item"), started=False)
        if method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            total = usage.get("total") if isinstance(usage, dict) else None
            if isinstance(total, dict):
                self.usage = Usage(
                    input_tokens=_int(total.get("inputTokens")),
                    output_tokens=_int(total.get("outputTokens")),
                )
            return Step()
        if method == "error":
            error = params.get("error")
            message = error.get("message") if isinstance(error, dict) else params.get("message")
            return Step(drafts=[Draft("error", text=str(message or "codex reported an error"))])
        if method == "turn/completed":
            turn = params.get("turn")
            turn = turn if isinstance(turn, dict) else {}
            status = turn.get("status")
            error = turn.get("error")
            failed = status != "completed"
            text = None
            if failed:
                text = error.get("message") if isinstance(error, dict) else f"turn {status}"
            draft = Draft(
                "result",
                text=None if text is None else str(text),
                is_error=failed,
                usage=self.usage,
                agent_session_id=self.thread_id,
            )
            return Step(drafts=[draft], close_input=True)
        return Step()

    def _item(self, item: Any, *, started: bool) -> Step:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return Step()
        item_id = item["id"]
        kind = item.get("type")
        if kind == "agentMessage" and not started:
            return Step(drafts=[Draft("text", text=str(item.get("text") or ""))])
        if kind == "reasoning" and not started:
            text = item.get("text") or item.get("summary")
            if isinstance(text, list):
                text = "\n".join(str(part) for part in text)
            return Step(drafts=[Draft("thinking", text=str(text or ""))] if text else [])
        if kind not in ("commandExecution", "fileChange"):
            return Step()
        name = "command_execution" if kind == "commandExecution" else "file_change"
        if started:
            self.items[item_id] = item
            tool_input = (
                {"command": _inner_command(item)}
                if kind == "commandExecution"
                else {"changes": item.get("changes")}
            )
            return Step(
                drafts=[Draft("tool_call", tool_name=name, tool_id=item_id, tool_input=tool_input)]
            )
        self.items.pop(item_id, None)
        status = item.get("status")
        exit_code = item.get("exitCode")
        failed = status != "completed" or (isinstance(exit_code, int) and exit_code != 0)
        text = item.get("aggregatedOutput")
        if text is None:
            text = f"{name} {status}"
        return Step(
            drafts=[
                Draft(
                    "tool_result",
                    tool_name=name,
                    tool_id=item_id,
                    text=str(text),
                    is_error=failed,
                )
            ]
        )


def _inner_command(params: dict[str, Any]) -> str:
    """The command as the model wrote it (Codex wraps it in ``bash -lc``)."""
    actions = params.get("commandActions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        inner = actions[0].get("command")
        if isinstance(inner, str) and inner:
            return inner
    command = params.get("command")
    return " ".join(map(str, command)) if isinstance(command, list) else str(command or "")


def _short(data: dict[str, Any]) -> dict[str, Any]:
    """A thread/start answer without its long lists, kept as the event's raw line."""
    result = data.get("result")
    if not isinstance(result, dict):
        return data
    thread = result.get("thread")
    keep = {
        k: result[k] for k in ("model", "modelProvider", "cwd", "approvalPolicy") if k in result
    }
    if isinstance(thread, dict):
        keep["thread"] = {k: thread[k] for k in ("id", "sessionId") if k in thread}
    return {"id": data.get("id"), "result": keep}
