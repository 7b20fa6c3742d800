"""Parsed sessions kept in memory, re-read only where the file changed.

A session file is parsed once; a later read of the same size and mtime is served from memory,
and a file that grew (an agent still running) is parsed only from where the last read stopped.
A rewritten file is parsed again from the start. The memory held is bounded by the sum of the
cached files' sizes; the least recently read are dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from arp.agents.history.files import (
    Stamp,
    iter_lines,
    loads_json,
    loads_object,
    same_prefix,
    signature,
    stamp_of,
)
from arp.agents.history.model import HistoryMessage, HistoryNotFound
from arp.config import HistoryLimits
from arp.errors import ArpError

_CLOCK_EVERY = 32
"""Lines parsed between looks at the clock."""


class TranscriptParser(Protocol):
    """Turns an agent's records, fed in file order, into normalised messages."""

    def feed(self, record: dict[str, Any]) -> None: ...

    def messages(self) -> Sequence[HistoryMessage]: ...

    def count(self) -> int:
        """len(messages()), without building them where that costs."""
        ...


@dataclass(slots=True)
class _Entry:
    stamp: Stamp
    head: bytes
    offset: int
    parser: TranscriptParser
    complete: bool = False
    """Every complete line up to `stamp.size` has been fed."""


class TranscriptCache:
    """Thread-safe: the HTTP layer calls it from worker threads."""

    def __init__(self, limits: HistoryLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._entries: OrderedDict[Path, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def page(
        self,
        path: Path,
        new_parser: Callable[[], TranscriptParser],
        *,
        jsonl: bool,
        offset: int,
        limit: int,
    ) -> tuple[tuple[HistoryMessage, ...], int, bool]:
        """Messages [offset, offset+limit) of the session at `path`, how many are known, and
        whether that is all of them.

        A JSONL file is parsed only as far as the page needs, then on for at most
        `HistoryLimits.parse_budget` seconds; each later call carries on from there. So the
        first page of a huge session comes back at once, and `complete` says when the count
        became exact.
        """
        with self._lock:
            entry = self._prepare(path, new_parser, jsonl)
            if jsonl and not entry.complete:
                self._feed_lines(path, entry, need=offset + limit + 1)
            elif not jsonl and not entry.complete:
                self._feed_document(path, entry)
            messages = entry.parser.messages()
            return tuple(messages[offset : offset + limit]), len(messages), entry.complete

    def forget(self, path: Path) -> None:
        with self._lock:
            self._entries.pop(path, None)

    def _prepare(
        self, path: Path, new_parser: Callable[[], TranscriptParser], jsonl: bool
    ) -> _Entry:
        stamp = stamp_of(path)
        if stamp is None:
            self._entries.pop(path, None)
            raise HistoryNotFound(f"session file {path.name} is gone")
        if stamp.size > self._limits.max_transcript_bytes:
            raise ArpError(
                f"session file {path.name} is {stamp.size} bytes, more than the "
                f"{self._limits.max_transcript_bytes} this reader parses",
                status=413,
            )
        entry = self._entries.get(path)
        if entry is not None and entry.stamp == stamp:
            self._entries.move_to_end(path)
            return entry
        head = signature(path)
        resumable = (
            jsonl
            and entry is not None
            and stamp.size >= entry.stamp.size
            and same_prefix(entry.head, head)
        )
        if entry is None or not resumable:
            entry = _Entry(stamp, head, 0, new_parser())
        entry.stamp = stamp
        entry.head = head
        entry.complete = False
        self._entries[path] = entry
        self._entries.move_to_end(path)
        self._evict()
        return entry

    def _feed_lines(self, path: Path, entry: _Entry, need: int) -> None:
        """Parse on from `entry.offset`: until `need` messages are known, then within budget."""
        deadline = self._clock() + self._limits.parse_budget
        parser = entry.parser
        lines = iter_lines(
            path,
            entry.offset,
            chunk=self._limits.read_chunk,
            max_line=self._limits.max_line,
            end=entry.stamp.size,
        )
        try:
            for count, (offset, line) in enumerate(lines):
                record = loads_object(line)
                if record is not None:
                    parser.feed(record)
                entry.offset = offset
                if (
                    count % _CLOCK_EVERY == 0
                    and self._clock() >= deadline
                    and parser.count() >= need
                ):
                    return
        except FileNotFoundError:
            self._entries.pop(path, None)
            raise HistoryNotFound(f"session file {path.name} is gone") from None
        except OSError as error:
            self._entries.pop(path, None)
            raise ArpError(f"cannot read session file {path.name}: {error.strerror}") from None
        finally:
            lines.close()
        entry.complete = True

    def _feed_document(self, path: Path, entry: _Entry) -> None:
        entry.complete = True
        try:
            value = loads_json(path.read_bytes())
        except (OSError, ValueError):
            value = None  # half-written or gone: an empty session until the next write
        if isinstance(value, dict):
            entry.parser.feed(value)

    def _evict(self) -> None:
        total = sum(entry.stamp.size for entry in self._entries.values())
        while total > self._limits.transcript_cache_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.stamp.size
