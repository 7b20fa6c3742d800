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
from dataclasses import dataclass, field
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
from arp.agents.history.model import HistoryLimits, parse_time


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


class Scanner:
    """Scans files by `rules`, keeping each file's state so an append is scanned alone."""

    def __init__(self, rules: ScanRules, limits: HistoryLimits) -> None:
        self._rules = rules
        self._limits = limits
        self._states: dict[Path, ScanState] = {}
        self._lock = threading.Lock()

    def scan(self, path: Path, stamp: Stamp) -> ScanState:
        with self._lock:
            state = self._states.get(path)
        if state is not None and state.stamp == stamp:
            return state
        head = signature(path)
        if state is None or stamp.size < state.stamp.size or not same_prefix(state.head, head):
            state = ScanState(stamp=stamp, head=head)
            fresh = True
        else:
            state = ScanState(
                stamp=stamp,
                head=head,
                offset=state.offset,
                count=state.count,
                info=state.info,
                titles=dict(state.titles),
            )
            fresh = False
        first = self._advance(path, state)
        if fresh:
            if len(first) < min(self._limits.head_bytes, stamp.size):
                first = read_head(path, self._limits.head_bytes)
            state.info = self._rules.read_head(lines_of(first[: self._limits.head_bytes]))
        state.last_activity = _last_time(read_tail(path, stamp.size, self._limits.tail_bytes))
        with self._lock:
            self._states[path] = state
        return state

    def keep_only(self, paths: set[Path]) -> None:
        """Forget the files no longer listed (deleted sessions)."""
        with self._lock:
            for path in [path for path in self._states if path not in paths]:
                del self._states[path]

    def _advance(self, path: Path, state: ScanState) -> bytes:
        """Count and find titles from `state.offset` on; returns the first chunk read.

        Works on each chunk in place (ranges, not slices), so a gigabyte is not copied again;
        only a line cut by a chunk's edge is put together.
        """
        first = b""
        carry = b""
        position = state.offset
        end = state.stamp.size
        try:
            with path.open("rb") as handle:
                handle.seek(position)
                while position < end:
                    data = handle.read(min(self._limits.read_chunk, end - position))
                    if not data:
                        break
                    position += len(data)
                    if not first:
                        first = data
                    start = 0
                    if carry:
                        newline = data.find(b"\n")
                        if newline < 0:
                            carry += data
                            if len(carry) > self._limits.max_line:
                                carry = b""  # an oversized line is left uncounted
                            continue
                        joined = carry + data[: newline + 1]
                        self._take(state, joined, 0, len(joined))
                        start = newline + 1
                    last = data.rfind(b"\n", start)
                    if last < 0:
                        carry = data[start:]
                        continue
                    self._take(state, data, start, last + 1)
                    carry = data[last + 1 :]
                    state.offset = position - len(carry)
        except OSError:
            pass  # gone or unreadable mid-scan: what was counted stands until the next stamp
        return first

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
