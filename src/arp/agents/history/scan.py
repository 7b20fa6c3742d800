"""Summaries of JSONL session files for listings, without parsing every line.

Parsing every line of a gigabyte of history takes seconds; a listing needs only the head (cwd,
first prompt), the tail (last activity) and a count of messages. The count is a byte-level scan
for the top-level type markers the agents write (compact JSON, so `"type":"user"` exactly),
leaving out lines that nest whole messages (Claude's `progress`). A file that grew since the
last scan is scanned only from where the last scan stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arp.agents.history.files import (
    Stamp,
    lines_of,
    loads_object,
    read_head,
    read_tail,
    same_prefix,
    signature,
)
from arp.agents.history.model import parse_time
from arp.config import HistoryLimits


@dataclass(slots=True)
class HeadInfo:
    """What the first lines of a session say about it."""

    session_id: str | None = None
    cwd: str | None = None
    created: float | None = None
    first_prompt: str | None = None
    git_branch: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class ScanRules:
    """What one agent's byte-level scan looks for."""

    count: tuple[bytes, ...]
    """Markers each counting one message where they occur."""
    exclude: tuple[bytes, ...] = ()
    """Lines holding one of these are left out of the count (they nest other records)."""
    titles: tuple[bytes, ...] = ()
    """Markers of lines that carry a title: such lines are parsed and fed to `read_title`."""
    read_head: Callable[[Iterable[dict[str, Any]]], HeadInfo] = field(
        default=lambda records: HeadInfo()
    )
    read_title: Callable[[dict[str, Any], dict[str, str]], None] = field(
        default=lambda record, titles: None
    )


@dataclass(slots=True)
class ScanState:
    """One file's summary so far, and where its scan stopped."""

    stamp: Stamp
    head: bytes
    offset: int = 0
    count: int = 0
    info: HeadInfo = field(default_factory=HeadInfo)
    titles: dict[str, str] = field(default_factory=dict)
    last_activity: float | None = None
    full: bool = False
    """The count and titles cover the file up to `offset`, the last whole line of `stamp`."""


_SHORT_HEAD = 64 * 1024


class Scanner:
    """Scans files by `rules`, keeping each file's state so an append is scanned alone."""

    def __init__(self, rules: ScanRules, limits: HistoryLimits) -> None:
        self._rules = rules
        self._limits = limits
        self._states: dict[Path, ScanState] = {}
        self._lock = threading.Lock()

    def scan(self, path: Path, stamp: Stamp, *, full: bool) -> ScanState:
        """The file's summary: head and tail always; the count and titles too when `full`.

        A listing sorts and filters on the quick part of every file and asks for the full part
        only for the sessions it returns, so a gigabyte of history is not read to list it.
        """
        with self._lock:
            old = self._states.get(path)
        if old is not None and old.stamp == stamp:
            if old.full or not full:
                return old
            state = replace(old, titles=dict(old.titles))
        else:
            head = signature(path)
            if old is None or stamp.size < old.stamp.size or not same_prefix(old.head, head):
                state = ScanState(stamp=stamp, head=head, info=self._read_head(path, stamp))
            else:
                state = ScanState(
                    stamp=stamp,
                    head=head,
                    offset=old.offset,
                    count=old.count,
                    info=old.info,
                    titles=dict(old.titles),
                )
            tail = read_tail(path, stamp.size, self._limits.tail_bytes)
            state.last_activity = _last_time(tail)
        if full:
            self._advance(path, state)
            state.full = True
        with self._lock:
            self._states[path] = state
        return state

    def _read_head(self, path: Path, stamp: Stamp) -> HeadInfo:
        """Parse the first lines: a short read, a longer one only when it said too little."""
        size = min(_SHORT_HEAD, self._limits.head_bytes)
        info = self._rules.read_head(lines_of(read_head(path, size)))
        if (info.cwd is None or info.first_prompt is None) and stamp.size > size:
            info = self._rules.read_head(lines_of(read_head(path, self._limits.head_bytes)))
        return info

    def keep_only(self, paths: set[Path]) -> None:
        """Forget the files no longer listed (deleted sessions)."""
        with self._lock:
            for path in [path for path in self._states if path not in paths]:
                del self._states[path]

    def _advance(self, path: Path, state: ScanState) -> None:
        """Count and find titles from `state.offset` on.

        Works on each chunk in place (ranges, not slices), so a gigabyte is not copied again;
        only a line cut by a chunk's edge is put together.
        """
        carry = b""
        skipping = False  # inside a line longer than max_line, which is left uncounted
        position = state.offset
        end = state.stamp.size
        try:
            with path.open("rb") as handle:
                handle.seek(position)
                while position < end:
                    data = handle.read(min(self._limits.read_chunk, end - position))
                    if not data:
                        break
                    chunk_at = position
                    position += len(data)
                    start = 0
                    if carry or skipping:
                        newline = data.find(b"\n")
                        if newline < 0:
                            if not skipping:
                                carry += data
                                if len(carry) > self._limits.max_line:
                                    carry, skipping = b"", True
                            continue
                        if not skipping:
                            joined = carry + data[: newline + 1]
                            self._take(state, joined, 0, len(joined))
                        carry, skipping = b"", False
                        start = newline + 1
                        # Counted (or skipped) for good: the next scan starts after it.
                        state.offset = chunk_at + start
                    last = data.rfind(b"\n", start)
                    if last < 0:
                        carry = data[start:]
                        continue
                    self._take(state, data, start, last + 1)
                    carry = data[last + 1 :]
                    state.offset = chunk_at + last + 1
        except OSError:
            pass  # gone or unreadable mid-scan: what was counted stands until the next stamp

    def _take(self, state: ScanState, data: bytes, start: int, end: int) -> None:
        """Account for the whole lines in data[start:end]."""
        rules = self._rules
        total = 0
        for marker in rules.count:
            total += data.count(marker, start, end)
        for marker in rules.exclude:
            for line in _lines_with(data, marker, start, end):
                total -= sum(line.count(counted) for counted in rules.count)
        state.count += total
        for marker in rules.titles:
            for line in _lines_with(data, marker, start, end):
                record = loads_object(line)
                if record is not None:
                    rules.read_title(record, state.titles)


def _lines_with(data: bytes, marker: bytes, start: int, end: int) -> list[bytes]:
    """The lines of data[start:end] holding `marker`, found without splitting the rest."""
    found = []
    hit = data.find(marker, start, end)
    while hit >= 0:
        line_start = max(start, data.rfind(b"\n", start, hit) + 1)
        line_end = data.find(b"\n", hit, end)
        line_end = end if line_end < 0 else line_end
        found.append(data[line_start:line_end])
        hit = data.find(marker, line_end, end)
    return found


def _last_time(tail: bytes) -> float | None:
    """The timestamp of the last line that has one (parsed from the end: tails hold big lines)."""
    end = len(tail)
    while end > 0:
        start = tail.rfind(b"\n", 0, end - 1) + 1
        record = loads_object(tail[start:end])
        end = start
        if record is not None:
            moment = parse_time(record.get("timestamp"))
            if moment is not None:
                return moment
    return None
