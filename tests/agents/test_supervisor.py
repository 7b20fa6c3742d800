"""The per-run supervisor's pieces without a run: the spool's bound, the cursor, reading whole
records, and cutting an event log back (`arp.agents.supervisor`, `arp.agents.reattach`)."""

from __future__ import annotations

import os
from pathlib import Path

from arp.agents.eventlog import EventLog
from arp.agents.events import Draft
from arp.agents.reattach import Cursor, SupervisedRun
from arp.agents.supervisor import SPOOL_FULL, STDERR, STDOUT, Spool, alive, identity
from arp.config import SessionBounds


def test_the_spool_ends_with_a_note_at_its_bound(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        spool = Spool(tmp_path / "out", write_end, limit=80)
        spool.append(STDOUT, [b"x" * 40])
        spool.append(STDOUT, [b"y" * 40])  # 42 + 42 > 80: the note instead
        spool.append(STDERR, [b"z"])  # dropped
        spool.sync()
        data = (tmp_path / "out").read_bytes()
        assert data == b"o" + b"x" * 40 + b"\n" + STDERR + SPOOL_FULL % 80 + b"\n"
        assert os.read(read_end, 100) == b".."  # one wake-up per append that wrote
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_cursor_is_rewritten_in_place(tmp_path: Path) -> None:
    cursor = Cursor(tmp_path / "cursor")
    assert cursor.load() is None
    cursor.save(123456, 42)
    cursor.save(7, 3)
    cursor.close()
    assert Cursor(tmp_path / "cursor").load() == (7, 3)


async def test_reading_takes_whole_records_grouped_by_stream(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"oa\nob\neE\noc\nopartial")
    run = SupervisedRun(tmp_path, SessionBounds())
    try:
        assert run.read(until=6) == [(b"o", [b"a", b"b"])]
        assert run.read() == [(b"e", [b"E"]), (b"o", [b"c"])]
        assert run.read() == []  # a record still being written is left for later
        assert run.offset == len(b"oa\nob\neE\noc\n")
        assert run.ended()  # no supervisor recorded: it is gone
        assert run.outcome() == (
            None,
            "the run's supervisor ended without recording how the agent ended",
        )
    finally:
        run.close()


def test_identity_matches_only_the_same_process() -> None:
    me = identity(os.getpid())
    assert alive(me)
    assert not alive({**me, "start": (me["start"] or 0) + 1})
    assert not alive(None) and not alive({"pid": 1, "start": None, "boot": None})


def test_drop_after_cuts_the_log_back(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.append([Draft("text", text=str(i)) for i in range(10)], run=0, now=1.0)
    log.close()
    again = EventLog(tmp_path / "events.jsonl")
    again.drop_after(4)
    assert again.last_seq == 4
    again.append([Draft("text", text="next")], run=0, now=2.0)
    assert [seq for seq, _ in again.lines_after(0, 100)] == [1, 2, 3, 4, 5]
    again.close()
    assert EventLog(tmp_path / "events.jsonl").last_seq == 5
