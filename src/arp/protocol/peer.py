"""The node-to-node link of a relay cluster: its messages, its framing, its proofs (no I/O).

Node B, which received a public connection for a client that node A holds, dials A's peer port
and asks A to carry that one connection; A joins it to one of the client's tunnels, and from
then on the link is a plain byte stream, spliced like any public connection.

Conversation (every message a frame: 4-byte big-endian length, then UTF-8 JSON with a ``t`` tag):

    A → B   challenge   {"t": "challenge", "node": A, "nonce": Na}
    B → A   answer      {"t": "answer", "node": B, "nonce": Nb, "mac": mac("dial", Na, Nb, B, A)}
    B → A   carry       {"t": "carry", "client_id": X, "tcp_port": P|null, "tunnel": bool}
    A → B   verdict     {"t": "verdict", "mac": mac("listen", Nb, Na, A, B), "status": 0|code,
                         "error": null|text}
    then    raw bytes both ways (status 0), or A closes (status: the HTTP status B answers with)

Two kinds of carry:
- a *stream* (``"tunnel": false``): A sends the tunnel ``StartProxy`` itself (the shared HTTP
  port, or `tcp_port`) and splices the link to it like a public connection of its own; B joins
  the public connection to the link byte for byte. Dedicated TCP ports use this.
- a *tunnel* (``"tunnel": true``): the link stands for one of X's tunnels, bytes passed on
  unchanged both ways (``StartProxy``, data frames, end frames all come from B), for as long
  as both stay open. B keeps such links in a pool for X like tunnels of its own, so per-request
  routing, tunnel reuse and the response accounting all happen on B exactly as for a local
  client, and A only copies bytes.

Rules:
- ``mac(role, …)`` is HMAC-SHA256 under the cluster secret over the role and the four values;
  each side proves it knows the secret over the other's fresh nonce, so a recorded handshake
  cannot be replayed, and compares in constant time (`hmac.compare_digest`).
- A sends nothing but the challenge before B's answer is verified; B trusts the verdict only
  once A's proof is verified. A wrong proof is `PeerAuthError`.
- A frame longer than the bound (`ClusterBounds.max_peer_frame`), bad JSON, an unknown tag or a
  field of the wrong type is a `RemoteProtocolError`; bytes after the last handshake frame are
  the carried connection's and are handed on by `PeerDecoder.take_rest`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from arp.errors import RemoteProtocolError

HEADER = struct.Struct(">I")
VERSION = "arp-peer/1"


class PeerAuthError(RemoteProtocolError):
    """The other node does not know the cluster secret (or answered another challenge)."""


def new_nonce() -> str:
    return secrets.token_hex(16)


def mac(secret: str, role: str, mine: str, theirs: str, me: str, them: str) -> str:
    """The proof `role` ("dial" or "listen") sends: over the other's nonce first."""
    message = "|".join((VERSION, role, mine, theirs, me, them)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(expected: str, given: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise PeerAuthError("the peer node's proof is wrong: the cluster secrets differ")


@dataclass(frozen=True, slots=True)
class Challenge:
    TAG: ClassVar[str] = "challenge"
    node: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Answer:
    TAG: ClassVar[str] = "answer"
    node: str
    nonce: str
    mac: str


@dataclass(frozen=True, slots=True)
class Carry:
    TAG: ClassVar[str] = "carry"
    client_id: str
    tcp_port: int | None = None
    tunnel: bool = False
    """The link stands for a tunnel of the client (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    TAG: ClassVar[str] = "verdict"
    mac: str
    status: int = 0
    """0: carried (raw bytes follow); else the HTTP status of the refusal."""
    error: str | None = None


PeerMessage = Challenge | Answer | Carry | Verdict
_TYPES: dict[str, type[PeerMessage]] = {c.TAG: c for c in (Challenge, Answer, Carry, Verdict)}
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "challenge": {"node": (str,), "nonce": (str,)},
    "answer": {"node": (str,), "nonce": (str,), "mac": (str,)},
    "carry": {"client_id": (str,), "tcp_port": (int, type(None)), "tunnel": (bool,)},
    "verdict": {"mac": (str,), "status": (int,), "error": (str, type(None))},
}
_REQUIRED = {"challenge": 2, "answer": 3, "carry": 1, "verdict": 1}


def encode(message: PeerMessage, max_frame: int) -> bytes:
    body: dict[str, Any] = {"t": message.TAG}
    body.update({name: getattr(message, name) for name in _FIELDS[message.TAG]})
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > max_frame:
        raise ValueError(f"peer {message.TAG} frame of {len(data)} bytes exceeds {max_frame}")
    return HEADER.pack(len(data)) + data


def decode_body(data: bytes) -> PeerMessage:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RemoteProtocolError("peer frame is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("peer frame is not a JSON object")
    tag = obj.get("t")
    cls = _TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None or not isinstance(tag, str):
        raise RemoteProtocolError(f"unknown peer message {str(tag)[:32]!r}")
    values: dict[str, Any] = {}
    for index, (name, kinds) in enumerate(_FIELDS[tag].items()):
        if name not in obj:
            if index < _REQUIRED[tag]:
                raise RemoteProtocolError(f"peer {tag}: missing {name!r}")
            continue
        value = obj[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise RemoteProtocolError(f"peer {tag}.{name}: wrong type")
        values[name] = value
    return cls(**values)


class PeerDecoder:
    """Frames from a byte stream, in any split; the bytes after them via `take_rest`."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> PeerMessage | None:
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self.max_frame:
            raise RemoteProtocolError(
                f"peer frame of {length} bytes exceeds the limit of {self.max_frame}"
            )
        if len(self._buffer) < HEADER.size + length:
            return None
        body = bytes(self._buffer[HEADER.size : HEADER.size + length])
        del self._buffer[: HEADER.size + length]
        return decode_body(body)

    def take_rest(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


def expect(message: PeerMessage | None, kind: type[PeerMessage]) -> Any:
    """`message` when it is a `kind`, else a `RemoteProtocolError` naming both."""
    if not isinstance(message, kind):
        got = "nothing" if message is None else message.TAG
        raise RemoteProtocolError(f"peer link: expected {kind.TAG}, got {got}")
    return message
