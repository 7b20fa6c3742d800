"""The request direction of a public connection as HTTP/1.1 messages (no I/O here).

`RequestStream` takes the bytes a public connection sends, in any split, and hands out events:
a `Request` (one complete head, parsed by llhttp through `arp.protocol.http`), then, for a
message with a body, the `Body` bytes and `END_OF_MESSAGE`; a message without a body is
complete with its head, and no event follows it (one step less per keep-alive request). The
relay routes every `Request` by its own token, so it must know where each message ends; the
bytes themselves pass on as they came (heads are rewritten only by the relay's own headers).

Framing rules (RFC 9112 §6):
- ``Transfer-Encoding`` whose last coding is ``chunked``: chunked body, read to its last chunk
  and trailers; any other transfer coding in a request is a 400 (its length is unknowable).
  llhttp itself refuses a request with both ``Transfer-Encoding`` and ``Content-Length``.
- ``Content-Length``: exactly that many bytes (the relay may move them by count, `skip_body`).
- Neither: no body.
- ``Upgrade`` or ``CONNECT``: after this message the connection may stop being HTTP; the stream
  then stops until the relay, having seen the response, calls `go_raw` (every later byte is one
  raw `Body`) or gives the connection up.

Bounds: a head is at most `max_head` bytes (431 beyond), a chunk-size line or the trailers at
most `max_head` too (400 beyond).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NamedTuple

from arp.protocol import http as phttp
from arp.protocol import wire
from arp.protocol.chunked import ChunkedScanner
from arp.protocol.http import HeadError


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"


class Request(NamedTuple):
    """One request head with what the relay needs to carry its message."""

    head: phttp.RequestHead
    raw: bytes
    """The head's bytes as they came, through the blank line."""
    framing: Framing
    length: int
    """The body's length when `framing` is LENGTH."""
    upgrade: bool
    """An Upgrade or CONNECT: the connection may turn raw after its response."""


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


class EndOfMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


END_OF_MESSAGE: Final = EndOfMessage()

Event = Request | Body | EndOfMessage

_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED

_same_at: Final = wire.same_at
"""Final: compiled code calls it from a C static; an imported name is a dict lookup per call."""
_recent: Final[list[Request | None]] = [None]
"""The last bodiless request parsed by any stream: the first head of a new connection is often
the same bytes as the last one's (a client that opens a connection per request)."""


class _State:
    """The stream's states (plain ints: compared on every event)."""

    HEAD: Final = 1
    LENGTH: Final = 2
    CHUNKED: Final = 3
    HELD: Final = 4  # after an Upgrade/CONNECT message: waiting for its response's status
    RAW: Final = 5


def framing_of(head: phttp.RequestHead) -> tuple[Framing, int]:
    """The body framing a request head announces; HeadError (400) when it cannot be used."""
    te = head.header(b"transfer-encoding")
    if te is not None:
        codings = [c.strip().lower() for c in te.split(b",")]
        if not codings or codings[-1] != b"chunked":
            raise HeadError(400, "a request's Transfer-Encoding must end with chunked")
        return _CHUNKED, 0
    cl = head.header(b"content-length")
    if cl is not None:
        text = cl.strip()
        if not text.isdigit() or len(text) > 18:
            raise HeadError(400, "malformed Content-Length")
        length = int(text)
        return (_LENGTH, length) if length else (_NONE, 0)
    return _NONE, 0


def is_upgrade(head: phttp.RequestHead) -> bool:
    """Whether the request asks to leave HTTP (WebSocket and friends, or CONNECT)."""
    if head.method == "CONNECT":
        return True
    if head.header(b"upgrade") is None:
        return False
    connection = head.header(b"connection") or b""
    return b"upgrade" in connection.lower()


