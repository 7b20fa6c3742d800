"""The control protocol between arps and arpc: messages and their framing (no I/O here).

Rules:
- A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
- The JSON is externally tagged, as serde encodes a Rust enum: ``{"Register": {"client_id": "x"}}``.
  A bare string ``"Heartbeat"`` is read as that type with its fields' defaults (serde's unit form).
- The length is checked against the maximum before any of the body is buffered.
- Unknown fields are ignored; a missing required field, a field of the wrong type, an unknown type,
  bad JSON, bad UTF-8, an oversize frame or JSON nested past `Limits.max_json_depth` (checked
  before decoding, so no decoder recursion blows up) is a `RemoteProtocolError` naming what
  was wrong.

Conversation:
- control link (arpc → arps control port): ``Register`` → ``RegisterResult``; then the relay sends
  ``RequestNewProxyConn`` whenever it wants a tunnel (a client at its bound answers
  ``ProxyConnRefused`` when the relay announced ``max_tunnels``), and both sides send ``Heartbeat``
  every interval (a link silent past the timeout is dead). The relay may send ``Error`` before
  it closes a link it will not serve.
- tunnel (arpc → arps proxy port): ``NewProxyConn`` announces which request it answers; the tunnel
  then idles in the relay's pool until a public connection takes it, at which point the relay
  sends ``StartProxy`` (which local target), and the connection's bytes follow in both
  directions as data frames (`arp.net.pump`): a 4-byte big-endian length and that many bytes,
  length 0 ending the direction. Once both directions have ended so, the tunnel is idle again:
  the relay pools it and may send the next ``StartProxy`` on it.
"""

from __future__ import annotations

import json
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union

from arp.errors import LocalProtocolError, RemoteProtocolError
from arp.protocol.json_depth import JsonTooDeep, check_json_depth

HEADER = struct.Struct(">I")
TUNNEL_PROTOCOL = 2
"""How a tunnel carries a connection's bytes after StartProxy: 1, raw until the tunnel closes
(one connection per tunnel); 2, data frames ending in an end frame (the tunnel is reused).
Both ends must speak the same one, so Register and RegisterResult state theirs."""
DEFAULT_MAX_FRAME = 64 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every control message; `TYPE` is its tag on the wire."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class Register(Message):
    """arpc → arps: claim `client_id` on this control link."""

    TYPE: ClassVar[str] = "Register"
    client_id: str
    auth_token: str | None = None
    """The relay's shared secret, when it demands one (`arps --auth-token`)."""
    resume_key: str | None = None
    """Proof that this is the same client instance as a live registration (takes it over)."""
    tcp_ports: list[int] = field(default_factory=list)
    """Dedicated public TCP ports asked for, forwarded to the client's local service."""
    version: str | None = None
    tunnel_protocol: int = 1
    """`TUNNEL_PROTOCOL` of the client; absent means 1 (clients before reusable tunnels)."""
    forwarded_headers: bool = True
    """Whether the relay should add X-Forwarded-* headers to this client's HTTP requests
    (`arpc --no-forwarded-headers`: False). Relays before it ignore the field."""
    proxy_protocol: bool = False
    """Whether the relay should start each connection to this client's raw TCP ports with a
    PROXY protocol v2 header (`arpc --proxy-protocol`). Relays before it ignore the field."""
    access_token_hashes: list[str] = field(default_factory=list)
    """Hex SHA-256 of each access token (`arpc --access-token`): when any is given, only those
    tokens route to this client. The tokens themselves never leave arpc."""


@dataclass(frozen=True, slots=True)
class RegisterResult(Message):
    """arps → arpc: the answer to `Register`."""

    TYPE: ClassVar[str] = "RegisterResult"
    success: bool
    error: str | None = None
    retryable: bool = True
    """False when retrying cannot help (wrong secret, bad port request): the client stops."""
    resume_key: str | None = None
    tcp_ports: list[int] = field(default_factory=list)
    """The dedicated public TCP ports granted."""
    public_port: int | None = None
    tunnel_protocol: int = 1
    """`TUNNEL_PROTOCOL` of the relay; absent means 1 (relays before reusable tunnels)."""
    access_tokens: int = 0
    """How many access-token hashes the relay holds for the client: a client that sent some
    and reads 0 is talking to a relay that would route its bare client_id, and stops."""
    max_tunnels: int | None = None
    """The relay's bound of tunnels per client (`Limits.max_client_tunnels`): the client keeps
    to it and answers a request it refuses with ``ProxyConnRefused``. Absent (older relays):
    the client keeps its own bound and refuses silently, as such a relay expects."""


@dataclass(frozen=True, slots=True)
class RequestNewProxyConn(Message):
    """arps → arpc: open a tunnel to the proxy port and announce it with this id."""

    TYPE: ClassVar[str] = "RequestNewProxyConn"
    proxy_conn_id: str


@dataclass(frozen=True, slots=True)
class ProxyConnRefused(Message):
    """arpc → arps on the control link: no tunnel will come for `proxy_conn_id` (the client is
    at its bound), so the relay forgets the request and answers a waiting caller now. Sent
    only to relays that announced ``RegisterResult.max_tunnels``; older relays never see it."""

    TYPE: ClassVar[str] = "ProxyConnRefused"
    proxy_conn_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NewProxyConn(Message):
    """arpc → arps, first frame on a tunnel: this connection answers `proxy_conn_id`."""

    TYPE: ClassVar[str] = "NewProxyConn"
    proxy_conn_id: str
    client_id: str


