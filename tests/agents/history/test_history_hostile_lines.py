"""History files holding lines that break naive parsing: deep nesting, NaN, odd growth."""

from __future__ import annotations

import json
from pathlib import Path

from tests.agents.history.trees import claude_lines, sid, write_gemini_json

from arp.agents.history import HistoryLimits, HistoryReaders
from arp.agents.history.files import lines_of, loads_object

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
