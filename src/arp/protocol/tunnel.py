"""The tunnel's data frames after ``StartProxy``: their encoding and a pure incremental decoder.

Rules:
- A data frame is a 4-byte big-endian length, then that many bytes of the connection.
- A frame of length 0 (the *end frame*) ends its direction the way a FIN ends a TCP direction,
  except that the tunnel stays open: once both directions have ended so, the tunnel can carry
  the next connection. Bytes after the end frame belong to that next use.
- A length above `MAX_DATA_FRAME` is a `TunnelProtocolError`; so is a tunnel that closes
  inside a frame (`TunnelDecoder.close`).

The decoder takes bytes in any split and hands back payload slices and the end; it does no
I/O and keeps no copy of payload bytes, so the pump (`arp.net.pump`) can move payloads on by
slice, or, in splice mode, ask it only for how many bytes the current frame still holds.
"""

from __future__ import annotations

import struct
from typing import Final

from arp.errors import TunnelProtocolError as TunnelProtocolError

HEADER: Final = struct.Struct(">I")
"""The data frame header: the payload's length."""
HEADER_SIZE: Final = HEADER.size
"""`HEADER.size`, read once: the compiled data path reads a Final from a C static, where
`HEADER.size` is an attribute lookup every time."""
END_FRAME: Final = HEADER.pack(0)
"""The data frame that ends one direction of a tunnel's connection."""
MAX_DATA_FRAME: Final = 1 << 24
"""The longest data frame a receiver accepts (a sender's frames are at most one pipeful)."""


def data_frame(payload: bytes) -> bytes:
    """`payload` as one data frame (empty payload: nothing, since an empty frame means end)."""
    return HEADER.pack(len(payload)) + payload if payload else b""


def encode_data(payload: bytes) -> bytes:
    """`payload` as data frames, ending its direction with the end frame."""
    return data_frame(payload) + END_FRAME


class TunnelDecoder:
    """Splits a tunnel's byte stream into payload slices, in any split, until the end frame.

    `feed` returns the payload slices the bytes carry (views into the bytes given: consume them
    before the buffer is reused); once the end frame has been read, `ended` is True and `rest`
    holds the bytes after it. Splice mode reads headers alone (`header_needed`, `feed_header`)
    and moves payload bytes in the kernel, reporting them with `consumed`.
    """

    __slots__ = ("_header", "ended", "left", "rest")

    def __init__(self) -> None:
        self._header = b""  # a header read in part
        self.left = 0
        """Payload bytes of the current frame still to come."""
        self.ended = False
        self.rest = b""

    @property
    def between_frames(self) -> bool:
        """No frame is partly read: a close here ends the direction like a FIN."""
        return self.left == 0 and len(self._header) == 0  # (len: native; `not` of bytes is not)

    def feed(self, view: memoryview) -> list[memoryview]:
        """The payload slices in `view`, in order; stops at the end frame (see `ended`)."""
        parts: list[memoryview] = []
        pos, size = 0, len(view)
        while pos < size and not self.ended:
            if self.left:
                take = min(self.left, size - pos)
                parts.append(view[pos : pos + take])
                pos += take
                self.left -= take
                continue
            if not len(self._header) and size - pos >= HEADER_SIZE:
                # A whole header (the usual case): read in place, no bytes object made.
                (length,) = HEADER.unpack_from(view, pos)
                pos += HEADER_SIZE
                self._take_length(length)
                continue
            need = HEADER_SIZE - len(self._header)
            self._header += view[pos : pos + need]
            pos += need
            if len(self._header) < HEADER_SIZE:
                break
            self._take_header()
        if self.ended:
            self.rest = bytes(view[pos:])
        return parts

    def header_needed(self) -> int:
        """How many bytes of the next header are still to be read (0 inside a payload)."""
        return 0 if self.left else HEADER_SIZE - len(self._header)

    def feed_header(self, data: bytes) -> None:
        """Header bytes alone (at most `header_needed()` of them), read in splice mode."""
        self._header += data
        if len(self._header) == HEADER_SIZE:
            self._take_header()

    def consumed(self, count: int) -> None:
        """`count` payload bytes of the current frame moved on without passing through here."""
        self.left -= count

    def close(self) -> None:
        """The tunnel closed: fine between frames, a `TunnelProtocolError` inside one."""
        if not self.between_frames:
            raise TunnelProtocolError("the tunnel closed in the middle of a data frame")

    def _take_header(self) -> None:
        (length,) = HEADER.unpack(self._header)
        self._header = b""
        self._take_length(length)

    def _take_length(self, length: int) -> None:
        if length > MAX_DATA_FRAME:
            raise TunnelProtocolError(f"a data frame of {length} bytes is over the limit")
        self.left = length
        if not length:
            self.ended = True
