"""The one line splitter: agent output (cut mode) and the remote protocol (drop mode)."""

from __future__ import annotations

from arp.agents.lines import Abandoned, LineFramer, Oversize

MARK = b" [cut]"


def test_cut_mode_gives_the_head_at_once_and_drops_the_rest() -> None:
    framer = LineFramer(8, cut_marker=MARK)
    assert framer.feed(b"short\nabcdefghij") == [b"short", b"abcdefgh" + MARK]
    assert framer.feed(b"more of it") == []  # still the cut line: dropped
    assert framer.feed(b"tail\nnext\r\n") == [b"next"]  # no Oversize marker in cut mode
    assert framer.end() is None


def test_cut_mode_cuts_a_long_line_that_ends_in_the_same_chunk() -> None:
    framer = LineFramer(4, cut_marker=MARK)
    assert framer.feed(b"123456789\nok\n") == [b"1234" + MARK, b"ok"]


def test_the_last_line_without_a_newline_comes_at_the_end() -> None:
    framer = LineFramer(100, cut_marker=MARK)
    assert framer.feed(b"a\nb") == [b"a"]
    assert framer.feed(b"c") == []
    assert framer.end() == b"bc"
    assert framer.end() is None


def test_drop_mode_reports_an_oversize_line_once_when_it_ends() -> None:
    framer = LineFramer(4)
    assert framer.feed(b"12345") == []
    assert framer.feed(b"678\nok\n") == [Oversize(8), b"ok"]
    assert framer.feed(b"12345678\n") == [Oversize(8)]


def test_abandon_ends_the_line_as_abandoned() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"abc") == []
    framer.abandon()
    assert framer.buffered == 0
    assert framer.feed(b"def\nx\n") == [Abandoned(6), b"x"]


def test_many_small_lines_in_one_chunk_keep_their_order() -> None:
    framer = LineFramer(16)
    data = b"".join(b"%d\n" % i for i in range(1000))
    assert framer.feed(data) == [b"%d" % i for i in range(1000)]
