"""Where each response on a tunnel ends, found from the spliced bytes (no I/O here).

The relay routes each request by its own token; before a request for another client goes on,
every response the old tunnel owes must be complete (HTTP/1.1 answers in order). The tracker
watches the response bytes as they pass (it never changes or holds them) and counts the
responses that are complete:

- Each request sent registers its method (`expect`); a response belongs to the oldest one.
- A response head is read up to its blank line; its status, ``Content-Length`` and
  ``Transfer-Encoding`` give the body (RFC 9112 §6.3): none for HEAD, 1xx, 204 and 304; chunked
  (scanned to its end, `arp.protocol.chunked`); a length (counted, so the pump may splice it:
  `body_left`, `consumed`); otherwise the body lasts until the connection closes.
- 1xx other than 101 are interim: the final response follows. 101, or 2xx to CONNECT, turns
  the connection raw (`upgraded`).
- Anything it cannot follow (not an HTTP/1.x status line, an oversize head, a response nobody
  asked for) sets `lost`: the relay then ends the connection after the old tunnel instead of
  guessing.

The cost on the keep-alive path is one head scan per response; body bytes are counted, not
read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from arp.errors import ArpError
from arp.protocol import wire
from arp.protocol.chunked import ChunkedScanner

_HEAD: Final = 0
_BODY: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3
_RAW: Final = 4
_LOST: Final = 5

_same_at: Final = wire.same_at
"""Final: compiled code calls it from a C static; an imported name is a dict lookup per call."""

_RING: Final = 4
"""The first size of a tracker's ring of owed methods (a power of two): most callers have
one request in flight, pipelining ones a few."""

_recent: tuple[bytes, int] = (b"", 0)


class ResponseTracker:
    """Counts complete responses in a tunnel's response bytes; see the module docstring."""

    __slots__ = (
        "_buffer",
        "_chunks",
        "_classes",
        "_last_head",
        "_last_length",
        "_left",
        "_max_head",
        "_methods",
        "_oldest",
        "_owed",
        "_same",
        "_state",
        "on_complete",
        "total",
    )

    def __init__(self, max_head: int) -> None:
        self._max_head = max_head
        self._methods: list[str] = [""] * _RING
        """The methods of the requests owed a response, oldest first from `_oldest`: a ring
        (its size a power of two, doubled when full), read and written natively in compiled
        code, where a deque's are method calls and a list's append and clear allocate."""
        self._oldest = 0
        self._owed = 0
        self._state = _HEAD
        self._buffer = b""  # a response head read in part
        self._left = 0
        self._chunks: ChunkedScanner | None = None
        # The last plain 2xx head to a GET with a counted body, and its length: the same head
        # again needs no second reading (shared by the trackers of one process to start with).
        self._last_head, self._last_length = _recent
        self._classes = [0] * 10
        self._same = 0
        """Same answers counted by `_same_answer` (2xx each): a native integer add, where an
        item of a list is a boxed one; `classes` adds them in."""
        self.total = 0
        """Bytes of the response direction seen so far (fed or passed by count)."""
        self.on_complete: Callable[[], None] | None = None
        """Called after each final response completes (and on `upgraded`, and on `lost`);
        the relay sets it only while something waits for that."""

    def expect(self, method: str) -> None:
        """A request went to the tunnel: one more response is owed."""
        ring, owed = self._methods, self._owed
        if owed == len(ring):
            # Full: the oldest first again, in a ring twice the size.
            oldest = self._oldest
            ring = self._methods = ring[oldest:] + ring[:oldest] + [""] * owed
            self._oldest = 0
        ring[(self._oldest + owed) & (len(ring) - 1)] = method
        self._owed = owed + 1

    @property
    def outstanding(self) -> int:
        """Responses owed and not yet complete."""
        return self._owed

    @property
    def classes(self) -> list[int]:
        """Final responses seen by status class (index 1 for 1xx, ...): the admin port's
        counts."""
        classes = list(self._classes)
        classes[2] += self._same
        return classes

    @property
    def upgraded(self) -> bool:
        return self._state == _RAW

    @property
    def lost(self) -> bool:
        return self._state == _LOST

    @property
    def until_close(self) -> bool:
        """A response whose body ends only with the connection: the caller must see a close."""
        return self._state == _UNTIL_CLOSE

    @property
    def body_left(self) -> int:
        """Bytes of a counted body still to come (they may pass without being fed)."""
        return self._left if self._state == _BODY else 0

    def consumed(self, count: int) -> None:
        """`count` bytes of a counted body passed without being fed (at most `body_left`)."""
        self._left -= count
        self.total += count
        if not self._left:
            self._complete()

    def feed_at(self, buffer: bytearray, start: int, end: int) -> None:
        """`feed` of ``buffer[start:end]``: the read buffer as it is, no slice made."""
        if not self._same_answer(buffer, start, end - start):
            self._scan(memoryview(buffer)[start:end])

    def _same_answer(self, data: bytes | bytearray | memoryview, start: int, size: int) -> bool:
        """The keep-alive case, kept short: `size` bytes of `data` from `start` are the same
        whole answer as the last one; counted if so."""
        last = self._last_head
        if (
            self._state != _HEAD
            or size != len(last) + self._last_length
            or len(last) == 0
            or len(self._buffer) != 0
            or self._method() != "GET"
            or not _same_at(data, start, last)
        ):
            return False
        self.total += size
        self._pop()
        self._same += 1
        if self.on_complete is not None:
            self.on_complete()
        return True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes of the response direction, in order, exactly as they go to the caller."""
        if not self._same_answer(data, 0, len(data)):
            self._scan(data)

    def _scan(self, data: bytes | bytearray | memoryview) -> None:
        """`feed` of bytes that are not the same answer again: read as they come."""
        pos, size = 0, len(data)
        self.total += size
        while pos < size:
            state = self._state
            if state == _BODY:
                take = min(self._left, size - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._complete()
            elif state == _HEAD:
                pos = self._head(data, pos)
            elif state == _CHUNKED:
                assert self._chunks is not None
                chunk = bytes(data[pos:])
                try:
                    end = self._chunks.scan(chunk)
                except ArpError:
                    self._lose()
                    return
                if end is None:
                    return
                pos += end
                self._complete()
            else:  # until the close, raw, or lost: nothing more to learn
                return

    def _head(self, data: bytes | bytearray | memoryview, pos: int) -> int:
        chunk = self._buffer + bytes(data[pos:])
        end = chunk.find(b"\r\n\r\n")
        if end == -1:
            if len(chunk) > self._max_head:
                self._lose()
                return len(data)
            self._buffer = chunk
            return len(data)
        used = end + 4 - len(self._buffer)
        head, self._buffer = chunk[: end + 4], b""
        method = self._method()
        if head == self._last_head and method == "GET":
            # The same head as the last plain answer with a counted body (a repeated request).
            self._same += 1
            self._state, self._left = _BODY, self._last_length
            if not self._left:
                self._complete()
            return pos + used
        if not head.startswith(b"HTTP/1.") or not method or not head[9:12].isdigit():
            self._lose()
            return len(data)
        status = int(head[9:12])
        if status >= 200 or status == 101:
            self._classes[status // 100] += 1
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._state = _RAW
            self._pop()
            self._notify()
            return len(data)
        if status < 200:
            return pos + used  # interim: the final response follows
        if method == "HEAD" or status in (204, 304):
            self._complete()
            return pos + used
        lower = head.lower()
        if self._chunked(lower):
            self._state = _CHUNKED
            self._chunks = ChunkedScanner(self._max_head)
            return pos + used
        length = self._content_length(lower)
        if length is None:
            self._state = _UNTIL_CLOSE
            return len(data)
        if method == "GET" and 200 <= status < 300:
            global _recent
            self._last_head, self._last_length = _recent = head, length
        if length:
            self._state, self._left = _BODY, length
        else:
            self._complete()
        return pos + used

    @staticmethod
    def _chunked(lower: bytes) -> bool:
        at = lower.find(b"\r\ntransfer-encoding:")
        if at == -1:
            return False
        line = lower[at + 20 : lower.find(b"\r\n", at + 2)]
        return line.rstrip().endswith(b"chunked")

    def _content_length(self, lower: bytes) -> int | None:
        at = lower.find(b"\r\ncontent-length:")
        if at == -1:
            return None
        value = lower[at + 17 : lower.find(b"\r\n", at + 2)].strip()
        if not value.isdigit():
            self._lose()
            return 0
        return int(value)

    def _complete(self) -> None:
        if self._state == _LOST:
            return
        self._state = _HEAD
        self._chunks = None
        if self._owed:
            self._pop()
        self._notify()

    def _method(self) -> str:
        """The method of the oldest request owed a response; "" when none is owed."""
        return self._methods[self._oldest] if self._owed else ""

    def _pop(self) -> None:
        """The oldest owed response is complete."""
        self._oldest = (self._oldest + 1) & (len(self._methods) - 1)
        self._owed -= 1

    def _lose(self) -> None:
        self._state = _LOST
        self._notify()

    def _notify(self) -> None:
        on_complete = self.on_complete
        if on_complete is not None:
            on_complete()
