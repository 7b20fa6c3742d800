"""History browsing under load: 2,000 Claude sessions totalling ~1 GB, one of them 100 MB.

Targets (issue 4): first project listing ≤ 3 s, repeated listings ≤ 100 ms, one page of a
100 MB session ≤ 200 ms. The tree is generated in a temporary folder and removed afterwards.
The files were just written, so they are in the page cache: "first" means a cold reader
(nothing parsed or cached in memory), not a cold disk. A listing reads every file's head and
tail but whole files only for the sessions it shows; "every session counted" shows the cost of
reading them all. A long session's first page comes after at most `parse_budget` of parsing.

    .venv/bin/python bench/history_bench.py [--sessions 2000] [--total-mb 1024] [--big-mb 100]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agents.history.trees import claude_lines, sid, write_claude_session

from arp.agents.history import HistoryReaders

MAX_TOTAL_MB = 2048
GENERATE_DEADLINE = 300.0
_TURN_OVERHEAD = 2470
"""Bytes of JSON around one turn's tool output in the generated lines (measured)."""
_ESCAPE_GROWTH = 1.12
"""The generated tool output grows by this much once its newlines and quotes are escaped."""


def _filler_for(turn_bytes: int) -> int:
    return max(0, int((turn_bytes - _TURN_OVERHEAD) / _ESCAPE_GROWTH))


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def generate(root: Path, sessions: int, total_mb: int, big_mb: int) -> int:
    """Write the tree; returns the bytes written. Bounded in size and time."""
    claude = root / ".claude"
    deadline = time.monotonic() + GENERATE_DEADLINE
    turns = 10
    big_turns = 2000
    big_filler = _filler_for(big_mb * 1024 * 1024 // big_turns)
    write_claude_session(claude, "/home/bench/big", sid(0), big_turns, 0.0, filler=big_filler)
    rest = max(0, total_mb - big_mb) * 1024 * 1024
    filler = _filler_for(rest // max(1, sessions - 1) // turns)
    for n in range(1, sessions):
        if time.monotonic() > deadline:
            raise SystemExit(f"generation passed {GENERATE_DEADLINE}s at session {n}")
        cwd = f"/home/bench/project-{n % 40}"
        write_claude_session(
            claude, cwd, sid(n), turns, n * 60.0, filler=filler, subagent=n % 97 == 0
        )
    return sum(path.stat().st_size for path in claude.rglob("*.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--total-mb", type=int, default=1024)
    parser.add_argument("--big-mb", type=int, default=100)
    args = parser.parse_args()
    if args.total_mb > MAX_TOTAL_MB:
        raise SystemExit(f"--total-mb is capped at {MAX_TOTAL_MB}")
    root = Path(tempfile.mkdtemp(prefix="arp-history-bench-"))
    try:
        seconds, size = timed(lambda: generate(root, args.sessions, args.total_mb, args.big_mb))
        print(f"generated {args.sessions} sessions, {size / 2**20:.0f} MiB in {seconds:.1f} s")
        readers = HistoryReaders(claude_dir=root / ".claude")

        first, projects = timed(lambda: readers.projects("claude"))
        print(f"first project listing:    {first * 1000:8.1f} ms  ({len(projects)} projects)")
        repeats = [timed(lambda: readers.projects("claude"))[0] for _ in range(5)]
        print(f"repeated listing (median):{statistics.median(repeats) * 1000:8.1f} ms")
        sessions = [timed(lambda: readers.sessions("claude", limit=50))[0] for _ in range(5)]
        print(f"sessions page (median):   {statistics.median(sessions) * 1000:8.1f} ms")

        counted, _ = timed(
            lambda: [readers.sessions("claude", limit=1000, offset=o) for o in (0, 1000)]
        )
        print(
            f"every session counted (2 pages of 1000): {counted * 1000:8.1f} ms  (whole files read)"
        )
        grown = root / ".claude" / "projects" / "-home-bench-project-1" / f"{sid(1)}.jsonl"
        with grown.open("a") as handle:
            handle.writelines(claude_lines(sid(1), "/home/bench/project-1", 1, 1e7)[1:])
        appended, _ = timed(lambda: readers.projects("claude"))
        print(f"listing after an append:  {appended * 1000:8.1f} ms")

        big = readers.session("claude", sid(0))
        print(f"big session: {big.size / 2**20:.0f} MiB, {big.message_count} entries")
        cold, page = timed(lambda: readers.messages("claude", sid(0), offset=0, limit=100))
        print(
            f"big session, first page (cold):      {cold * 1000:8.1f} ms"
            f"  (total so far {page.total}, complete={page.complete})"
        )
        calls = 1
        spent = cold
        while not page.complete and calls < 1000:
            seconds, page = timed(lambda: readers.messages("claude", sid(0), limit=100))
            spent += seconds
            calls += 1
        print(
            f"big session indexed after {calls} page requests, {spent * 1000:.0f} ms in all"
            f" ({page.total} messages)"
        )
        last_offset = max(0, page.total - 100)
        warm = [
            timed(lambda: readers.messages("claude", sid(0), offset=last_offset, limit=100))[0]
            for _ in range(5)
        ]
        print(f"big session, last page (warm, median): {statistics.median(warm) * 1000:8.3f} ms")
        big_path = root / ".claude" / "projects" / "-home-bench-big" / f"{sid(0)}.jsonl"
        with big_path.open("a") as handle:
            handle.writelines(claude_lines(sid(0), "/home/bench/big", 1, 1e7)[1:])
        after, page = timed(lambda: readers.messages("claude", sid(0), offset=last_offset))
        print(
            f"big session, a page after an append:  {after * 1000:8.1f} ms  ({page.total} messages)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"removed {root}")


if __name__ == "__main__":
    main()
