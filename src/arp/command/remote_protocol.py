"""The remote TCP protocol's core: line framing, requests, responses, answers from agent events.

The protocol of the Agent CLI remote module (docs/remote-protocol.md): one JSON object per line
each way, enums externally tagged as serde writes them (``{"Text": "hi"}``). This module is pure:
no asyncio, no sockets, no files. `arp.command.remote` moves the bytes and runs the agents.

- Lines are cut by `arp.agents.lines.LineFramer` (the splitter agent output uses too), bounded
  by ``max_line``; a longer line is reported once (`Oversize`) and skipped up to its newline, so
  the next line is served.
- `parse_request` turns one line into a `RemoteRequest` or raises `RequestError` (``kind`` is one
  of `ERROR_KINDS`, ``request_id`` echoed when it could be read). Given the server's shared
  secret, a request without the matching ``"token"`` is an ``auth_error`` before any of its
  input (attachments included) is decoded.
- `plan_run` maps a request's config onto a `StartRequest` for one executor (what each executor
  cannot honour is listed in `UNHONOURED`).
- `Answer` gathers a run's normalised events into the response: text chunks, tool calls and
  tool results in order, and the token usage.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from arp.agents.events import Event, Usage
from arp.agents.executors import ASK, EXECUTORS, get_executor
from arp.agents.session_types import StartRequest
from arp.command.remote_config import Defaults as Defaults  # its old home: re-exported
from arp.errors import ArpError

ErrorKind = Literal[
    "parse_error", "processing_error", "timeout_error", "connection_error", "auth_error"
]
ERROR_KINDS: Final = (
    "parse_error",
    "processing_error",
    "timeout_error",
    "connection_error",
    "auth_error",
)

StreamMode = Literal["collect", "incremental"]

MAX_MULTI_ITEMS: Final = 64
"""The most leaf inputs one request may hold (Multi flattened)."""
MAX_MULTI_DEPTH: Final = 8
MAX_REQUEST_ID: Final = 256
"""The longest request_id echoed (characters)."""

TOOLS_OFF_NOTE: Final = "Answer without using any tools."
"""Prepended to the prompt when ``use_tools`` is false and the executor cannot switch tools off."""


class RequestError(ArpError):
    """A request that cannot be served; answered as ``"<kind>: <message>"`` in ``error``."""

    status = 400

    def __init__(self, kind: ErrorKind, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.request_id = request_id


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class TextInput:
    text: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """An image or a file, decoded: written to disk and named in the prompt by its path."""

    kind: Literal["image", "file"]
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Instruction:
    command: str
    parameters: dict[str, Any]


Leaf = TextInput | Attachment | Instruction


@dataclass(frozen=True, slots=True)
class RequestConfig:
    """The original RequestConfig fields plus ARP's per-request overrides (all optional)."""

    max_tool_try: int | None = None
    max_context_num: int | None = None
    max_tokens: int | None = None
    ask_before_tool_execution: bool | None = None
    prompt: str | None = None
    executor: str | None = None
    model: str | None = None
    project_path: str | None = None
    permission_mode: str | None = None
    timeout: float | None = None
    save_files_to: Literal["temp", "project"] = "temp"


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    request_id: str
    inputs: tuple[Leaf, ...]
    """The input flattened in order (a Multi's items, nested ones too)."""
    config: RequestConfig = field(default_factory=RequestConfig)
    stream: bool = False
    stream_mode: StreamMode = "collect"
    use_tools: bool = True

    @property
    def instructions(self) -> list[Instruction]:
        return [leaf for leaf in self.inputs if isinstance(leaf, Instruction)]


