"""The sessions API over real HTTP on loopback, driving the fake CLIs as child processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from arp.agents.history import HistoryReaders
from arp.agents.reap import child_identity
from arp.command.server import CommandServer
from tests.command.sessions_support import (
    fake_config,
    pid_alive,
    post_json,
    process_gone,
    run_to_end,
    sse_events,
    start,
    wait_for_file,
)
from tests.conftest import units


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CommandServer]:
    history = HistoryReaders(
        claude_dir=tmp_path / "home" / ".claude",
        codex_dir=tmp_path / "home" / ".codex",
        gemini_dir=tmp_path / "home" / ".gemini",
    )
    async with CommandServer(fake_config(tmp_path), history=history) as srv:
        yield srv


@pytest.fixture
async def http(server: CommandServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as client:
        yield client


async def wait_for_kind(http: aiohttp.ClientSession, sid: str, kind: str) -> None:
    for _ in range(500):
        async with http.get(f"/api/sessions/{sid}") as resp:
            if any(e["kind"] == kind for e in (await resp.json())["events"]):
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} event")


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


async def test_binds_loopback_on_an_ephemeral_port(server: CommandServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0


@pytest.mark.parametrize(
    ("executor", "tool", "lines"),
    [("Claude", "Bash", 7), ("codex", "command_execution", 8), ("GEMINI", "list_directory", 8)],
)
async def test_start_stream_completed(
    http: aiohttp.ClientSession, tmp_path: Path, executor: str, tool: str, lines: int
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    session = await start(
        http, executor=executor, prompt="events=3", projectPath=str(project), model="m-1"
    )
    assert session["status"] == "running"
    assert session["executor"] == executor.lower()
    assert session["project_path"] == str(project.resolve())

    events, final = await run_to_end(http, session["session_id"])

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert final["status"] == "completed"
    assert final["exit_code"] == 0
    assert final["agent_session_id"]
    assert final["last_seq"] == events[-1]["seq"]
    texts = [e["text"] for e in events if e["kind"] == "text"]
    assert texts == ["piece 0", "piece 1", "piece 2"]
    calls = [e for e in events if e["kind"] == "tool_call"]
    assert calls and calls[0]["tool_name"] == tool
    results = [e for e in events if e["kind"] == "tool_result"]
    assert results and "a.txt" in results[0]["text"]
    assert kinds(events)[0] == "prompt"
    assert events[0]["text"] == "events=3"
    assert kinds(events)[-2:] == ["result", "status"]
    assert final["usage"]["output_tokens"] in (20, 40)
    first_cli = next(e for e in events if e["kind"] == "system")
    assert first_cli["agent_session_id"] == final["agent_session_id"]
    # Every raw CLI line is kept, and the child ran in the project folder.
    assert first_cli["raw"]["cwd"] == str(project.resolve())
    raws = [e["raw"] for e in events if "raw" in e]
    assert len(raws) == lines  # each line the fake printed, once
    assert all("raw" not in e for e in events if e["kind"] in ("prompt", "status"))

    async with http.get(f"/api/sessions/{session['session_id']}") as resp:
        state = await resp.json()
    assert state["status"] == "completed"
    assert [e["seq"] for e in state["events"]] == [e["seq"] for e in events]
    assert state["has_more"] is False


async def test_claude_reports_cost_and_command_line(http: aiohttp.ClientSession) -> None:
    session = await start(
        http,
        executor="claude",
        prompt="events=1",
        model="opus",
        permissionMode="acceptEdits",
        allowedTools=["Bash(git:*)", "Read"],
    )
    events, final = await run_to_end(http, session["session_id"])
    assert final["cost_usd"] == pytest.approx(0.0125)
    assert final["usage"] == {"input_tokens": 10, "output_tokens": 20, "cost_usd": 0.0125}
    init = next(e for e in events if e["kind"] == "system")
    assert init["raw"]["argv"] == [
        "-p",
        "events=1",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "opus",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Bash(git:*)",
        "Read",
    ]
    assert init["raw"]["arp_session_id"] == session["session_id"]


async def test_non_json_stderr_and_failure_are_kept(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="claude", prompt="nonjson=1 stderr=1 exit=3")
    events, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "failed"
    assert final["exit_code"] == 3
    assert "exited with code 3" in final["error"]
    assert {"kind": "text", "text": "this line is not JSON"}.items() <= next(
        e for e in events if e.get("text") == "this line is not JSON"
    ).items()
    stderr = [e["text"] for e in events if e["kind"] == "stderr"]
    assert stderr == ["warning: fake stderr line one", "fake stderr line two"]


async def test_error_result_marks_failed(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="gemini", prompt="error=1")
    events, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "failed"
    assert final["error"] == "the fake failed"
    result = next(e for e in events if e["kind"] == "result")
    assert result["is_error"] is True


async def test_bare_paths_and_openapi(http: aiohttp.ClientSession) -> None:
    async with http.post("/sessions", json={"executor": "codex", "prompt": "events=1"}) as resp:
        assert resp.status == 201
        session = await resp.json()
        assert resp.headers["Location"] == f"/sessions/{session['session_id']}"
    _, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "completed"
    async with http.get("/sessions") as resp:
        listing = await resp.json()
    assert [s["session_id"] for s in listing["sessions"]] == [session["session_id"]]
    async with http.get(f"/sessions/{session['session_id']}", params={"after": 2}) as resp:
        state = await resp.json()
    assert state["events"][0]["seq"] == 3
    async with http.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/events",
        "/api/sessions/{session_id}/ws",
        "/api/sessions/{session_id}/messages",
        "/api/sessions/{session_id}/cancel",
    ):
        assert path in doc["paths"]


async def test_history_routes_are_mounted(http: aiohttp.ClientSession) -> None:
    for path in ("/api/claude/sessions", "/api/codex/sessions", "/gemini/sessions"):
        async with http.get(path) as resp:
            assert resp.status == 200, path
    async with http.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert any(path.startswith("/api/claude/") for path in doc["paths"])


async def test_the_agent_list_is_served_from_the_executors_table(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/api/agents") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [(a["name"], a["display_name"]) for a in body["agents"]] == [
        ("claude", "Claude"),
        ("codex", "Codex"),
        ("gemini", "Gemini"),
    ]
    # Each says whether this arpc can run it (here: the fakes), where, and which version.
    claude = body["agents"][0]
    assert claude["found"] is True and claude["path"].endswith("/claude")
    assert claude["version"] == "2.1.197 (Claude Code)"
    assert claude["install"] == "npm install -g @anthropic-ai/claude-code"
    async with http.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert "/api/agents" in doc["paths"]


async def test_list_is_newest_first_and_paged(http: aiohttp.ClientSession) -> None:
    ids = []
    for _ in range(3):
        session = await start(http, executor="claude", prompt="events=1")
        await run_to_end(http, session["session_id"])
        ids.append(session["session_id"])
    async with http.get("/api/sessions", params={"limit": 2}) as resp:
        page1 = await resp.json()
    async with http.get("/api/sessions", params={"limit": 2, "offset": 2}) as resp:
        page2 = await resp.json()
    assert page1["total"] == 3
    got = [s["session_id"] for s in page1["sessions"] + page2["sessions"]]
    assert got == list(reversed(ids))


async def test_sse_replay_after_dropped_connection(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="claude", prompt=f"events=30 sleep={units(0.02)}")
    sid = session["session_id"]
    seen: list[int] = []
    # First connection: read a few events, then drop it mid-stream.
    async with http.get(f"/api/sessions/{sid}/events") as resp:
        async for item in sse_events(resp):
            assert item.id is not None
            seen.append(item.id)
            if len(seen) == 5:
                break
    # Reconnect as an EventSource does, with Last-Event-ID (which wins over ?after=).
    async with http.get(
        f"/api/sessions/{sid}/events", params={"after": 1}, headers={"Last-Event-ID": "5"}
    ) as resp:
        async for item in sse_events(resp):
            if item.event == "end":
                final = item.data
                break
            assert item.id is not None
            seen.append(item.id)
    assert seen == list(range(1, final["last_seq"] + 1))
    assert final["status"] == "completed"
    # ?after= on a finished session replays only the tail, then ends.
    events, _ = await run_to_end(http, sid, after=final["last_seq"] - 2)
    assert [e["seq"] for e in events] == [final["last_seq"] - 1, final["last_seq"]]


async def test_websocket_replays_and_follows(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="gemini", prompt=f"events=10 sleep={units(0.02)}")
    sid = session["session_id"]
    seqs: list[int] = []
    async with http.ws_connect(f"/api/sessions/{sid}/ws", params={"after": 1}) as ws:
        async for message in ws:
            data = json.loads(message.data)
            if data.get("type") == "end":
                end = data["session"]
                break
            seqs.append(data["seq"])
    assert seqs == list(range(2, end["last_seq"] + 1))
    assert end["status"] == "completed"


async def test_websocket_from_another_site_is_refused(
    http: aiohttp.ClientSession, server: CommandServer
) -> None:
    session = await start(http, executor="claude", prompt="events=1")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(
            f"/api/sessions/{session['session_id']}/ws", origin="http://evil.example"
        )
    assert caught.value.status == 403
    status, _body = await post_json(http, "/api/sessions", {"executor": "claude", "prompt": "x"})
    assert status == 201
    async with http.post(
        "/api/sessions",
        json={"executor": "claude", "prompt": "x"},
        headers={"Origin": "http://evil.example"},
    ) as resp:
        assert resp.status == 403
    async with http.post(
        "/api/sessions",
        json={"executor": "claude", "prompt": "x"},
        headers={"Origin": server.url},
    ) as resp:
        assert resp.status == 201


@pytest.mark.parametrize(
    ("executor", "resume_args"),
    [
        ("claude", lambda sid: ["--resume", sid]),
        ("codex", lambda sid: ["resume", sid]),
        ("gemini", lambda sid: ["--resume", sid]),
    ],
)
async def test_follow_up_resumes_the_conversation(
    http: aiohttp.ClientSession, executor: str, resume_args: Any
) -> None:
    session = await start(http, executor=executor, prompt="events=1")
    sid = session["session_id"]
    events0, first = await run_to_end(http, sid)
    agent_id = first["agent_session_id"]
    assert agent_id

    status, body = await post_json(
        http, f"/api/sessions/{sid}/messages", {"prompt": "events=2 and again"}
    )
    assert status == 200, body
    assert body["status"] == "running"
    assert body["runs"] == 2
    events1, final = await run_to_end(http, sid, after=first["last_seq"])

    assert final["status"] == "completed"
    assert final["agent_session_id"] == agent_id
    assert {e["run"] for e in events1} == {1}
    assert events1[0]["seq"] == first["last_seq"] + 1
    assert events1[0] == {**events1[0], "kind": "prompt", "text": "events=2 and again"}
    argv = next(e for e in events1 if e["kind"] == "system")["raw"]["argv"]
    expected = resume_args(agent_id)
    assert any(argv[i : i + len(expected)] == expected for i in range(len(argv)))
    if executor == "codex":
        assert argv == [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "resume",
            agent_id,
            "events=2 and again",
        ]
    # Usage adds up over the runs.
    single = events0[-2]["usage"]["output_tokens"]
    assert final["usage"]["output_tokens"] == 2 * single


async def test_follow_up_conflicts(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="claude", prompt=f"events=50 sleep={units(0.05)}")
    sid = session["session_id"]
    status, body = await post_json(http, f"/api/sessions/{sid}/messages", {"prompt": "more"})
    assert status == 409 and "running" in body["error"]["message"]
    await post_json(http, f"/api/sessions/{sid}/cancel")
    quiet = await start(http, executor="codex", prompt="noid=1")
    await run_to_end(http, quiet["session_id"])
    status, body = await post_json(
        http, f"/api/sessions/{quiet['session_id']}/messages", {"prompt": "more"}
    )
    assert status == 409 and "conversation id" in body["error"]["message"]


async def test_cancel_mid_run_leaves_no_process(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pidfile, childfile = tmp_path / "fake.pid", tmp_path / "child.pid"
    session = await start(
        http,
        executor="claude",
        prompt=f"events=1000 sleep={units(0.05)} pidfile={pidfile} child={childfile}",
    )
    sid = session["session_id"]
    pid = int(await wait_for_file(pidfile, units(10)))
    child = int(await wait_for_file(childfile, units(10)))
    assert pid_alive(pid) and pid_alive(child)
    await wait_for_kind(http, sid, "text")

    status, body = await post_json(http, f"/api/sessions/{sid}/cancel")
    assert status == 200, body
    assert body["status"] == "cancelled"
    assert body["pid"] is None
    assert process_gone(pid), "the agent survived cancel"
    for _ in range(100):
        if process_gone(child):
            break
        await asyncio.sleep(0.02)
    assert process_gone(child), "the agent's own child survived cancel"
    # History is kept, and the stream ends at once.
    events, final = await run_to_end(http, sid)
    assert final["status"] == "cancelled"
    assert any(e["kind"] == "text" for e in events)
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "cancelled"
    # Cancelling again is harmless.
    status, body = await post_json(http, f"/api/sessions/{sid}/cancel")
    assert status == 200 and body["status"] == "cancelled"


async def test_cancel_escalates_when_sigint_is_ignored(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pidfile = tmp_path / "fake.pid"
    session = await start(
        http,
        executor="codex",
        prompt=f"events=1000 sleep={units(0.05)} trap=int,term pidfile={pidfile}",
    )
    pid = int(await wait_for_file(pidfile, units(10)))
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, body = await post_json(http, f"/api/sessions/{session['session_id']}/cancel")
    took = loop.time() - began
    assert status == 200
    assert body["status"] == "cancelled"
    assert body["exit_code"] == -9  # only SIGKILL ended it
    assert took >= units(2) * 0.9  # both grace periods ran
    assert process_gone(pid)


async def test_delete_stops_and_removes(
    http: aiohttp.ClientSession, tmp_path: Path, server: CommandServer
) -> None:
    pidfile = tmp_path / "fake.pid"
    session = await start(
        http, executor="gemini", prompt=f"events=1000 sleep={units(0.05)} pidfile={pidfile}"
    )
    sid = session["session_id"]
    pid = int(await wait_for_file(pidfile, units(10)))
    folder = tmp_path / "data" / "sessions" / sid
    assert (folder / "events.jsonl").exists()
    async with http.delete(f"/api/sessions/{sid}") as resp:
        assert resp.status == 204
    assert process_gone(pid)
    assert not folder.exists()
    async with http.get(f"/api/sessions/{sid}") as resp:
        assert resp.status == 404
        assert "no session" in (await resp.json())["error"]["message"]
    async with http.delete(f"/api/sessions/{sid}") as resp:
        assert resp.status == 404


async def test_restart_keeps_history(tmp_path: Path) -> None:
    config = fake_config(tmp_path)
    async with CommandServer(config) as first, aiohttp.ClientSession(base_url=first.url) as http:
        done = await start(http, executor="claude", prompt="events=3")
        done_events, done_final = await run_to_end(http, done["session_id"])
        alive = await start(http, executor="codex", prompt=f"events=1000 sleep={units(0.05)}")
        await asyncio.sleep(units(0.3))
    async with CommandServer(config) as second, aiohttp.ClientSession(base_url=second.url) as http:
        async with http.get("/api/sessions") as resp:
            listing = await resp.json()
        by_id = {s["session_id"]: s for s in listing["sessions"]}
        assert by_id[done["session_id"]]["status"] == "completed"
        assert by_id[alive["session_id"]]["status"] == "interrupted"
        events, final = await run_to_end(http, done["session_id"])
        assert events == done_events
        assert final["agent_session_id"] == done_final["agent_session_id"]
        # The conversation continues after the restart.
        status, _ = await post_json(
            http, f"/api/sessions/{done['session_id']}/messages", {"prompt": "events=1"}
        )
        assert status == 200
        events, final = await run_to_end(http, done["session_id"], after=done_final["last_seq"])
        assert final["status"] == "completed"
        argv = next(e for e in events if e["kind"] == "system")["raw"]["argv"]
        assert argv[argv.index("--resume") + 1] == done_final["agent_session_id"]


async def test_crash_while_running_shows_interrupted(tmp_path: Path) -> None:
    """A session stored as running with no supervised run to re-attach to (as an arpc before
    issue 20 left it) is interrupted when the next arpc starts, and the agent the dead arpc
    left behind is stopped (runs that do have a supervisor: test_sessions_survive_functional)."""
    config = fake_config(tmp_path)
    async with CommandServer(config) as first, aiohttp.ClientSession(base_url=first.url) as http:
        done = await start(http, executor="claude", prompt="events=2")
        await run_to_end(http, done["session_id"])
    leftover = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        meta_path = tmp_path / "data" / "sessions" / done["session_id"] / "session.json"
        meta = json.loads(meta_path.read_text())
        meta.update(status="running", child=child_identity(leftover.pid))
        meta_path.write_text(json.dumps(meta))
        async with CommandServer(config) as second:
            session = second.manager.get(done["session_id"])
            assert session.status == "interrupted"
            assert session.last_seq >= 2
            assert session.error and "arpc stopped" in session.error
            assert leftover.wait(timeout=units(5)) == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"executor": "cursor", "prompt": "x"}, 400, "unknown executor 'cursor'"),
        ({"prompt": "x"}, 400, "'executor' is required"),
        ({"executor": "claude"}, 400, "'prompt' is required"),
        ({"executor": "claude", "prompt": "  "}, 400, "must not be empty"),
        ({"executor": "claude", "prompt": "x", "projectPath": "/no/such/dir"}, 400, "not exist"),
        ({"executor": "codex", "prompt": "x", "maxTurns": 3}, 400, "codex does not support"),
        ({"executor": "gemini", "prompt": "x", "permissionMode": "sideways"}, 400, "not known"),
        ({"executor": "claude", "prompt": "x" * 300_000}, 413, "the limit is"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_start_errors(
    http: aiohttp.ClientSession, body: Any, status: int, words: str
) -> None:
    got, data = await post_json(http, "/api/sessions", body)
    assert got == status, data
    assert data["error"]["status"] == status
    assert words in data["error"]["message"]


async def test_project_path_checks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "file.txt").write_text("x")
    config = fake_config(tmp_path, allowed_root=root)
    async with CommandServer(config) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        status, body = await post_json(
            http,
            "/api/sessions",
            {"executor": "claude", "prompt": "x", "project_path": str(tmp_path / "outside")},
        )
        assert status == 403 and "outside the allowed root" in body["error"]["message"]
        status, body = await post_json(
            http,
            "/api/sessions",
            {"executor": "claude", "prompt": "x", "projectPath": str(root / "inside" / "..")},
        )
        assert status == 201
        status, body = await post_json(
            http,
            "/api/sessions",
            {"executor": "claude", "prompt": "x", "projectPath": str(root / "file.txt")},
        )
        assert status == 400 and "not a directory" in body["error"]["message"]
        status, body = await post_json(http, "/api/sessions", {"executor": "claude", "prompt": "x"})
        assert status == 201 and body["project_path"] == str(root.resolve())


async def test_binary_not_found_names_what_was_looked_for(tmp_path: Path) -> None:
    config = fake_config(tmp_path, command_path=str(tmp_path / "nowhere" / "claude"))
    async with CommandServer(config) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        status, body = await post_json(http, "/api/sessions", {"executor": "claude", "prompt": "x"})
    assert status == 400
    message = body["error"]["message"]
    assert "--command-path" in message and "nowhere/claude" in message


async def test_max_sessions_gives_429(tmp_path: Path) -> None:
    config = fake_config(tmp_path, max_sessions=2)
    async with CommandServer(config) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        slow = {"executor": "claude", "prompt": f"events=1000 sleep={units(0.05)}"}
        a = await start(http, **slow)
        await start(http, **slow)
        status, body = await post_json(http, "/api/sessions", slow)
        assert status == 429 and "--max-sessions" in body["error"]["message"]
        await post_json(http, f"/api/sessions/{a['session_id']}/cancel")
        status, body = await post_json(http, "/api/sessions", slow)
        assert status == 201


async def test_request_errors(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/sessions", data="{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]["message"]
    async with http.post("/api/sessions", data='{"executor":"claude","prompt":"x"}') as resp:
        assert resp.status == 415
        assert "application/json" in (await resp.json())["error"]["message"]
    async with http.get("/api/sessions/nope") as resp:
        assert resp.status == 404
        # One shape for every error: the status, a stable code and the message.
        assert (await resp.json())["error"] == {
            "status": 404,
            "code": "session_not_found",
            "message": "no session 'nope'",
        }
    async with http.get("/api/sessions/nope/events") as resp:
        assert resp.status == 404
    async with http.get("/api/sessions", params={"limit": "many"}) as resp:
        assert resp.status == 400
    async with http.get("/api/nothing-here") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["status"] == 404
    async with http.put("/api/sessions") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
    status, _body = await post_json(http, "/api/sessions/nope/messages", {"prompt": "x"})
    assert status == 404


async def test_long_lines_are_cut_not_fatal(tmp_path: Path) -> None:
    config = fake_config(tmp_path, session_overrides={"max_line": 4096, "read_chunk": 1024})
    async with CommandServer(config) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        session = await start(http, executor="claude", prompt="big=20000 events=1")
        events, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "completed"
    cut = [e for e in events if "[line cut by arp]" in (e.get("text") or "")]
    assert len(cut) == 1 and len(cut[0]["text"]) < 4200
    # The lines after the long one are parsed as usual.
    assert [e["kind"] for e in events][-2:] == ["result", "status"]


async def test_output_beyond_the_cap_is_not_kept(tmp_path: Path) -> None:
    config = fake_config(tmp_path, session_overrides={"max_output_bytes": 4000})
    async with CommandServer(config) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        session = await start(http, executor="claude", prompt="events=200")
        events, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "completed"
    capped = [e for e in events if e["kind"] == "error"]
    assert len(capped) == 1 and "not kept" in capped[0]["text"]
    # The state still follows the run: its usage arrived after the cap.
    assert final["usage"]["output_tokens"] == 20
    assert events[-1]["kind"] == "status"
    assert len(events) < 150  # checked per chunk read, so it overshoots by at most one


async def test_open_streams_end_when_the_server_closes(tmp_path: Path) -> None:
    server = CommandServer(fake_config(tmp_path))
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            session = await start(
                http, executor="claude", prompt=f"events=1000 sleep={units(0.05)}"
            )
            sid = session["session_id"]
            async with http.get(f"/api/sessions/{sid}/events", params={"token": "abc"}) as resp:
                got = 0
                async for _ in sse_events(resp):
                    got += 1
                    if got == 2:
                        break
                loop = asyncio.get_running_loop()
                began = loop.time()
                await server.close()
                assert loop.time() - began < units(5)
                rest = await asyncio.wait_for(resp.content.read(), units(5))
                assert b"id: " not in rest or rest.endswith(b"\n\n")
    finally:
        await server.close()
    assert server.manager.get(sid).status == "interrupted"


async def test_token_query_parameter_is_ignored(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/sessions", params={"token": "client-1"}, json={"executor": "claude", "prompt": "x"}
    ) as resp:
        assert resp.status == 201
        sid = (await resp.json())["session_id"]
    async with http.get(f"/api/sessions/{sid}", params={"token": "client-1", "after": 1}) as resp:
        assert resp.status == 200
    async with http.get("/api/sessions", params={"token": "client-1"}) as resp:
        assert (await resp.json())["total"] == 1


async def test_nothing_outlives_a_completed_run(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    childfile = tmp_path / "child.pid"
    session = await start(http, executor="gemini", prompt=f"events=1 child={childfile}")
    _, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "completed"
    child = int(childfile.read_text())
    for _ in range(100):
        if process_gone(child):
            break
        await asyncio.sleep(0.02)
    assert process_gone(child), "a grandchild outlived its completed run"


async def test_sse_keeps_a_silent_stream_alive(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="claude", prompt=f"events=1 sleep={units(1.2)}")
    async with http.get(f"/api/sessions/{session['session_id']}/events") as resp:
        body = await asyncio.wait_for(resp.content.read(), units(10))
    assert b": keep-alive\n\n" in body  # idle_tick is half a unit in these tests
    assert body.rstrip().endswith(b"}") and b"event: end" in body


async def test_websocket_client_may_leave_mid_stream(http: aiohttp.ClientSession) -> None:
    session = await start(http, executor="codex", prompt=f"events=100 sleep={units(0.05)}")
    sid = session["session_id"]
    async with http.ws_connect(f"/api/sessions/{sid}/ws") as ws:
        first = json.loads((await ws.receive(timeout=units(5))).data)
        assert first["seq"] == 1
    status, body = await post_json(http, f"/api/sessions/{sid}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    # A new connection still replays everything from the start.
    seqs = []
    async with http.ws_connect(f"/api/sessions/{sid}/ws") as ws:
        async for message in ws:
            data = json.loads(message.data)
            if data.get("type") == "end":
                break
            seqs.append(data["seq"])
    assert seqs == list(range(1, data["session"]["last_seq"] + 1))


async def test_stored_sessions_are_private(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    session = await start(http, executor="claude", prompt="events=1")
    await run_to_end(http, session["session_id"])
    assert (tmp_path / "data" / "sessions").stat().st_mode & 0o777 == 0o700
    folder = tmp_path / "data" / "sessions" / session["session_id"]
    assert folder.stat().st_mode & 0o777 == 0o700


async def test_a_cli_that_is_not_logged_in_says_so_once_with_what_to_do(
    http: aiohttp.ClientSession,
) -> None:
    # Claude Code's own answer: an error result "Not logged in · Please run /login".
    session = await start(http, executor="claude", prompt="nologin=1")
    _, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "failed"
    error = final["error"]
    assert error.startswith("Claude is not logged in on this computer")
    assert "Not logged in · Please run /login" in error and "type /login" in error
    assert error.count("not logged in") == 1
    # Gemini CLI's: one stderr line naming the auth settings, exit 41.
    session = await start(http, executor="gemini", prompt="nologin=1")
    _, final = await run_to_end(http, session["session_id"])
    assert final["status"] == "failed" and final["exit_code"] == 41
    assert final["error"].startswith("Gemini is not logged in on this computer")
    assert "Please set an Auth method" in final["error"] and "GEMINI_API_KEY" in final["error"]
