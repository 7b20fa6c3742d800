"""The event log: numbering, the bounded memory tail, the file behind it, reloading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arp.agents.eventlog import INDEX_EVERY, EventLog, line_seq
from arp.agents.events import Draft


def fill(log: EventLog, n: int, run: int = 0) -> None:
    for i in range(n):
        log.append([Draft("text", text=f"t{i}")], run=run, now=float(i))


def test_numbers_without_gaps_and_reads_from_memory(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", max_memory_events=10)
    events = log.append([Draft("text", text="a"), Draft("stderr", text="b")], run=0, now=1.0)
    assert [e.seq for e in events] == [1, 2]
    fill(log, 5)
    assert log.last_seq == 7
    lines = log.lines_after(3, 100)
    assert [seq for seq, _ in lines] == [4, 5, 6, 7]
    assert [e.seq for e in log.events_after(5, 1)] == [6]
    assert log.lines_after(7, 10) == []
    assert log.lines_after(-5, 2)[0][0] == 1


def test_falls_back_to_the_file_past_the_memory_tail(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_memory_events=50, max_memory_bytes=10_000)
    total = 3 * INDEX_EVERY + 17
    fill(log, total)
    # Every slice, wherever it starts, is complete and in order.
    for after in (0, 1, INDEX_EVERY - 1, INDEX_EVERY, 2 * INDEX_EVERY + 5, total - 60, total - 3):
        got = [seq for seq, _ in log.lines_after(after, 100)]
        want = list(range(after + 1, min(total, after + 100) + 1))
        assert got == want, after
    log.close()
    assert sum(1 for _ in path.open()) == total


def test_reload_continues_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    fill(log, INDEX_EVERY + 3)
    log.close()
    # A torn last line (a crash mid-write) is ignored.
    with path.open("a") as f:
        f.write('{"seq":99999,"ts":')
    again = EventLog(path, max_memory_events=5)
    assert again.last_seq == INDEX_EVERY + 3
    assert [s for s, _ in again.lines_after(INDEX_EVERY, 10)] == [
        INDEX_EVERY + 1,
        INDEX_EVERY + 2,
        INDEX_EVERY + 3,
    ]
    again.append([Draft("status", text="later")], run=1, now=9.0)
    assert again.last_seq == INDEX_EVERY + 4
    assert [s for s, _ in again.lines_after(INDEX_EVERY + 2, 10)][-1] == INDEX_EVERY + 4
    assert [s for s, _ in again.lines_after(0, 3)] == [1, 2, 3]


def test_memory_only_log_is_bounded() -> None:
    log = EventLog(None, max_memory_events=4)
    fill(log, 10)
    assert [seq for seq, _ in log.lines_after(0, 100)] == [7, 8, 9, 10]
    assert [seq for seq, _ in log.lines_after(8, 100)] == [9, 10]


def test_line_seq() -> None:
    assert line_seq('{"seq":12,"ts":1}') == 12
    assert line_seq(json.dumps({"ts": 1, "seq": 3})) == 3


def test_a_failed_store_leaves_no_gap_in_the_numbering(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    log = EventLog(tmp_path / "file" / "events.jsonl")
    with pytest.raises(OSError):
        log.append([Draft("text", text="a")], run=0, now=0.0)
    assert log.last_seq == 0 and log.lines_after(0, 10) == []


def test_a_line_with_a_lone_surrogate_is_stored_and_read_back(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.append([Draft("text", text="a")], run=0, now=0.0)
    log.append([Draft("text", text="half \ud83d", raw_text='"\ud83d"', raw="x")], run=0, now=0.0)
    log.append([Draft("text", text="b")], run=0, now=0.0)
    assert [seq for seq, _ in log.lines_after(0, 10)] == [1, 2, 3]
    log.flush()
    again = EventLog(tmp_path / "events.jsonl")
    assert [e.text for e in again.events_after(0, 10)] == ["a", "half \ud83d", "b"]
