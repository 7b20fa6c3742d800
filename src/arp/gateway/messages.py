"""The gateway's WebSocket messages and their acknowledgement rules — pure code, no I/O.

Rules (docs/gateway.md has the full protocol):

- Every message is one JSON object in one text frame, with a non-empty string `message_id` and a
  `type`. A message without `message_id` is dropped (counted, logged) and never processed.
- `task`, `task_cancel` (gateway → agent) and `log`, `status`, `result` (agent → gateway) are
  *reliable*: the sender keeps each in its `Outbox` until an `ack` naming its id arrives, and sends
  it again after a reconnect. The receiver acks only after it has durably handled the message, and
  drops a repeat by `message_id` (a `DedupWindow` here, plus Redis on the gateway). Message ids
  are unique per agent, not globally (the gateway keys its window by agent and message id).
- `heartbeat` and `ack` are never acknowledged themselves.
- Ids of reliable agent messages are derived from what they describe (`<task>:log:<seq>`,
  `<task>:result`), so an agent that restarted and replays a task's events produces the same ids,
  and the gateway's duplicate check drops what it already wrote.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from arp.errors import RemoteProtocolError
from arp.protocol.json_depth import check_json_depth

HEARTBEAT: Final = "heartbeat"
TASK: Final = "task"
TASK_CANCEL: Final = "task_cancel"
LOG: Final = "log"
STATUS: Final = "status"
RESULT: Final = "result"
ACK: Final = "ack"

TO_AGENT = frozenset({TASK, TASK_CANCEL, ACK})
FROM_AGENT = frozenset({HEARTBEAT, LOG, STATUS, RESULT, ACK})
RELIABLE = frozenset({TASK, TASK_CANCEL, LOG, STATUS, RESULT})
KNOWN = TO_AGENT | FROM_AGENT

MAX_ID_LENGTH = 200
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Task ids name files on the agent and parts of URLs: letters, digits, '.', '_', '-' only."""
MAX_ACK_IDS = 1000

TASK_STATES = frozenset(
    {"queued", "running", "completed", "failed", "cancelled", "offline", "online"}
)


