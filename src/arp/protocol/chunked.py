"""Where a chunked HTTP/1.1 body ends (RFC 9112 §7.1), found incrementally (no I/O here).

The relay forwards chunked bodies untouched; it only needs their end, to know where the next
message starts. `ChunkedScanner.scan` walks chunk-size lines, skips chunk data by count (no work
per data byte), then the trailers up to their empty line. Size lines and the trailers are
bounded by `max_line`; a malformed body raises `HeadError` (400).
"""

from __future__ import annotations

from arp.protocol.http import HeadError

_HEX = b"0123456789abcdefABCDEF"
_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


class ChunkedScanner:
    """Finds the end of one chunked body in bytes fed in any split."""

    __slots__ = ("_left", "_line", "_max_line", "_state", "_trailer_bytes")

    def __init__(self, max_line: int) -> None:
        self._max_line = max_line
        self._state = _SIZE
        self._left = 0
        self._line = b""  # a line read in part
        self._trailer_bytes = 0

    def scan(self, data: bytes | bytearray, pos: int = 0) -> int | None:
        """The offset in `data` just past the body's end when it ends there, else None (every
        byte from `pos` on belongs to the body)."""
        size = len(data)
        while pos < size:
            if self._state == _DATA:
                take = min(self._left, size - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                continue
            eol = data.find(b"\n", pos)
            if eol == -1:
                self._line += data[pos:]
                if len(self._line) > self._max_line:
                    raise HeadError(400, "malformed chunked body: a line is too long")
                return None
            line = (self._line + data[pos:eol]).rstrip(b"\r")
            self._line = b""
            pos = eol + 1
            if self._state == _DATA_END:
                if line:
                    raise HeadError(400, "malformed chunked body: a chunk must end in CRLF")
                self._state = _SIZE
            elif self._state == _SIZE:
                digits = line.split(b";", 1)[0].strip()
                if not digits or len(digits) > 16 or digits.translate(None, _HEX):
                    raise HeadError(400, "malformed chunked body: bad chunk size")
                chunk = int(digits, 16)
                if chunk:
                    self._state, self._left = _DATA, chunk
                else:
                    self._state = _TRAILERS
            else:  # trailers, ended by an empty line
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > self._max_line:
                    raise HeadError(400, "malformed chunked body: trailers are too long")
                if not line:
                    return pos
        return None
