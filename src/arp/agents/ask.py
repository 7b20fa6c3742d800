"""Ask mode: talking to an agent CLI over its stdio protocol so that a person decides tool uses.

A run started with ``permissionMode: "ask"`` keeps the CLI's stdin open and speaks the CLI's own
protocol over it. An `AskProtocol` (one per run) is pure: it turns each line the CLI prints into
a `Step` (the normalised events to keep, the permission requests to put to a person, the lines
to write back, whether the CLI's input is done) and turns a decision into the answer lines. The
session manager moves the bytes and keeps the approvals (`arp.agents.approvals`).

Claude Code (``claude -p --input-format stream-json --output-format stream-json --verbose
--permission-prompt-tool stdio``), as driven against the real CLI (2.1.197):

- We write an ``initialize`` control request first, then the prompt as a ``user`` message:
  ``{"type":"control_request","request_id":"arp-init","request":{"subtype":"initialize"}}``.
  Without the initialize the CLI never asks and silently denies.
- A tool use its rules would prompt for arrives as ``{"type":"control_request","request_id":R,
  "request":{"subtype":"can_use_tool","tool_name","input","tool_use_id","description",…}}`` and
  waits for ``{"type":"control_response","response":{"subtype":"success","request_id":R,
  "response":{"behavior":"allow","updatedInput":…}}}`` or ``…{"behavior":"deny","message":…}``.
  A denied tool's result is the message (``is_error``); the turn goes on.
- Every ``control_response`` the CLI prints (the answer to initialize) is protocol, not output.
  Any other control request is answered with an error (ARP offers no hooks or MCP over stdio).
- Attachments (also outside ask mode, `arp.agents.argv.claude_stream_input`): each image is an
  ``image`` content block (``source``: base64, ``media_type``) before the prompt's text block;
  without ``--permission-prompt-tool`` no ``can_use_tool`` request comes.
- Its other lines are the ordinary stream-json events (`arp.agents.events.ClaudeParser`). Once
  the ``result`` line comes, stdin is closed and the CLI exits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from arp.agents.argv import RunSpec
from arp.agents.attachments import StoredAttachment, read_base64
from arp.agents.events import ClaudeParser, Draft

Decision = Literal["allow", "deny"]
"""A person's answer (`arp.agents.approvals` keeps who gave it and when)."""

TITLE_CHARS: Final = 200
"""The longest approval title (the command or file it is about, cut)."""


@dataclass(frozen=True, slots=True)
class PermissionAsk:
    """A CLI's request to use a tool, waiting for an answer."""

    key: str
    """The protocol's own id for it (what the answer must name)."""
    tool_name: str
    tool_input: Any
    title: str
    tool_id: str | None = None


@dataclass(slots=True)
class Step:
    """What one line of the CLI's output means in ask mode."""

    drafts: list[Draft] = field(default_factory=list)
    asks: list[PermissionAsk] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)
    close_input: bool = False


class AskProtocol(Protocol):
    """One run's side of a CLI's ask protocol (pure: lines in, lines out)."""

    def opening(self, prompt: str) -> list[bytes]:
        """The lines to write as the run starts (handshake, then the prompt)."""
        ...

    def on_line(self, line: str) -> Step: ...

    def answer(self, ask: PermissionAsk, decision: Decision, message: str | None) -> list[bytes]:
        """The lines that give the CLI a decision."""
        ...

    def start_delay(self, conversation_started: float, now: float) -> float:
        """Seconds a follow-up must wait before the CLI starts (0: none; a CLI's quirk)."""
        ...


def title_of(tool_name: str, tool_input: Any) -> str:
    """A short human title: the command a shell tool runs, the file an edit touches, else the
    tool's name."""
    if isinstance(tool_input, dict):
        for key in ("command", "cmd", "file_path", "path", "url", "pattern"):
            value = tool_input.get(key)
            if isinstance(value, list):
                value = " ".join(str(part) for part in value)
            if isinstance(value, str) and value.strip():
                return f"{tool_name}: {value.strip()}"[:TITLE_CHARS]
    return tool_name[:TITLE_CHARS]


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class ClaudeAsk:
    """Claude Code's stream-json control protocol (see the module docstring)."""

    INIT_ID: Final = "arp-init"

    def __init__(self, spec: RunSpec) -> None:
        # The options are on the command line already; the prompt comes with `opening`.
        self.parser = ClaudeParser()
        self.attachments = spec.attachments

    def opening(self, prompt: str) -> list[bytes]:
        return [
            _line(
                {
                    "type": "control_request",
                    "request_id": self.INIT_ID,
                    "request": {"subtype": "initialize"},
                }
            ),
            _line(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": claude_content(prompt, self.attachments),
                    },
                    "parent_tool_use_id": None,
                    "session_id": "",
                }
            ),
        ]

    def on_line(self, line: str) -> Step:
        if '"control_' not in line and '"result"' not in line:
            return Step(drafts=self.parser.parse_line(line))  # the common case, parsed once
        data = _object(line)
        kind = data.get("type") if data is not None else None
        if data is None or kind not in ("control_request", "control_response", "result"):
            return Step(drafts=self.parser.parse_line(line))
        if kind == "control_response":
            return Step()
        if kind == "result":
            return Step(drafts=self.parser.parse_line(line), close_input=True)
        request_id = data.get("request_id")
        request = data.get("request")
        if not isinstance(request_id, str) or not isinstance(request, dict):
            return Step(drafts=self.parser.parse_line(line))
        if request.get("subtype") != "can_use_tool":
            error = f"arp does not serve {request.get('subtype')!r} requests"
            return Step(writes=[_response(request_id, None, error)])
        tool_name = str(request.get("tool_name") or "tool")
        tool_input = request.get("input")
        tool_id = request.get("tool_use_id")
        return Step(
            asks=[
                PermissionAsk(
                    key=request_id,
                    tool_name=tool_name,
                    tool_input=tool_input,
                    title=title_of(tool_name, tool_input),
                    tool_id=tool_id if isinstance(tool_id, str) else None,
                )
            ]
        )

    def start_delay(self, conversation_started: float, now: float) -> float:
        return 0.0

    def answer(self, ask: PermissionAsk, decision: Decision, message: str | None) -> list[bytes]:
        if decision == "allow":
            body: dict[str, Any] = {"behavior": "allow", "updatedInput": ask.tool_input or {}}
        else:
            body = {"behavior": "deny", "message": message or "denied by the person"}
        return [_response(ask.key, body, None)]


def claude_content(prompt: str, attachments: tuple[StoredAttachment, ...]) -> list[dict[str, Any]]:
    """A user message's content: each image as an image block (base64), then the prompt (which
    names every attachment's path; text files are read by the agent's own tools)."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": item.content_type,
                "data": read_base64(item),
            },
        }
        for item in attachments
        if item.is_image
    ]
    blocks.append({"type": "text", "text": prompt})
    return blocks


def _response(request_id: str, body: dict[str, Any] | None, error: str | None) -> bytes:
    if error is not None:
        response: dict[str, Any] = {"subtype": "error", "request_id": request_id, "error": error}
    else:
        response = {"subtype": "success", "request_id": request_id, "response": body}
    return _line({"type": "control_response", "response": response})


def _object(line: str) -> dict[str, Any] | None:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