class RequestStream:
    """Bytes of one public connection in, HTTP/1.1 request events out, in any split."""

    __slots__ = (
        "_buffer",
        "_chunks",
        "_last",
        "_left",
        "_max_head",
        "_parser",
        "_state",
        "_upgrade_pending",
    )

    def __init__(self, max_head: int) -> None:
        self._max_head = max_head
        self._buffer = bytearray()
        self._state = _State.HEAD
        self._left = 0  # LENGTH: body bytes still to come
        self._chunks: ChunkedScanner | None = None
        self._parser = phttp.HeadParser()
        self._last: Request | None = None
        self._upgrade_pending = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def repeat(self, data: bytearray, size: int) -> Request | None:
        """The last bodiless head again when `data`'s first `size` bytes are exactly its bytes
        and nothing else is buffered: what `feed` of them and `next_event` would give, with
        the stream as it was (the keep-alive case, without copying or parsing). Else None, and
        the caller feeds them."""
        if self._state != _State.HEAD or len(self._buffer) != 0:
            return None
        last = self._last or _recent[0]
        if last is None or len(last.raw) != size or not _same_at(data, 0, last.raw):
            return None
        return last

    def repeats(self, request: Request) -> bool:
        """Whether a read of exactly `request`'s bytes would be `repeat` of it now (the caller
        may then compare the bytes as it reads them, `arp.net.sockio.forward_if_same`)."""
        return (
            self._state == _State.HEAD
            and len(self._buffer) == 0
            and (self._last or _recent[0]) is request
        )

    @property
    def idle(self) -> bool:
        """Between messages with nothing buffered: a close here loses nothing."""
        return self._state == _State.HEAD and not self._buffer

    @property
    def raw(self) -> bool:
        return self._state == _State.RAW

    @property
    def held(self) -> bool:
        return self._state == _State.HELD

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def body_left(self) -> int:
        """Body bytes of a Content-Length message still to come beyond the buffer."""
        return self._left - len(self._buffer) if self._state == _State.LENGTH else 0

    def skip_body(self, count: int) -> None:
        """`count` body bytes (at most `body_left`) moved on by count, never buffered here."""
        if self._state != _State.LENGTH or self._buffer or count > self._left:
            raise ValueError("skip_body: not inside a Content-Length body with nothing buffered")
        self._left -= count  # at 0, the next event ends the message

    def go_raw(self) -> None:
        """The response accepted the Upgrade/CONNECT: every byte from now on is raw."""
        self._state = _State.RAW

    def resume(self) -> None:
        """The response refused the Upgrade/CONNECT: the next request may follow."""
        if self._state == _State.HELD:
            self._state = _State.HEAD

    def next_event(self) -> Event | None:
        """The next event in the bytes fed so far; None when more are needed."""
        state = self._state
        if state == _State.HEAD:
            buffer = self._buffer
            if not buffer:
                return None
            last = self._last or _recent[0]
            if last is not None and buffer.startswith(last.raw):
                # The same bytes as the last head (a client repeating a request, as pollers
                # and load tools do): the same parse, without parsing again.
                del buffer[: len(last.raw)]
                return last
            return self._head()
        if state == _State.LENGTH:
            if not self._left:
                return self._end()
            if not self._buffer:
                return None
            take = min(self._left, len(self._buffer))
            data = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._left -= take
            return Body(data)
        if state == _State.RAW:
            if not self._buffer:
                return None
            data = bytes(self._buffer)
            self._buffer.clear()
            return Body(data)
        if state == _State.HELD:
            return None
        return self._chunked()

    # -- internals ------------------------------------------------------------------------------

    def _end(self) -> EndOfMessage:
        self._state = _State.HELD if self._upgrade_pending else _State.HEAD
        self._upgrade_pending = False
        return END_OF_MESSAGE

    def _head(self) -> Request | None:
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):
            del buffer[:2]  # empty lines before a request line are ignored (RFC 9112 §2.2)
        end = buffer.find(b"\r\n\r\n", 0, self._max_head + 4)
        if end == -1:
            if len(buffer) > self._max_head:
                raise HeadError(431, f"request head larger than {self._max_head} bytes")
            return None
        end += 4
        if end > self._max_head:
            raise HeadError(431, f"request head larger than {self._max_head} bytes")
        raw = bytes(buffer[:end])
        del buffer[:end]
        head = self._parser.parse(raw)
        framing, length = framing_of(head)
        upgrade = is_upgrade(head)
        self._upgrade_pending = upgrade
        request = Request(head, raw, framing, length, upgrade)
        self._last = None
        if framing is _LENGTH:
            self._state, self._left = _State.LENGTH, length
        elif framing is _CHUNKED:
            self._state = _State.CHUNKED
            self._chunks = ChunkedScanner(self._max_head)
        elif upgrade:
            self._state = _State.HELD  # a bodiless message is complete with its head
        else:
            self._last = _recent[0] = request  # only bodiless, plain requests are remembered
        return request

    def _chunked(self) -> Event | None:
        """Chunked body bytes up to the end of what is buffered or of the body."""
        assert self._chunks is not None
        buffer = self._buffer
        end = self._chunks.scan(buffer)
        take = len(buffer) if end is None else end
        if not take:
            return None
        data = bytes(buffer[:take])
        del buffer[:take]
        if end is not None:
            self._chunks = None
            self._state, self._left = _State.LENGTH, 0  # the next event ends the message
        return Body(data)
