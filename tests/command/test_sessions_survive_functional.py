"""Runs outlive arpc (issue 20): kill -9 or stop arpc mid-run, start it again on the same data dir.

arpc here is a command server in a child process (`tests.command.arpc_child`) that the test
kills; the agents are the fake CLIs, printing a line every so often. What must hold: the run
completes with everything it printed while arpc was away, its events are numbered 1..N with no
gap and no repeat, a stream client reconnecting with its last seq gets exactly the rest, an
agent that ended (or was killed) meanwhile ends the session with its real exit status, a
pending approval is asked again, and a graceful stop cancels runs unless told to keep them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from arp.client.cli import _sessions, build_parser
from tests.command.sessions_support import (
    post_json,
    process_gone,
    run_to_end,
    sse_events,
    start,
    wait_for_file,
)
from tests.conftest import units

ROOT = Path(__file__).resolve().parents[2]


class Arpc:
    """One arpc (a command server) in a child process on ``tmp_path``'s data dir."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, tmp_path: Path, *flags: str) -> Arpc:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.command.arpc_child", str(tmp_path), *flags,
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), units(20))
        assert line.startswith(b"http://"), line
        return cls(process, line.decode().strip())

    async def kill(self) -> None:
        self.process.kill()
        await asyncio.wait_for(self.process.wait(), units(10))

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), units(20))

    async def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(base_url=self.url)


@pytest.fixture
async def arpcs() -> AsyncIterator[list[Arpc]]:
    """Every arpc a test starts is gone at its end, whatever happened."""
    started: list[Arpc] = []
    yield started
    for arpc in started:
        if arpc.process.returncode is None:
            arpc.process.kill()
            await arpc.process.wait()


async def events_until(
    http: aiohttp.ClientSession, session_id: str, predicate: Any
) -> list[dict[str, Any]]:
    """Follows the stream until ``predicate(events)`` holds; the events seen so far."""
    events: list[dict[str, Any]] = []
    async with http.get(f"/api/sessions/{session_id}/events") as resp:
        async with asyncio.timeout(units(20)):
            async for item in sse_events(resp):
                if item.event == "end":
                    break
                events.append(item.data)
                if predicate(events):
                    break
    return events


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["kind"] == "text"]


async def test_kill_9_mid_run_the_run_completes_with_every_event_once(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    pidfile = tmp_path / "agent.pid"
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"events=8 sleep={units(0.4)} pidfile={pidfile}"
        )
        sid = session["session_id"]
        seen = await events_until(http, sid, lambda events: len(texts(events)) >= 2)
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.kill()
    await asyncio.sleep(units(1.2))  # the agent goes on printing with nobody reading
    assert not process_gone(agent), "the agent died with arpc"
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        # A client that saw up to seq K reconnects: it gets exactly K+1.. to the end.
        last = seen[-1]["seq"]
        rest, final = await run_to_end(http, sid, after=last)
        assert [e["seq"] for e in rest] == list(range(last + 1, final["last_seq"] + 1))
        everything, _ = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    assert final["exit_code"] == 0
    assert [e["seq"] for e in everything] == list(range(1, final["last_seq"] + 1))
    assert everything[: len(seen)] == seen
    assert len(texts(everything)) == 8
    assert [e["kind"] for e in everything].count("result") == 1
    assert everything[-1]["kind"] == "status" and everything[-1]["status"] == "completed"
    assert process_gone(agent)


async def test_last_event_id_reconnect_after_a_crash_gets_the_rest(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(http, executor="codex", prompt=f"events=6 sleep={units(0.3)}")
        sid = session["session_id"]
        seen = await events_until(http, sid, lambda events: len(texts(events)) >= 1)
    await first.kill()
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        headers = {"Last-Event-ID": str(seen[-1]["seq"])}
        rest: list[dict[str, Any]] = []
        async with http.get(f"/api/sessions/{sid}/events", headers=headers) as resp:
            async for item in sse_events(resp):
                if item.event == "end":
                    final = item.data
                    break
                rest.append(item.data)
    assert final["status"] == "completed"
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, final["last_seq"] + 1))
    assert len(texts(seen + rest)) == 6


