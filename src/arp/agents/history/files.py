"""Reading the agents' files: stamps for caching, complete JSONL lines, heads and tails.

A running agent appends to its file while we read it, so a read only ever consumes up to the
last newline: a half-written last line is left for the next read, never parsed as garbage.
"""

from __future__ import annotations

import json
import os
import stat as stat_module
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SIGNATURE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Stamp:
    """What says a file changed: its size and modification time (and its first bytes)."""

    size: int
    mtime_ns: int


def stamp_of(path: Path) -> Stamp | None:
    """The file's stamp, or None when it is gone or not a regular file."""
    try:
        stat = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not _is_regular(stat.st_mode):
        return None
    return Stamp(stat.st_size, stat.st_mtime_ns)


def entry_stamp(entry: os.DirEntry[str]) -> Stamp | None:
    """`stamp_of` for a folder entry just listed (no path object built)."""
    try:
        stat = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    if not _is_regular(stat.st_mode):
        return None
    return Stamp(stat.st_size, stat.st_mtime_ns)


def _is_regular(mode: int) -> bool:
    return stat_module.S_ISREG(mode)


def signature(path: Path) -> bytes:
    """The file's first bytes: an append keeps them, a rewrite (usually) does not."""
    try:
        with path.open("rb") as handle:
            return handle.read(_SIGNATURE_BYTES)
    except OSError:
        return b""


def same_prefix(old: bytes, new: bytes) -> bool:
    """Whether `new` (read later) still starts as `old` did: the file was only appended to."""
    return new[: len(old)] == old


def loads_json(data: str | bytes) -> Any:
    """JSON as history serves it: NaN and Infinity become null (a browser's JSON.parse refuses
    them); raises ValueError for anything that does not parse, nesting too deep included."""
    try:
        return json.loads(data, parse_constant=_null)
    except RecursionError:
        raise ValueError("JSON nested deeper than it can be parsed") from None


def _null(_: str) -> None:
    return None


def loads_object(line: bytes) -> dict[str, Any] | None:
    """A JSON object from one line, or None for blank, malformed or non-object lines."""
    line = line.strip()
    if not line or line[:1] != b"{":
        return None
    try:
        value = loads_json(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def iter_lines(
    path: Path, start: int, *, chunk: int, max_line: int, end: int | None = None
) -> Generator[tuple[int, bytes], None, None]:
    """(offset just past the line, line) for every complete line from `start`.

    Stops at the last newline (or `end`); a line longer than `max_line` is skipped whole
    without being buffered. The caller resumes a later read at the last offset it saw.
    """
    with path.open("rb") as handle:
        handle.seek(start)
        position = start
        pending = b""
        skipping = False
        while end is None or position < end:
            want = chunk if end is None else min(chunk, end - position)
            data = handle.read(want)
            if not data:
                return
            base = position - len(pending)
            position += len(data)
            buffer = pending + data if pending else data
            cursor = 0
            while True:
                newline = buffer.find(b"\n", cursor)
                if newline < 0:
                    break
                if skipping:
                    skipping = False
                else:
                    yield base + newline + 1, buffer[cursor:newline]
                cursor = newline + 1
            pending = buffer[cursor:]
            if len(pending) > max_line:
                skipping = True
                pending = b""


def read_head(path: Path, size: int) -> bytes:
    """Up to `size` bytes from the start, cut after the last complete line."""
    try:
        with path.open("rb") as handle:
            data = handle.read(size)
    except OSError:
        return b""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


def read_tail(path: Path, file_size: int, size: int) -> bytes:
    """Up to `size` bytes before `file_size`, starting after a newline, ending at one."""
    start = max(0, file_size - size)
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(file_size - start)
    except OSError:
        return b""
    cut = data.rfind(b"\n")
    data = data[: cut + 1] if cut >= 0 else b""
    if start > 0:
        first = data.find(b"\n")
        data = data[first + 1 :] if first >= 0 else b""
    return data


def lines_of(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects among the lines of `data` (malformed ones skipped)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        value = loads_object(data[start:end])
        start = end + 1
        if value is not None:
            yield value


def list_dir(path: Path) -> list[os.DirEntry[str]]:
    """A folder's entries, or none when it does not exist (agent never used)."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def is_file(entry: os.DirEntry[str]) -> bool:
    """A regular file, not followed through a symlink."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def is_dir(entry: os.DirEntry[str]) -> bool:
    """A real folder, not followed through a symlink."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
