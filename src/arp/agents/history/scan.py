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
    iter_blocks,
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
            if len(first) < self._limits.head_bytes and state.offset < stamp.size:
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
        """Count and find titles from `state.offset` on; returns the first block read."""
        rules = self._rules
        first = b""
        try:
            for end, block in iter_blocks(
                path, state.offset, state.stamp.size, chunk=self._limits.read_chunk
            ):
                if not first:
                    first = block
                state.count += _count(block, rules)
                for marker in rules.titles:
                    if marker in block:
                        for record in _records_with(block, marker):
                            rules.read_title(record, state.titles)
                state.offset = end
        except OSError:
            pass  # gone or unreadable mid-scan: what was counted stands until the next stamp
        return first


def _count(block: bytes, rules: ScanRules) -> int:
    total = sum(block.count(marker) for marker in rules.count)
    for marker in rules.exclude:
        for line in _lines_with(block, marker):
            total -= sum(line.count(counted) for counted in rules.count)
    return total


def _lines_with(block: bytes, marker: bytes) -> list[bytes]:
    """The lines of `block` holding `marker`, found without splitting the whole block."""
    found = []
    start = block.find(marker)
    while start >= 0:
        line_start = block.rfind(b"\n", 0, start) + 1
        line_end = block.find(b"\n", start)
        line_end = len(block) if line_end < 0 else line_end
        found.append(block[line_start:line_end])
        start = block.find(marker, line_end)
    return found


def _records_with(block: bytes, marker: bytes) -> list[dict[str, Any]]:
    records = (loads_object(line) for line in _lines_with(block, marker))
    return [record for record in records if record is not None]


def _last_time(tail: bytes) -> float | None:
    """The timestamp of the last line that has one (parsed from the end: tails hold big lines)."""
    for line in reversed(tail.split(b"\n")):
        record = loads_object(line)
        if record is not None:
            moment = parse_time(record.get("timestamp"))
            if moment is not None:
                return moment
    return None