async def test_an_agent_that_ends_while_arpc_is_down_ends_with_its_exit_status(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(http, executor="gemini", prompt=f"events=3 sleep={units(0.3)} exit=3")
        sid = session["session_id"]
        await events_until(http, sid, lambda events: len(texts(events)) >= 1)
    await first.kill()
    await asyncio.sleep(units(1.5))  # it ends, exit code 3, while no arpc runs
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        events, final = await run_to_end(http, sid)
    assert final["status"] == "failed" and final["exit_code"] == 3, final
    assert "exited with code 3" in final["error"]
    assert len(texts(events)) == 3
    assert [e["seq"] for e in events] == list(range(1, final["last_seq"] + 1))


async def test_an_agent_killed_while_arpc_is_down_ends_failed_with_its_status(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    pidfile = tmp_path / "agent.pid"
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"events=100 sleep={units(0.2)} pidfile={pidfile}"
        )
        sid = session["session_id"]
        await events_until(http, sid, lambda events: len(texts(events)) >= 1)
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.kill()
    os.kill(agent, signal.SIGKILL)
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        events, final = await run_to_end(http, sid)
    assert final["status"] == "failed", final
    assert final["exit_code"] == -signal.SIGKILL
    assert events[-1]["kind"] == "status" and events[-1]["exit_code"] == -signal.SIGKILL
    assert "interrupted" not in {e.get("status") for e in events}


async def test_sigterm_cancels_runs_by_default(tmp_path: Path, arpcs: list[Arpc]) -> None:
    pidfile = tmp_path / "agent.pid"
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"events=100 sleep={units(0.2)} pidfile={pidfile}"
        )
        sid = session["session_id"]
        await events_until(http, sid, lambda events: len(texts(events)) >= 1)
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.stop()
    assert process_gone(agent), "a graceful stop left the agent running"
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        events, final = await run_to_end(http, sid)
    assert final["status"] == "interrupted"
    assert [e["seq"] for e in events] == list(range(1, final["last_seq"] + 1))


async def test_sigterm_with_keep_runs_on_stop_leaves_the_run_to_the_next_arpc(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    pidfile = tmp_path / "agent.pid"
    first = await Arpc.start(tmp_path, "--keep-runs-on-stop")
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"events=6 sleep={units(0.3)} pidfile={pidfile}"
        )
        sid = session["session_id"]
        seen = await events_until(http, sid, lambda events: len(texts(events)) >= 1)
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.stop()
    assert first.process.returncode == 0
    assert not process_gone(agent), "--keep-runs-on-stop stopped the agent"
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        rest, final = await run_to_end(http, sid, after=seen[-1]["seq"])
    assert final["status"] == "completed", final
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, final["last_seq"] + 1))
    assert len(texts(seen + rest)) == 6


async def test_a_pending_approval_is_asked_again_after_a_crash(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    target = tmp_path / "touched.txt"
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"touch={target}", permissionMode="ask"
        )
        sid = session["session_id"]
        before = await events_until(
            http, sid, lambda events: events[-1]["kind"] == "approval_request"
        )
    await first.kill()
    second = await Arpc.start(tmp_path)
    arpcs.append(second)
    async with await second.http() as http:
        async with asyncio.timeout(units(10)):
            while True:
                async with http.get("/api/approvals") as resp:
                    approvals = (await resp.json())["approvals"]
                if approvals:
                    break
                await asyncio.sleep(0.05)
        (again,) = approvals
        old = before[-1]
        assert again["session_id"] == sid and again["tool_name"] == "Bash"
        assert again["tool_input"] == old["tool_input"]
        assert again["approval_id"] != old["approval_id"]
        status, _ = await post_json(
            http, f"/api/sessions/{sid}/approvals/{again['approval_id']}", {"decision": "allow"}
        )
        assert status == 200
        events, final = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    assert target.exists()
    assert [e["seq"] for e in events] == list(range(1, final["last_seq"] + 1))
    requests = [e for e in events if e["kind"] == "approval_request"]
    assert len(requests) == 2 and requests[1]["tool_id"] == requests[0]["tool_id"]


async def test_a_deleted_sessions_supervisor_reaps_its_agent(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    """An orphan (its session folder is gone while no arpc watches it) stops by itself."""
    pidfile = tmp_path / "agent.pid"
    first = await Arpc.start(tmp_path)
    arpcs.append(first)
    async with await first.http() as http:
        session = await start(
            http, executor="claude", prompt=f"events=100 sleep={units(0.2)} pidfile={pidfile}"
        )
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.kill()
    shutil.rmtree(tmp_path / "data" / "sessions" / session["session_id"])
    async with asyncio.timeout(units(10)):
        while not process_gone(agent):
            await asyncio.sleep(0.05)


async def test_without_a_data_dir_a_killed_arpcs_runs_are_reaped(
    tmp_path: Path, arpcs: list[Arpc]
) -> None:
    """Nothing stored, nothing to re-attach to: the supervisor sees its arpc gone and stops."""
    pidfile = tmp_path / "agent.pid"
    config = tmp_path / "arpc.json"
    config.write_text('{"data_dir": null}')
    first = await Arpc.start(tmp_path, "--config-json", str(config))
    arpcs.append(first)
    async with await first.http() as http:
        await start(
            http, executor="claude", prompt=f"events=100 sleep={units(0.2)} pidfile={pidfile}"
        )
    agent = int(await wait_for_file(pidfile, units(10)))
    await first.kill()
    async with asyncio.timeout(units(10)):
        while not process_gone(agent):
            await asyncio.sleep(0.05)


def test_arpc_keep_runs_on_stop_flag() -> None:
    parser = build_parser()
    assert _sessions(parser.parse_args(["--command-mode"]))["keep_runs_on_stop"] is False
    args = parser.parse_args(["--command-mode", "--keep-runs-on-stop"])
    assert _sessions(args)["keep_runs_on_stop"] is True