@dataclass(frozen=True, slots=True)
class StartProxy(Message):
    """arps → arpc, on a tunnel taken from the pool: raw bytes follow; connect the target now.

    `tcp_port` names the dedicated public port the connection came in on (None: the shared
    HTTP port), so the client picks the local service it maps to.
    """

    TYPE: ClassVar[str] = "StartProxy"
    tcp_port: int | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Either direction on the control link: still alive."""

    TYPE: ClassVar[str] = "Heartbeat"
    seq: int = 0
    move: bool = False
    """arps → arpc: this relay node is stopping; register with another one now (clients that
    predate clusters ignore the field and find out when the link closes)."""


@dataclass(frozen=True, slots=True)
class Error(Message):
    """arps → peer, just before it closes a link it will not serve: what was wrong."""

    TYPE: ClassVar[str] = "Error"
    message: str


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Register,
        RegisterResult,
        RequestNewProxyConn,
        ProxyConnRefused,
        NewProxyConn,
        StartProxy,
        Heartbeat,
        Error,
    )
}


Check = Callable[[Any], bool]


def _checker(annotation: Any) -> Check:
    """A test of whether a decoded JSON value fits a field's annotation (the few shapes used
    above), built once per field so decoding does no type introspection."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = tuple(_checker(arg) for arg in typing.get_args(annotation))
        return lambda value: any(check(value) for check in options)
    if annotation is type(None):
        return lambda value: value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        check_item = _checker(item)
        return lambda value: isinstance(value, list) and all(check_item(v) for v in value)
    if annotation is bool:
        return lambda value: isinstance(value, bool)
    if annotation is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if annotation is str:
        return lambda value: isinstance(value, str)
    raise TypeError(f"unsupported field annotation {annotation!r}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    hint: Any
    check: Check
    required: bool


def _schema(cls: type[Message]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        _Field(
            f.name,
            hints[f.name],
            _checker(hints[f.name]),
            f.default is MISSING and f.default_factory is MISSING,
        )
        for f in fields(cls)
    )


# Worked out once per type: the relay encodes and decodes a few frames per relayed connection.
_SCHEMAS: dict[type[Message], tuple[_Field, ...]] = {
    cls: _schema(cls) for cls in MESSAGE_TYPES.values()
}


def message_from_json(obj: Any) -> Message:
    """Build a message from decoded JSON, validating every known field."""
    body: Any
    if isinstance(obj, str):
        tag, body = obj, {}
    elif isinstance(obj, dict) and len(obj) == 1:
        ((tag, body),) = obj.items()
    else:
        raise RemoteProtocolError(
            "a control message must be a JSON object with exactly one key, the message type"
        )
    cls = MESSAGE_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown control message type {tag!r}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"{tag}: the message body must be a JSON object")
    values: dict[str, Any] = {}
    for f in _SCHEMAS[cls]:
        if f.name in body:
            value = body[f.name]
            if not f.check(value):
                raise RemoteProtocolError(
                    f"{tag}.{f.name}: expected {f.hint}, got {type(value).__name__}"
                )
            values[f.name] = value
        elif f.required:
            raise RemoteProtocolError(f"{tag}: missing required field {f.name!r}")
    return cls(**values)


def encode(message: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame carrying `message`."""
    # Field values are JSON scalars or lists of them, so no deep copy (asdict) is needed.
    fields_ = {f.name: getattr(message, f.name) for f in _SCHEMAS[type(message)]}
    body = json.dumps({message.TYPE: fields_}, separators=(",", ":")).encode()
    if len(body) > max_frame:
        raise LocalProtocolError(f"{message.TYPE} frame of {len(body)} bytes exceeds {max_frame}")
    return HEADER.pack(len(body)) + body


START_HTTP = encode(StartProxy(tcp_port=None))
"""What a tunnel taken for the shared HTTP port is told first: always these bytes, so arpc
recognises them without decoding JSON."""


def decode_body(body: bytes) -> Message:
    """The message in one frame's body."""
    try:
        check_json_depth(body)
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"control frame is not valid UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(f"control frame is not valid JSON: {exc.msg}") from None
    except JsonTooDeep as exc:
        raise RemoteProtocolError(f"control frame is not valid JSON: {exc}") from None
    return message_from_json(obj)


class FrameDecoder:
    """Turns a byte stream into messages; feed it whatever arrived, in any split.

    After an error the decoder is broken: the link must be closed.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # body length of the frame being read, once known

    def receive_data(self, data: bytes) -> None:
        """Add bytes that arrived; `next_message` takes messages out."""
        self._buffer += data

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every complete message they finish, in order."""
        self._buffer += data
        messages: list[Message] = []
        while True:
            message = self.next_message()
            if message is None:
                return messages
            messages.append(message)

    def next_message(self) -> Message | None:
        """The next complete message already buffered, or None if more bytes are needed."""
        if self._need is None:
            if len(self._buffer) < HEADER.size:
                return None
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise RemoteProtocolError(
                    f"control frame of {length} bytes exceeds the limit of {self.max_frame}"
                )
            del self._buffer[: HEADER.size]
            self._need = length
        if len(self._buffer) < self._need:
            return None
        body = bytes(self._buffer[: self._need])
        del self._buffer[: self._need]
        self._need = None
        return decode_body(body)

    def take_rest(self) -> bytes:
        """Bytes buffered beyond the last complete frame (a tunnel's raw data after StartProxy)."""
        if self._need is not None:
            raise LocalProtocolError("a frame is only partly read; its rest is not raw data")
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
