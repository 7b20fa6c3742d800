"""The session manager against hostile or odd input: bad output lines, bad requests, races."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from pathlib import Path

import pytest

from arp.agents.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    SessionNotFound,
    TooManySessions,
)
from arp.agents.sessions import SessionConfig, SessionManager, StartRequest
from tests.command.sessions_support import process_gone
from tests.conftest import units
from tests.fakes.install import install_fakes


def config(tmp_path: Path, **changes: object) -> SessionConfig:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "binaries": install_fakes(tmp_path / "bin"),
        "sigint_grace": units(1),
        "sigterm_grace": units(1),
        "kill_wait": units(3),
        "idle_tick": units(0.2),
    }
    values.update(changes)
    return SessionConfig(**values)  # type: ignore[arg-type]


def printing_cli(tmp_path: Path, name: str, output: str) -> str:
    """An executable that ignores its arguments, prints ``output`` and exits 0."""
    data = tmp_path / f"{name}.out"
    data.write_text(output, encoding="utf-8")
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\ncat "{data}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def claude_text(text_json: str) -> str:
    """A Claude stream-json assistant line whose text is the JSON string ``text_json``."""
    return '{"type":"assistant","message":{"content":[{"type":"text","text":' + text_json + "}]}}\n"


RESULT = '{"type":"result","subtype":"success","result":"done","session_id":"s-1"}\n'


async def test_lone_surrogate_in_output_neither_kills_the_pump_nor_hangs_the_run(
    tmp_path: Path,
) -> None:
    # An emoji cut in half, as Node's JSON.stringify writes it; then more than a pipe holds, so
    # a pump that stopped reading would leave the child blocked for good.
    filler = claude_text(json.dumps("x" * 1000)) * 200
    output = claude_text('"half \\ud83d"') + filler + RESULT
    binary = printing_cli(tmp_path, "claude", output)
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        session = await manager.start_session(StartRequest("claude", "hi"))
        final = await manager.wait(session.session_id, units(10))
        assert final.status == "completed", final
        lines = manager.lines_after(session.session_id, 0, limit=10_000)
        assert [seq for seq, _ in lines] == list(range(1, final.last_seq + 1))
        for _, line in lines:
            line.encode("utf-8")
            json.loads(line)
        texts = [e.text for e in manager.events_after(session.session_id, 0, 10_000)]
        assert "half \ud83d" in texts
        assert len(lines) == 1 + 1 + 200 + 1 + 1  # prompt, half, filler, result, status
    # Stored and read back after a restart too.
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        again = manager.lines_after(session.session_id, 0, limit=10_000)
        assert again == lines


@pytest.mark.parametrize(
    "request_",
    [
        StartRequest("claude", "hi \ud800"),
        StartRequest("claude", "hi", model="opus\udfff"),
        StartRequest("claude", "hi", append_system_prompt="be \ud83d"),
        StartRequest("claude", "hi", allowed_tools=("Read\ud800",)),
    ],
)
async def test_lone_surrogate_in_a_request_is_a_400_and_leaves_nothing_behind(
    tmp_path: Path, request_: StartRequest
) -> None:
    async with SessionManager(config(tmp_path, max_sessions=1)) as manager:
        with pytest.raises(BadRequest):
            await manager.start_session(request_)
        assert manager.count() == 0 and manager.running_count() == 0
        assert list((tmp_path / "data" / "sessions").iterdir()) == []
        # The slot is free: a good request runs.
        session = await manager.start_session(StartRequest("claude", "events=1"))
        assert (await manager.wait(session.session_id, units(5))).status == "completed"
        with pytest.raises(BadRequest):
            await manager.send_message(session.session_id, "again \ud800")
        with pytest.raises(BadRequest):
            await manager.send_message(session.session_id, "again", model="m\ud800")
        assert manager.get(session.session_id).status == "completed"
        assert manager.running_count() == 0


def test_start_request_from_json_keeps_the_surrogate_for_the_manager_to_refuse() -> None:
    body = json.loads('{"executor":"claude","prompt":"hi \\ud800"}')
    assert StartRequest.from_json(body).prompt == "hi \ud800"


@pytest.mark.parametrize(
    "request_",
    [
        StartRequest("claude", "hi", allowed_tools=("Bash", "--add-dir=/")),
        StartRequest("claude", "hi", disallowed_tools=("-x",)),
        StartRequest("claude", "hi", allowed_tools=("Bash\nRead",)),
        StartRequest("claude", "hi", allowed_tools=("Bash(x) --mcp-config=/tmp/x",)),
        StartRequest("gemini", "hi", allowed_tools=("--include-directories=/",)),
        StartRequest("claude", "hi", resume_id="--mcp-config=/tmp/x"),
        StartRequest("claude", "hi", resume_id="abc def"),
        StartRequest("codex", "hi", resume_id="-c"),
        StartRequest("gemini", "hi", resume_id="-y"),
        StartRequest("gemini", "hi", model="--include-directories=/"),
        StartRequest("claude", "hi", model="-m"),
        StartRequest("codex", "hi", model="gpt-5 -c x"),
        StartRequest("codex", "hi", model="gpt\t5"),
    ],
)
async def test_options_that_would_inject_flags_are_refused(
    tmp_path: Path, request_: StartRequest
) -> None:
    async with SessionManager(config(tmp_path)) as manager:
        with pytest.raises(BadRequest):
            await manager.start_session(request_)
        assert manager.count() == 0


async def test_claude_tool_rules_and_ids_are_accepted(tmp_path: Path) -> None:
    tools = ("Read", "Bash(git log:*)", "Read(./src/**)", "WebFetch(domain:example.com)")
    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest(
                "claude",
                "events=1",
                model="claude-sonnet-4.5",
                allowed_tools=(*tools, "mcp__server__tool"),
                disallowed_tools=("Bash(rm -rf:*)",),
                resume_id="0b7c1d2e-aaaa-4bbb-8ccc-123456789abc",
            )
        )
        assert (await manager.wait(session.session_id, units(5))).status == "completed"


async def test_a_follow_up_refuses_an_odd_id_the_cli_printed(tmp_path: Path) -> None:
    output = '{"type":"system","subtype":"init","session_id":"--mcp-config=/x"}\n' + RESULT
    binary = printing_cli(tmp_path, "claude", output)
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        session = await manager.start_session(StartRequest("claude", "hi"))
        await manager.wait(session.session_id, units(5))
        with pytest.raises(BadRequest):
            await manager.send_message(session.session_id, "again")


async def test_deeply_nested_and_nan_lines_are_kept_as_text(tmp_path: Path) -> None:
    deep = '{"type":"assistant","x":' + "[" * 100_000 + "]" * 100_000 + "}\n"
    output = deep + '{"type":"assistant","cost":NaN}\n' + RESULT
    binary = printing_cli(tmp_path, "claude", output)
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        session = await manager.start_session(StartRequest("claude", "hi"))
        final = await manager.wait(session.session_id, units(10))
        assert final.status == "completed"
        events = manager.events_after(session.session_id, 0, 100)
        assert [e.kind for e in events] == ["prompt", "text", "text", "result", "status"]
        for _, line in manager.lines_after(session.session_id, 0, 100):
            json.loads(line, parse_constant=lambda name: 1 / 0)


async def test_a_follow_up_racing_a_delete_is_refused(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest("claude", f"events=1000 sleep={units(0.05)}")
        )
        sid = session.session_id
        while not manager.get(sid).agent_session_id:
            await asyncio.sleep(units(0.02))
        deleting = asyncio.ensure_future(manager.delete(sid))
        refused = None
        # Every turn of the loop until the delete ends: the first in which the run is over is
        # the window in which a follow-up used to start a run nobody tracked.
        while not deleting.done():
            with contextlib.suppress(SessionNotFound):
                if manager.get(sid).status != "running":
                    try:
                        await manager.send_message(sid, "events=1")
                    except (SessionNotFound, Conflict) as exc:
                        refused = exc
                    break
            await asyncio.sleep(0)
        await deleting
        assert refused is not None
        assert manager.count() == 0 and manager.running_count() == 0


async def test_allowed_root_is_checked_before_existence(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "file.txt").write_text("x")
    async with SessionManager(config(tmp_path, allowed_root=root)) as manager:
        for outside in (
            str(tmp_path / "outside"),  # exists
            str(tmp_path / "no-such"),  # does not: the same answer
            str(tmp_path / "outside" / "file.txt"),
            str(root / ".." / "no-such"),
            "../outside",
        ):
            with pytest.raises(Forbidden):
                await manager.start_session(StartRequest("claude", "x", project_path=outside))
        with pytest.raises(BadRequest, match="does not exist"):
            await manager.start_session(StartRequest("claude", "x", project_path=str(root / "n")))
        with pytest.raises(BadRequest, match="not a directory"):
            await manager.start_session(StartRequest("claude", "x", project_path="file.txt"))
        # Relative paths are taken from the root, not from arpc's cwd.
        session = await manager.start_session(
            StartRequest("claude", "events=1", project_path="inside")
        )
        assert session.project_path == str((root / "inside").resolve())
        assert manager.count() == 1


async def test_wait_does_not_swallow_a_cancel_that_lands_as_the_run_ends(tmp_path: Path) -> None:
    async with SessionManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest("claude", f"events=2 sleep={units(0.2)}")
        )
        waiter = asyncio.ensure_future(manager.wait(session.session_id, units(30)))
        await asyncio.sleep(units(0.05))
        run = manager._entries[session.session_id].run  # the hazard is in the timing: reach in
        assert run is not None and run.task is not None and not waiter.done()
        # Cancelled in the very turn the run's task finishes.
        run.task.add_done_callback(lambda _: waiter.cancel())
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_the_oldest_finished_sessions_are_evicted_beyond_the_bound(tmp_path: Path) -> None:
    sessions = tmp_path / "data" / "sessions"
    async with SessionManager(config(tmp_path, max_kept_sessions=2)) as manager:
        ids = []
        for _ in range(3):
            session = await manager.start_session(StartRequest("codex", "events=1"))
            await manager.wait(session.session_id, units(5))
            ids.append(session.session_id)
        assert manager.count() == 2
        with pytest.raises(SessionNotFound):
            manager.get(ids[0])
        assert sorted(p.name for p in sessions.iterdir()) == sorted(ids[1:])
        # Running sessions are never evicted: with both slots running, a third is a 429.
        slow = [
            await manager.start_session(StartRequest("codex", f"events=1000 sleep={units(0.05)}"))
            for _ in range(2)
        ]
        assert {s.session_id for s in manager.list()} == {s.session_id for s in slow}
        with pytest.raises(TooManySessions):
            await manager.start_session(StartRequest("codex", "events=1"))
        for s in slow:
            await manager.cancel(s.session_id)
    # A restart with a lower bound keeps the newest only, and removes the others' files.
    async with SessionManager(config(tmp_path, max_kept_sessions=1)) as manager:
        assert [s.session_id for s in manager.list()] == [slow[-1].session_id]
        assert [p.name for p in sessions.iterdir()] == [slow[-1].session_id]


class _BrokenReaderManager(SessionManager):
    """A manager whose reading of the run's output has a bug."""

    def _ingest_records(self, entry, run, supervised, groups):  # type: ignore[no-untyped-def]
        raise RuntimeError("reader bug")


async def test_a_run_whose_reader_died_is_stopped_not_left_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "fake.pid"
    async with _BrokenReaderManager(config(tmp_path)) as manager:
        session = await manager.start_session(
            StartRequest("claude", f"events=1000 sleep={units(0.05)} pidfile={pidfile}")
        )
        final = await manager.wait(session.session_id, units(10))
        assert final.status == "failed" and manager.running_count() == 0
        assert final.error and "reader bug" in final.error
        pid = int(pidfile.read_text())
        for _ in range(200):
            if process_gone(pid):
                break
            await asyncio.sleep(0.02)
        assert process_gone(pid), "the agent outlived a run nobody reads"
