"""One session's numbered output: a bounded in-memory tail in front of an append-only file.

Events are stored as one JSON line each (``Event.to_line``, which starts with ``{"seq":N,``), in
``events.jsonl`` in the session's folder. The newest events also stay in memory, bounded in count
and in bytes, so a follower that keeps up never touches the disk. A reader that fell behind the
memory tail (or a session loaded after a restart) reads the file, starting from a sparse index of
byte offsets so "everything after seq N" does not scan the whole file.

The file is written with ordinary buffered writes from the event loop: lines are small and land
in the page cache; `flush` runs after each batch a child printed, and before any file read.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from arp.agents.events import Draft, Event
from arp.config import SESSION_BOUNDS

INDEX_EVERY = 256
"""One index entry (seq → byte offset) per this many events."""


def line_seq(line: str) -> int:
    """The seq of a stored event line, read from its fixed prefix (JSON as a fallback)."""
    if line.startswith('{"seq":'):
        end = line.find(",", 7)
        if end > 7:
            try:
                return int(line[7:end])
            except ValueError:
                pass
    data = json.loads(line)
    return int(data["seq"])


class EventLog:
    """Numbers events and keeps them; ``path=None`` keeps them in memory only (bounded)."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_memory_events: int = SESSION_BOUNDS.memory_events,
        max_memory_bytes: int = SESSION_BOUNDS.memory_bytes,
    ) -> None:
        self.path = path
        self._max_events = max(1, max_memory_events)
        self._max_bytes = max(1, max_memory_bytes)
        self._tail: deque[tuple[int, str]] = deque()
        self._tail_bytes = 0
        self._writer: IO[str] | None = None
        self._dirty = False
        self._index: list[tuple[int, int]] = []
        self._indexed_upto = 0
        self._size = 0
        self.last_seq = 0
        self._memory_written = 0
        if path is not None and path.exists():
            _cut_torn_tail(path)
            self._size = path.stat().st_size
            self.last_seq = _last_seq_of(path)
            # Built lazily on the first file read; nothing is known about offsets yet.
            self._indexed_upto = -1

    # ----------------------------------------------------------------------------- writing

    def append(self, drafts: Iterable[Draft], *, run: int, now: float) -> list[Event]:
        """Numbers, stores and returns the drafts' events."""
        events = []
        for draft in drafts:
            event = Event.from_draft(draft, seq=self.last_seq + 1, ts=now, run=run)
            self._store(event.seq, event.to_line())
            # Counted only once stored: a failed store leaves no gap in the numbering.
            self.last_seq = event.seq
            events.append(event)
        return events

    def _store(self, seq: int, line: str) -> None:
        if self.path is not None:
            data = line + "\n"
            # Encoded before anything changes, so a line that cannot be stored changes nothing.
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
            writer = self._open_writer()
            writer.write(data)
            if self._indexed_upto >= 0 and (seq - 1) % INDEX_EVERY == 0:
                self._index.append((seq, self._size))
                self._indexed_upto = seq
            self._size += size
            self._dirty = True
        else:
            self._memory_written += len(line) + 1
        self._tail.append((seq, line))
        self._tail_bytes += len(line)
        while len(self._tail) > self._max_events or (
            self._tail_bytes > self._max_bytes and len(self._tail) > 1
        ):
            _, old = self._tail.popleft()
            self._tail_bytes -= len(old)

    def _open_writer(self) -> IO[str]:
        if self._writer is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._indexed_upto < 0:
                self._build_index()
            self._writer = self.path.open("a", encoding="utf-8", newline="\n")
        return self._writer

    @property
    def bytes_stored(self) -> int:
        """The size of everything stored so far (the file, or what passed through memory)."""
        return self._size if self.path is not None else self._memory_written

    def flush(self) -> None:
        if self._writer is not None and self._dirty:
            self._writer.flush()
            self._dirty = False

    def close(self) -> None:
        """Flushes and closes the file; reads still work (they reopen it)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._dirty = False

    def drop_after(self, seq: int) -> None:
        """Forgets the events after ``seq`` (file and memory): a re-attached run writes them
        again from its spool (`arp.agents.reattach`)."""
        if seq >= self.last_seq:
            return
        self.close()
        while self._tail and self._tail[-1][0] > seq:
            _, old = self._tail.pop()
            self._tail_bytes -= len(old)
        if self.path is not None and self.path.exists():
            offset = 0
            with self.path.open("rb") as reader:
                for raw in reader:
                    try:
                        if line_seq(raw[:-1].decode("utf-8", errors="replace")) > seq:
                            break
                    except (ValueError, KeyError, TypeError):
                        pass
                    offset += len(raw)
            with self.path.open("r+b") as f:
                f.truncate(offset)
            self._size = offset
            self._index = []
            self._indexed_upto = -1
        self.last_seq = seq

    # ----------------------------------------------------------------------------- reading

    def lines_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` stored lines with seq > ``after_seq``, oldest first."""
        if after_seq >= self.last_seq or limit <= 0:
            return []
        after_seq = max(after_seq, 0)
        if self._tail and self._tail[0][0] <= after_seq + 1:
            start = after_seq + 1 - self._tail[0][0]
            if start < len(self._tail) and self._tail[start][0] == after_seq + 1:
                end = min(len(self._tail), start + limit)
                return [self._tail[i] for i in range(start, end)]
            # Numbering has no gaps (append counts a seq only once stored); should one appear
            # anyway, a filter is slower but never skips or repeats a line.
            return [item for item in self._tail if item[0] > after_seq][:limit]
        if self.path is None or not self.path.exists():
            # Memory-only and fallen out of the tail: those events are gone; start at the tail.
            return list(self._tail)[:limit]
        return self._read_file(after_seq, limit)

    def events_after(self, after_seq: int, limit: int) -> list[Event]:
        return [Event.from_line(line) for _, line in self.lines_after(after_seq, limit)]

    def _read_file(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        assert self.path is not None
        self.flush()
        if self._indexed_upto < 0:
            self._build_index()
        offset = 0
        for seq, off in reversed(self._index):
            if seq <= after_seq + 1:
                offset = off
                break
        out: list[tuple[int, str]] = []
        with self.path.open("rb") as reader:
            reader.seek(offset)
            for raw in reader:
                if not raw.endswith(b"\n"):
                    break  # a line still being written
                line = raw[:-1].decode("utf-8", errors="replace")
                try:
                    seq = line_seq(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged line (torn write before a crash) is skipped
                if seq <= after_seq:
                    continue
                out.append((seq, line))
                if len(out) >= limit:
                    break
        return out

    def _build_index(self) -> None:
        """Scans the file once for offsets (after a restart)."""
        assert self.path is not None
        self._index = []
        self._indexed_upto = 0
        if not self.path.exists():
            return
        offset = 0
        last = 0
        with self.path.open("rb") as reader:
            for raw in reader:
                if raw.endswith(b"\n"):
                    try:
                        seq = line_seq(raw[:-1].decode("utf-8", errors="replace"))
                    except (ValueError, KeyError, TypeError):
                        seq = 0
                    if seq > last:
                        if (seq - 1) // INDEX_EVERY > (last - 1) // INDEX_EVERY or not self._index:
                            self._index.append((seq, offset))
                        last = seq
                offset += len(raw)
        self._size = offset
        self._indexed_upto = last


def _cut_torn_tail(path: Path) -> None:
    """Drops a last line without its newline (a crash mid-write), so appends stay whole."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(64 * 1024, pos)
            f.seek(pos - step)
            block = f.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = pos - step + newline + 1
                if end != size:
                    f.truncate(end)
                return
            pos -= step
        if size:
            f.truncate(0)


def _last_seq_of(path: Path) -> int:
    """The seq of the last whole line of an events file (0 when it has none)."""
    with path.open("rb") as reader:
        reader.seek(0, os.SEEK_END)
        size = reader.tell()
        block = 64 * 1024
        pos = size
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            reader.seek(pos)
            tail = reader.read(step) + tail
            lines = tail.split(b"\n")
            # The last element is what follows the final newline (empty, or a torn line).
            for raw in reversed(lines[1:-1] if pos > 0 else lines[:-1]):
                try:
                    return line_seq(raw.decode("utf-8", errors="replace"))
                except (ValueError, KeyError, TypeError):
                    continue
            if len(tail) > 16 * 1024 * 1024:
                break
    return 0