class DroppedMessage(RemoteProtocolError):
    """A message that is not processed; `reason` is the metrics label."""

    def __init__(self, reason: str, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message_id = message_id
        """The dropped message's id when it had a usable one: the receiver acks it, so the sender
        stops resending a message that can never be processed."""


def new_message_id() -> str:
    return uuid.uuid4().hex


def log_id(task_id: str, seq: int) -> str:
    return f"{task_id}:log:{seq}"


def status_id(task_id: str, state: str) -> str:
    return f"{task_id}:status:{state}"


def result_id(task_id: str) -> str:
    return f"{task_id}:result"


def task_message_id(task_id: str) -> str:
    """A task's message id is its task id: a control plane that posts it twice sends it once."""
    return f"task:{task_id}"


def cancel_message_id(task_id: str) -> str:
    return f"cancel:{task_id}"


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _require_str(message: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = message.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise DroppedMessage("bad_field", f"{message.get('type')}: {key} must be a string")
    if len(value) > MAX_ID_LENGTH and key.endswith("id"):
        raise DroppedMessage("bad_field", f"{key} is longer than {MAX_ID_LENGTH} characters")
    return value


def check_task_id(value: object) -> str:
    """A task id, or `RemoteProtocolError` saying what a task id may hold."""
    if not isinstance(value, str) or not TASK_ID.fullmatch(value):
        raise RemoteProtocolError(
            "task_id must be 1..128 of letters, digits, '.', '_' or '-' (starting with one "
            "of the first two)"
        )
    return value


def _require_int(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DroppedMessage("bad_field", f"{message.get('type')}: {key} must be a whole number")
    return value


def parse(raw: str | bytes, *, allowed: frozenset[str]) -> dict[str, Any]:
    """One received frame → a checked message, or `DroppedMessage` saying why it is dropped."""
    try:
        check_json_depth(raw)  # deep nesting would raise RecursionError, not ValueError
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DroppedMessage("bad_json", "the frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise DroppedMessage("bad_json", "a message must be a JSON object")
    message_id = message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise DroppedMessage("missing_message_id", "a message without message_id is dropped")
    if len(message_id) > MAX_ID_LENGTH:
        raise DroppedMessage("bad_field", f"message_id is longer than {MAX_ID_LENGTH} characters")
    try:
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in KNOWN:
            raise DroppedMessage("unknown_type", f"unknown message type {kind!r}")
        if kind not in allowed:
            raise DroppedMessage("unexpected_type", f"{kind!r} is not sent in this direction")
        _validate(kind, message)
    except DroppedMessage as exc:
        exc.message_id = message_id
        raise
    return message


def too_large(raw: str, max_bytes: int) -> DroppedMessage:
    """The drop of a frame over the message limit, with its id if one can be read (to ack it)."""
    message_id: str | None = None
    try:
        check_json_depth(raw)
        message = json.loads(raw)
    except ValueError:
        message = None
    if isinstance(message, dict):
        found = message.get("message_id")
        if isinstance(found, str) and found and len(found) <= MAX_ID_LENGTH:
            message_id = found
    return DroppedMessage("too_large", f"a message is larger than {max_bytes} bytes", message_id)


def oversize(raw: str, max_bytes: int) -> bool:
    """Whether a received text frame is over `max_bytes` encoded (cheap when clearly not)."""
    return len(raw) > max_bytes or (4 * len(raw) > max_bytes and len(raw.encode()) > max_bytes)


def _validate(kind: str, message: dict[str, Any]) -> None:
    if kind == ACK:
        ids = message.get("ack_ids")
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > MAX_ACK_IDS
            or not all(isinstance(i, str) and i for i in ids)
        ):
            raise DroppedMessage("bad_field", f"ack: ack_ids must be 1..{MAX_ACK_IDS} strings")
    elif kind == LOG:
        _require_str(message, "task_id")
        if _require_int(message, "seq") < 0:
            raise DroppedMessage("bad_field", "log: seq must not be negative")
        _require_str(message, "data", allow_empty=True)
        stream = message.setdefault("stream", "stdout")
        if not isinstance(stream, str):
            raise DroppedMessage("bad_field", "log: stream must be a string")
    elif kind == STATUS:
        _require_str(message, "task_id")
        _require_str(message, "state")
    elif kind == RESULT:
        _require_str(message, "task_id")
        _require_int(message, "exit_code")
        text = message.setdefault("text", "")
        if not isinstance(text, str):
            raise DroppedMessage("bad_field", "result: text must be a string")
    if kind in (TASK, TASK_CANCEL, LOG, STATUS, RESULT):
        try:
            check_task_id(message.get("task_id"))
        except RemoteProtocolError as exc:
            raise DroppedMessage("bad_field", exc.message) from None


def ack(ids: Iterable[str]) -> dict[str, Any]:
    return {"type": ACK, "message_id": new_message_id(), "ack_ids": list(ids)}


def heartbeat(now: float, running: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": HEARTBEAT, "message_id": new_message_id(), "ts": now, "running": list(running)}


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What the control plane asks an agent to run."""

    task_id: str
    executor: str
    prompt: str
    project_path: str = ""
    model: str = ""
    options: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: object) -> TaskSpec:
        """Validate a task body (from HTTP or a `task` message); `RemoteProtocolError` if bad."""
        if not isinstance(data, dict):
            raise RemoteProtocolError("a task must be a JSON object")
        task_id = check_task_id(data.get("task_id"))
        executor = data.get("executor", "claude")
        prompt = data.get("prompt")
        if not isinstance(executor, str) or not executor:
            raise RemoteProtocolError("executor must be a non-empty string")
        if not isinstance(prompt, str):
            raise RemoteProtocolError("prompt must be a string")
        project = data.get("project_path", "") or ""
        model = data.get("model", "") or ""
        options = data.get("options")
        if not isinstance(project, str) or not isinstance(model, str):
            raise RemoteProtocolError("project_path and model must be strings")
        if options is not None and not isinstance(options, dict):
            raise RemoteProtocolError("options must be a JSON object")
        return cls(task_id, executor, prompt, project, model, options)

    def to_message(self) -> dict[str, Any]:
        return {
            "type": TASK,
            "message_id": task_message_id(self.task_id),
            "task_id": self.task_id,
            "executor": self.executor,
            "prompt": self.prompt,
            "project_path": self.project_path,
            "model": self.model,
            "options": self.options or {},
        }


def task_cancel(task_id: str) -> dict[str, Any]:
    return {"type": TASK_CANCEL, "message_id": cancel_message_id(task_id), "task_id": task_id}


def log(task_id: str, seq: int, data: str, stream: str = "stdout") -> dict[str, Any]:
    return {
        "type": LOG,
        "message_id": log_id(task_id, seq),
        "task_id": task_id,
        "seq": seq,
        "stream": stream,
        "data": data,
    }


def status(task_id: str, state: str, detail: str = "") -> dict[str, Any]:
    return {
        "type": STATUS,
        "message_id": status_id(task_id, state),
        "task_id": task_id,
        "state": state,
        "detail": detail,
    }


def result(
    task_id: str, exit_code: int, text: str, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": RESULT,
        "message_id": result_id(task_id),
        "task_id": task_id,
        "exit_code": exit_code,
        "text": text,
        "usage": usage or {},
    }


def stream_fields(agent_id: str, message: dict[str, Any], now: float) -> dict[str, str]:
    """The flat string fields of one Redis Stream entry for a log, status or result."""
    fields = {
        "agent_id": agent_id,
        "task_id": str(message["task_id"]),
        "message_id": str(message["message_id"]),
        "ts": f"{now:.6f}",
    }
    kind = message["type"]
    if kind == LOG:
        fields.update(seq=str(message["seq"]), stream=message["stream"], data=message["data"])
    elif kind == STATUS:
        fields.update(state=message["state"], detail=str(message.get("detail", "")))
    elif kind == RESULT:
        fields.update(
            exit_code=str(message["exit_code"]),
            text=message["text"],
            usage=json.dumps(message.get("usage") or {}, separators=(",", ":")),
        )
    return fields


def encoded_size(message: dict[str, Any]) -> int:
    """Bytes of `message` on the wire (the size a receiver's message limit is checked against)."""
    return len(encode(message).encode("utf-8", "surrogatepass"))


def largest_fitting(
    build: Callable[[int], dict[str, Any]], length: int, max_bytes: int
) -> dict[str, Any] | None:
    """`build(n)` for the largest n in 0..length whose encoding fits `max_bytes` (None: not even
    n = 0 fits). `build` must grow with n; a binary search, so ~log2(length) encodings."""
    if encoded_size(build(0)) > max_bytes:
        return None
    low, high = 0, length
    while low < high:
        middle = (low + high + 1) // 2
        if encoded_size(build(middle)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return build(low)


_TRUNCATABLE = {LOG: "data", STATUS: "detail", RESULT: "text"}


def fit(message: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """`message`, or a copy whose free text (log `data`, status `detail`, result `text`) is cut
    so the encoded message is at most `max_bytes`, marked `"truncated": true`. Cutting counts
    encoded bytes, not characters: 4-byte emoji and escaped quotes take what they take.
    A message that cannot be made to fit (its other fields alone are too large) raises
    `DroppedMessage("too_large")`: sending it would only be refused, again and again."""
    if encoded_size(message) <= max_bytes:
        return message
    field = _TRUNCATABLE.get(message.get("type", ""))
    value = message.get(field, "") if field else ""
    if field is not None and isinstance(value, str):
        base = dict(message, truncated=True)
        if message.get("type") == RESULT and encoded_size(dict(base, text="")) > max_bytes:
            base["usage"] = {}  # a usage object too large to send is the first thing to go

        def build(n: int) -> dict[str, Any]:
            return dict(base, **{field: value[:n]})

        fitted = largest_fitting(build, len(value), max_bytes)
        if fitted is not None:
            return fitted
    raise DroppedMessage(
        "too_large", f"{message.get('type')} {message.get('message_id')} exceeds {max_bytes} bytes"
    )


class DedupWindow:
    """The last `size` message ids seen, for dropping repeats; oldest forgotten first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a dedup window holds at least one id")
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: str) -> None:
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


@dataclass(slots=True)
class _Pending:
    message: dict[str, Any]
    sent_at: float | None
    attempts: int = 0


class Outbox:
    """Reliable messages sent and not yet acknowledged, in send order, bounded.

    `sent_at` is None for a message not yet written on the current connection; `due(now)` gives
    what must be (re)written: everything unsent plus what waited longer than `retry_after`.
    """

    def __init__(self, capacity: int, retry_after: float) -> None:
        self.capacity = capacity
        self.retry_after = retry_after
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._pending

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.capacity

    def add(self, message: dict[str, Any]) -> bool:
        """Keep `message` until acked; False (and nothing kept) if its id is already waiting."""
        message_id = message["message_id"]
        if message_id in self._pending:
            return False
        self._pending[message_id] = _Pending(message, None)
        return True

    def acked(self, ids: Iterable[str]) -> int:
        """Forget acknowledged ids; returns how many were waiting."""
        count = 0
        for message_id in ids:
            if self._pending.pop(message_id, None) is not None:
                count += 1
        return count

    def disconnected(self) -> None:
        """Everything waiting must be written again on the next connection."""
        for pending in self._pending.values():
            pending.sent_at = None

    def due(self, now: float) -> Iterator[tuple[dict[str, Any], bool]]:
        """(message, is_redelivery) for each message to write now, marking it sent at `now`."""
        for pending in self._pending.values():
            if pending.sent_at is None or now - pending.sent_at >= self.retry_after:
                pending.sent_at = now
                pending.attempts += 1
                yield pending.message, pending.attempts > 1

    def messages(self) -> list[dict[str, Any]]:
        return [pending.message for pending in self._pending.values()]