def parse_request(
    line: bytes, *, max_attachment_bytes: int, token: str | None = None
) -> RemoteRequest:
    """One request line → a `RemoteRequest`; anything wrong is a `RequestError`.

    With ``token`` (the server's ``--remote-token``) the request must carry it as ``"token"``.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("parse_error", f"the line is not valid UTF-8: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RequestError("parse_error", f"Failed to parse request: {exc}") from None
    except RecursionError:
        # Deep nesting ("[[[[…") exhausts the decoder's recursion limit, not a ValueError.
        raise RequestError(
            "parse_error", "Failed to parse request: JSON nested too deeply"
        ) from None
    if not isinstance(data, dict):
        raise RequestError("parse_error", "a request must be a JSON object")
    raw_id = data.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_REQUEST_ID else None
    if token is not None and not token_matches(data.get("token"), token):
        raise RequestError(
            "auth_error",
            'this server needs its shared secret in the request\'s "token" field '
            "(missing or wrong); the request was not run",
            request_id,
        )
    try:
        if request_id is None:
            raise ValueError(
                f"'request_id' is required: a string of at most {MAX_REQUEST_ID} characters"
            )
        if "input" not in data:
            raise ValueError("'input' is required")
        budget = [max_attachment_bytes]
        inputs = tuple(_flatten(data["input"], 0, budget))
        if len(inputs) > MAX_MULTI_ITEMS:
            raise ValueError(f"a Multi input holds at most {MAX_MULTI_ITEMS} items")
        kinds = {type(leaf) for leaf in inputs}
        if Instruction in kinds and len(kinds) > 1:
            raise ValueError("an Instruction cannot be combined with other input in a Multi")
        stream = _opt_bool(data, "stream", False)
        mode = data.get("stream_mode", "collect")
        if mode not in ("collect", "incremental"):
            raise ValueError('\'stream_mode\' must be "collect" or "incremental"')
        return RemoteRequest(
            request_id=request_id,
            inputs=inputs,
            config=_config(data.get("config")),
            stream=stream or mode == "incremental",
            stream_mode=mode,
            use_tools=_opt_bool(data, "use_tools", True),
        )
    except ValueError as exc:
        raise RequestError("parse_error", str(exc), request_id) from None


def token_matches(given: Any, expected: str) -> bool:
    """Whether ``given`` is the shared secret, compared in constant time."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def request_size(request: RemoteRequest) -> int:
    """Roughly the bytes a parsed request holds: its decoded attachments and its texts."""
    size = 0
    for leaf in request.inputs:
        if isinstance(leaf, Attachment):
            size += len(leaf.data)
        elif isinstance(leaf, TextInput):
            size += len(leaf.text)
    return size


