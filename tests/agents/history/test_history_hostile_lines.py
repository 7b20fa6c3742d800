"""History files holding lines that break naive parsing: deep nesting, NaN, odd growth."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.agents.history.trees import (
    CLAUDE_ENTRIES_PER_TURN,
    claude_lines,
    sid,
    write_gemini_json,
)

from arp.agents.history import HistoryLimits, HistoryReaders, claude
from arp.agents.history.files import lines_of, loads_object, stamp_of
from arp.agents.history.scan import Scanner

DEEP = b'{"type":"user","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def readers_for(home: Path, **limits: float) -> HistoryReaders:
    limits.setdefault("parse_budget", float("inf"))
    return HistoryReaders(
        claude_dir=home / ".claude",
        claude_json=home / ".claude.json",
        codex_dir=home / ".codex",
        gemini_dir=home / ".gemini",
        limits=HistoryLimits(**limits),  # type: ignore[arg-type]
    )


def test_a_deeply_nested_line_is_skipped_not_raised() -> None:
    assert loads_object(DEEP) is None
    assert list(lines_of(b'{"a":1}\n' + DEEP + b'\n{"b":2}\n')) == [{"a": 1}, {"b": 2}]


def test_nan_and_infinity_become_null() -> None:
    record = loads_object(b'{"a":NaN,"b":[Infinity,-Infinity],"c":1}')
    assert record == {"a": None, "b": [None, None], "c": 1}
    json.dumps(record, allow_nan=False)


def test_a_listing_survives_a_deeply_nested_line(tmp_path: Path) -> None:
    folder = tmp_path / ".claude" / "projects" / "-w"
    folder.mkdir(parents=True)
    lines = claude_lines(sid(1), "/w", 2, 0.0)
    body = "".join(lines[:2]) + DEEP.decode() + "\n" + "".join(lines[2:])
    (folder / f"{sid(1)}.jsonl").write_text(body)
    readers = readers_for(tmp_path)
    page = readers.sessions("claude", limit=10)
    assert [s.id for s in page.items] == [sid(1)]
    assert readers.messages("claude", sid(1), limit=1000).total > 0


def test_a_gemini_json_session_with_nan_serves_null(tmp_path: Path) -> None:
    path = write_gemini_json(tmp_path / ".gemini", "p", "/w", sid(2), turns=2, start=0.0)
    text = path.read_text()
    assert text.count('"path": "f0"') == 1
    path.write_text(text.replace('"path": "f0"', '"path": NaN'))
    page = readers_for(tmp_path).messages("gemini", sid(2), limit=100)
    served = json.dumps([m.to_json() for m in page.items], allow_nan=False)
    assert '"path": null' in served or '"path":null' in served


def scan_count(scanner: Scanner, path: Path) -> int:
    stamp = stamp_of(path)
    assert stamp is not None
    return scanner.scan(path, stamp, full=True).count


def test_a_file_grown_in_odd_splits_keeps_exact_counts(tmp_path: Path) -> None:
    limits = HistoryLimits(read_chunk=13)
    content = "".join(claude_lines(sid(3), "/w", 6, 0.0)).encode()
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"")
    growing = Scanner(claude.RULES, limits)
    rng = random.Random(7)
    at = 0
    steps = 0
    while at < len(content):
        piece = content[at : at + rng.randint(1, 300)]
        at += len(piece)
        with path.open("ab") as handle:
            handle.write(piece)
        steps += 1
        # The same as a scan of the file as it is now, from scratch.
        assert scan_count(growing, path) == scan_count(Scanner(claude.RULES, limits), path), steps
    assert scan_count(growing, path) == 6 * CLAUDE_ENTRIES_PER_TURN


def test_the_tail_of_an_oversized_line_is_not_counted(tmp_path: Path) -> None:
    limits = HistoryLimits(read_chunk=7, max_line=5000)
    lines = claude_lines(sid(4), "/w", 2, 0.0)
    assert max(len(line.encode()) for line in lines) < 5000
    big = '{"type":"summary","pad":"' + "x" * 20_000 + '","m":{"type":"user"}}\n'
    path = tmp_path / "s.jsonl"
    path.write_text(lines[0] + big + "".join(lines[1:]))
    assert scan_count(Scanner(claude.RULES, limits), path) == 2 * CLAUDE_ENTRIES_PER_TURN
    # Appended to in two scans, cut inside the big line: still not counted, nothing twice.
    path.write_text(lines[0] + big[:12_000])
    growing = Scanner(claude.RULES, limits)
    scan_count(growing, path)
    with path.open("a") as handle:
        handle.write(big[12_000:] + "".join(lines[1:]))
    assert scan_count(growing, path) == 2 * CLAUDE_ENTRIES_PER_TURN
