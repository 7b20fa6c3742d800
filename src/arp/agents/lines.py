"""Cutting a byte stream into lines, bounded: one splitter for agent output and remote requests.

Two readers take newline-delimited bytes from a peer they do not control: the session manager
(a CLI's stdout and stderr) and the remote TCP protocol (request lines). Both must hold at most
``max_line`` bytes of a line that never ends; they differ only in what becomes of a line that
is too long, so `LineFramer` serves both:

- ``cut_marker=None`` (the remote protocol): the line is dropped and reported once, as
  `Oversize`, when its newline arrives; the next line is served as usual.
- ``cut_marker=b" [line cut by arp]"`` (agent output): its first ``max_line`` bytes and the
  marker are given out as a line at once, and the rest up to its newline is dropped.

`abandon` lets the reader give up on the partial line it holds (no memory for it); that line
ends as `Abandoned`. Complete lines come out without their ``\\n`` and one trailing ``\\r``.
Pure code: no asyncio, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Oversize:
    """A line longer than the limit was dropped (``size``: bytes seen before giving up)."""

    size: int


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A line the reader gave up on (`LineFramer.abandon`) ended (``size``: its bytes seen)."""

    size: int


class LineFramer:
    """Bytes in, complete lines (or `Oversize`/`Abandoned` markers) out; see the module doc."""

    def __init__(self, max_line: int, *, cut_marker: bytes | None = None) -> None:
        self.max_line = max_line
        self.cut_marker = cut_marker
        self._buffer = bytearray()
        self._skipping = False
        self._skipped = 0
        self._abandoned = False

    def abandon(self) -> None:
        """Drop the partial line held now and skip the rest of it up to its newline."""
        if self._skipping or not self._buffer:
            return
        self._skipping = True
        self._abandoned = True
        self._skipped = len(self._buffer)
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Oversize | Abandoned]:
        out: list[bytes | Oversize | Abandoned] = []
        parts = data.split(b"\n")
        tail = parts.pop()  # what follows the last newline (b"" when data ends with one)
        for piece in parts:
            self._end_line(piece, out)
        if tail:
            self._extend(tail, out)
        return out

    def end(self) -> bytes | None:
        """At the end of the stream: the last line when it had no newline (None otherwise)."""
        if self._skipping or not self._buffer:
            return None
        line = bytes(self._buffer)
        self._buffer = bytearray()
        return line

    def _extend(self, piece: bytes, out: list[bytes | Oversize | Abandoned]) -> None:
        if self._skipping:
            self._skipped += len(piece)
            return
        self._buffer += piece
        if len(self._buffer) > self.max_line:
            self._start_skipping(self._buffer, out)
            self._buffer = bytearray()

    def _start_skipping(
        self, held: bytes | bytearray, out: list[bytes | Oversize | Abandoned]
    ) -> None:
        self._skipping = True
        self._skipped = len(held)
        if self.cut_marker is not None:
            out.append(bytes(held[: self.max_line]) + self.cut_marker)

    def _end_line(self, piece: bytes, out: list[bytes | Oversize | Abandoned]) -> None:
        if self._skipping:
            self._skipped += len(piece)
        else:
            if self._buffer:
                self._buffer += piece
                line = bytes(self._buffer)
                self._buffer = bytearray()
            else:
                line = piece
            if len(line) <= self.max_line:
                out.append(line[:-1] if line.endswith(b"\r") else line)
                return
            self._start_skipping(line, out)
        # The line that was too long (or abandoned) ends here.
        if self._abandoned:
            out.append(Abandoned(self._skipped))
        elif self.cut_marker is None:
            out.append(Oversize(self._skipped))
        self._skipping = False
        self._skipped = 0
        self._abandoned = False