class MemoryBudget:
    """One count of bytes that every connection's lines and requests draw from and return to.

    `take` never waits: what does not fit now is refused, and the caller answers at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if size > self.limit - self.used:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


def _opt_bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false")
    return value


def _flatten(value: Any, depth: int, budget: list[int]) -> list[Leaf]:
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            "an input must be an object with one key: Text, Image, Instruction, File or Multi"
        )
    ((tag, body),) = value.items()
    if tag == "Text":
        if not isinstance(body, str):
            raise ValueError("'Text' must be a string")
        return [TextInput(body)]
    if tag == "Image":
        if not isinstance(body, dict):
            raise ValueError("'Image' must be an object with 'data' (base64) and 'mime_type'")
        mime = body.get("mime_type") or "image/png"
        if not isinstance(mime, str):
            raise ValueError("'Image.mime_type' must be a string")
        data = _base64(body.get("data"), "Image.data", budget)
        return [Attachment("image", "", mime, data)]
    if tag == "File":
        if not isinstance(body, dict):
            raise ValueError("'File' must be an object with 'filename', 'content_type', 'data'")
        filename = body.get("filename")
        if not isinstance(filename, str) or not safe_filename(filename):
            raise ValueError("'File.filename' must be a plain file name (no folders, not empty)")
        content_type = body.get("content_type") or "application/octet-stream"
        if not isinstance(content_type, str):
            raise ValueError("'File.content_type' must be a string")
        data = _base64(body.get("data"), "File.data", budget)
        return [Attachment("file", safe_filename(filename), content_type, data)]
    if tag == "Instruction":
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise ValueError("'Instruction' must be an object with a 'command' string")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError("'Instruction.parameters' must be an object")
        return [Instruction(body["command"].strip(), parameters)]
    if tag == "Multi":
        if not isinstance(body, list):
            raise ValueError("'Multi' must be a list of inputs")
        if depth >= MAX_MULTI_DEPTH:
            raise ValueError(f"Multi inputs nest at most {MAX_MULTI_DEPTH} deep")
        leaves: list[Leaf] = []
        for item in body:
            leaves.extend(_flatten(item, depth + 1, budget))
            if len(leaves) > MAX_MULTI_ITEMS:
                raise ValueError(f"a Multi input holds at most {MAX_MULTI_ITEMS} items")
        return leaves
    raise ValueError(f"unknown input type {tag!r}: use Text, Image, Instruction, File or Multi")


def _base64(value: Any, name: str, budget: list[int]) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a base64 string")
    if len(value) * 3 // 4 > budget[0]:
        raise ValueError(f"attachments exceed {budget[0]} bytes in this request")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"'{name}' is not valid base64") from None
    budget[0] -= len(data)
    return data


def safe_filename(name: str) -> str:
    """``name`` when it is a plain file name ('' otherwise): no folders, no dot names, no NUL."""
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return ""
    return name[:200]


_CONFIG_INTS: Final = ("max_tool_try", "max_context_num", "max_tokens")
_CONFIG_STRS: Final = ("prompt", "executor", "model", "project_path", "permission_mode")


def _config(value: Any) -> RequestConfig:
    if value is None:
        return RequestConfig()
    if not isinstance(value, dict):
        raise ValueError("'config' must be an object")
    values: dict[str, Any] = {}
    for name in _CONFIG_INTS:
        item = value.get(name)
        if item is not None:
            if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise ValueError(f"'config.{name}' must be a whole number of at least 0")
            values[name] = item
    for name in _CONFIG_STRS:
        item = value.get(name)
        if item is not None:
            if not isinstance(item, str):
                raise ValueError(f"'config.{name}' must be a string")
            if item.strip():
                values[name] = item
    ask = value.get("ask_before_tool_execution")
    if ask is not None:
        if not isinstance(ask, bool):
            raise ValueError("'config.ask_before_tool_execution' must be true or false")
        values["ask_before_tool_execution"] = ask
    timeout = value.get("timeout")
    if timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError("'config.timeout' must be a number of seconds above 0")
        values["timeout"] = float(timeout)
    save = value.get("save_files_to")
    if save is not None:
        if save not in ("temp", "project"):
            raise ValueError('\'config.save_files_to\' must be "temp" or "project"')
        values["save_files_to"] = save
    return RequestConfig(**values)


# ---------------------------------------------------------------------------------------------
# Mapping a request onto an executor


UNHONOURED: Final[dict[str, tuple[str, ...]]] = {
    name: (() if "max_turns" in executor.options else ("max_tool_try",))
    + ("max_context_num", "max_tokens")
    for name, executor in EXECUTORS.items()
}
"""RequestConfig fields each executor has no option for (accepted and ignored): read from the
executors table (``max_tool_try`` needs ``max_turns``; no CLI caps context or tokens)."""


def plan_run(request: RemoteRequest, prompt: str, defaults: Defaults) -> StartRequest:
    """The `StartRequest` for this request's prompt on the chosen executor.

    - ``max_tool_try`` N → Claude ``--max-turns N+1`` (N tool rounds, then the answer).
    - ``ask_before_tool_execution`` true → permission mode ``ask``: each tool use the agent
      would prompt for waits for the peer (or a person) to decide it (`approval_line`, the
      ``decide_approval`` Instruction); false → ``acceptEdits`` (codex ``workspace-write``,
      gemini ``auto_edit``). ``config.permission_mode`` wins over both.
    - ``prompt`` → Claude ``--append-system-prompt``; others: put before the prompt.
    - ``use_tools`` false → Claude ``--tools ""``; codex read-only sandbox; gemini approval mode
      ``default`` (tools needing approval are denied), and the prompt asks for no tools.
    """
    config = request.config
    try:
        executor = get_executor(config.executor or defaults.executor)
    except ArpError as exc:
        raise RequestError("processing_error", exc.message, request.request_id) from None
    options = executor.options
    permission = config.permission_mode
    if permission is None and config.ask_before_tool_execution is not None:
        permission = ASK if config.ask_before_tool_execution else "acceptEdits"
    if permission is None:
        permission = defaults.permission_mode
    no_tools = not request.use_tools and "no_tools" in options
    if not request.use_tools and "no_tools" not in options:
        permission = "plan"  # codex: read-only sandbox; gemini: approvals denied headless
        prompt = f"{TOOLS_OFF_NOTE}\n\n{prompt}"
    system = config.prompt
    append_system_prompt = None
    if system is not None:
        if "append_system_prompt" in options:
            append_system_prompt = system
        else:
            prompt = f"{system}\n\n{prompt}"
    max_turns = None
    if config.max_tool_try is not None and "max_turns" in options:
        max_turns = config.max_tool_try + 1
    return StartRequest(
        executor=executor.name,
        prompt=prompt,
        model=config.model or defaults.model,
        project_path=config.project_path or defaults.project_path,
        permission_mode=permission,
        no_tools=no_tools,
        max_turns=max_turns,
        append_system_prompt=append_system_prompt,
    )


def attachment_note(attachment: Attachment, path: str) -> str:
    """How an attachment is named in the prompt."""
    what = "Image" if attachment.kind == "image" else "File"
    return (
        f"[{what} attached: {path} ({attachment.content_type}, {len(attachment.data)} bytes); "
        "read it from that path]"
    )


IMAGE_SUFFIXES: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/svg+xml": ".svg",
}


def image_filename(index: int, mime_type: str) -> str:
    return f"image-{index}{IMAGE_SUFFIXES.get(mime_type.lower(), '.img')}"


# ---------------------------------------------------------------------------------------------
# Responses


def response_line(
    request_id: str | None,
    response: dict[str, Any],
    *,
    error: str | None = None,
    usage: Usage | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One RemoteResponse as a line of UTF-8 JSON with its newline."""
    out: dict[str, Any] = {
        "request_id": request_id,
        "response": response,
        "error": error,
        "token_usage": token_usage(usage),
    }
    if extra:
        out.update(extra)
    return (json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def error_line(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    return response_line(request_id, {"Text": ""}, error=f"{kind}: {message}")


def token_usage(usage: Usage | None) -> dict[str, int] | None:
    if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class Answer:
    """Gathers a run's events into a ResponseContent.

    Text chunks keep their order; a chunk that starts a new message (not a Gemini delta right
    after another) carries a ``\\n\\n`` in front, so the chunks joined are the answer's text.
    `feed` returns the pieces worth sending at once in incremental mode.
    """

    def __init__(self, executor: str, *, stream: bool) -> None:
        self.deltas = executor == "gemini"
        self.stream = stream
        self.chunks: list[str] = []
        self.tools: list[dict[str, Any]] = []
        self.result_text: str | None = None
        self.errors: list[str] = []
        self._last_text = False

    def feed(self, event: Event) -> list[dict[str, Any]]:
        kind = event.kind
        if kind == "text" and event.text:
            text = event.text
            if self.chunks and not (self.deltas and self._last_text):
                text = "\n\n" + text
            self.chunks.append(text)
            self._last_text = True
            return [{"Stream": [text]}]
        if kind in ("tool_call", "tool_result"):
            self._last_text = False
            item = (
                {"ToolCall": {"name": event.tool_name or "", "arguments": _args(event.tool_input)}}
                if kind == "tool_call"
                else {"ToolResult": {"name": event.tool_name or "", "result": event.text or ""}}
            )
            self.tools.append(item)
            return [item]
        if kind == "result" and event.text and not event.is_error:
            self.result_text = event.text
        elif kind == "error" and event.text:
            self.errors.append(event.text)
        return []

    @property
    def text(self) -> str:
        if self.chunks:
            return "".join(self.chunks)
        return self.result_text or ""

    def content(self) -> dict[str, Any]:
        """The whole answer: Text or Stream, after the tool calls and results when there were."""
        if self.stream:
            chunks = self.chunks or ([self.result_text] if self.result_text else [])
            body: dict[str, Any] = {"Stream": chunks}
        else:
            body = {"Text": self.text}
        if self.tools:
            return {"Multi": [*self.tools, body]}
        return body


def approval_line(request_id: str, session_id: str, event: Event) -> bytes:
    """A pending approval (ask mode) as a line the peer can answer: a ``ToolCall`` whose
    ``approval`` says which one; the peer decides it with the ``decide_approval`` Instruction."""
    approval = event.approval or {}
    return response_line(
        request_id,
        {"ToolCall": {"name": event.tool_name or "", "arguments": _args(event.tool_input)}},
        extra={
            "session_id": session_id,
            "done": False,
            "approval": {
                "approval_id": approval.get("approval_id"),
                "title": event.text,
                "expires_at": approval.get("expires_at"),
            },
        },
    )


def _args(value: Any) -> Any:
    return {} if value is None else value
