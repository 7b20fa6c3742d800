"""The history routes over real loopback sockets, on an app of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from arp.agents.history import HistoryLimits, HistoryReaders
from arp.command.api_history import setup_history_routes
from arp.command.openapi import setup_openapi_route
from tests.agents.history.trees import (
    CLAUDE_MESSAGES_PER_TURN,
    claude_lines,
    encode,
    sid,
    write_claude_session,
    write_codex_session,
    write_gemini_jsonl,
)
from tests.conftest import units

CWDS = ["/home/u/web", "/home/u/api"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    for n in range(120):
        write_claude_session(
            tmp_path / ".claude", CWDS[n % 2], sid(n), turns=2, start=n * 10.0, subagent=n == 7
        )
    write_claude_session(tmp_path / ".claude", "/home/u/long", sid(999), turns=300, start=5.0)
    write_codex_session(tmp_path / ".codex", CWDS[0], sid(2000), turns=2, start=0.0)
    write_gemini_jsonl(tmp_path / ".gemini", "gp", CWDS[1], sid(3000), turns=2, start=0.0)
    return tmp_path


@pytest.fixture
async def base(home: Path) -> AsyncIterator[str]:
    app = web.Application()
    readers = HistoryReaders(
        claude_dir=home / ".claude",
        codex_dir=home / ".codex",
        gemini_dir=home / ".gemini",
        limits=HistoryLimits(parse_budget=float("inf")),  # exact totals from the first page
    )
    setup_history_routes(app, readers)
    setup_openapi_route(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=units(20))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    """GET `url` exactly as written (no client-side normalising of '..' or escapes)."""
    async with http.get(yarl.URL(url, encoded=True)) as response:
        body = await response.json()
        assert response.status == status, body
        return body


async def test_projects_and_working_directories(base: str, http: aiohttp.ClientSession) -> None:
    body = await get(http, f"{base}/api/claude/projects?token=abc")
    projects = {p["id"]: p for p in body["projects"]}
    assert set(projects) == {encode(c) for c in [*CWDS, "/home/u/long"]}
    web_project = projects[encode(CWDS[0])]
    assert web_project["path"] == CWDS[0] and web_project["sessionCount"] == 60
    assert len(web_project["recentSessions"]) == 5
    assert web_project["recentSessions"][0]["id"] == sid(118)
    assert web_project["recentSessions"][0]["messageCount"] == 10
    bare = await get(http, f"{base}/claude/projects")
    assert bare == body
    dirs = await get(http, f"{base}/api/claude/projects/working-directories?token=abc")
    assert dirs["workingDirectories"] == ["/home/u/long", CWDS[1], CWDS[0]]


async def test_sessions_paging_and_filter(base: str, http: aiohttp.ClientSession) -> None:
    first = await get(http, f"{base}/api/claude/sessions?limit=50&offset=0&token=t")
    assert first["total"] == 121 and len(first["sessions"]) == 50 and first["hasMore"]
    second = await get(http, f"{base}/api/claude/sessions?limit=50&offset=50")
    last = await get(http, f"{base}/api/claude/sessions?limit=50&offset=100")
    ids = [s["id"] for page in (first, second, last) for s in page["sessions"]]
    assert len(ids) == len(set(ids)) == 121 and not last["hasMore"]
    stamps = [s["lastActivity"] for page in (first, second, last) for s in page["sessions"]]
    assert stamps == sorted(stamps, reverse=True)
    filtered = await get(http, f"{base}/api/claude/sessions?projectPath={CWDS[1]}&limit=1000")
    assert filtered["total"] == 60
    assert {s["projectPath"] for s in filtered["sessions"]} == {CWDS[1]}
    project = await get(http, f"{base}/api/claude/projects/{encode(CWDS[1])}/sessions?limit=7")
    assert project["total"] == 60 and len(project["sessions"]) == 7
    assert project["sessions"][0]["id"] == sid(119)
    await get(http, f"{base}/api/claude/projects/nope/sessions", 404)
    await get(http, f"{base}/api/claude/sessions?limit=ten", 400)
    await get(http, f"{base}/api/claude/sessions?offset=-3", 400)


async def test_one_session_paged(base: str, http: aiohttp.ClientSession) -> None:
    total = 300 * CLAUDE_MESSAGES_PER_TURN
    page = await get(http, f"{base}/api/claude/sessions/{sid(999)}?limit=100&offset=1450&token=x")
    assert page["total"] == total and page["session"]["id"] == sid(999) and page["complete"]
    assert [m["index"] for m in page["messages"]] == list(range(1450, 1500))
    assert page["messages"][-1]["kind"] == "tool_result"
    assert page["messages"][-1]["text"] == "output 299"
    first = await get(http, f"{base}/claude/sessions/{sid(999)}?limit=3")
    assert [(m["role"], m["kind"]) for m in first["messages"]] == [
        ("user", "text"),
        ("assistant", "thinking"),
        ("assistant", "text"),
    ]


async def test_codex_and_gemini(base: str, http: aiohttp.ClientSession) -> None:
    codex = await get(http, f"{base}/api/codex/sessions?projectPath={CWDS[0]}")
    assert [s["id"] for s in codex["sessions"]] == [sid(2000)]
    messages = await get(http, f"{base}/api/codex/sessions/{sid(2000)}")
    assert messages["messages"][0]["text"] == "codex task 0"
    gemini = await get(http, f"{base}/api/gemini/sessions")
    assert [s["projectPath"] for s in gemini["sessions"]] == [CWDS[1]]
    messages = await get(http, f"{base}/api/gemini/sessions/{sid(3000)}")
    assert messages["total"] == 10
    await get(http, f"{base}/api/gemini/sessions/{sid(2000)}", 404)
    async with http.delete(f"{base}/api/codex/sessions/{sid(2000)}") as response:
        assert response.status == 200
    assert (await get(http, f"{base}/api/codex/sessions"))["total"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "..%2F..%2F.claude.json",
        "%2E%2E",
        "..%5C..",
        "x%00y",
        "does-not-exist",
        f"{sid(7)}%2Fsubagents%2Fagent-a1",
        f"{sid(7)}.jsonl",
    ],
)
async def test_traversal_and_unknown_ids_are_404(
    base: str, http: aiohttp.ClientSession, home: Path, path: str
) -> None:
    before = sorted(home.rglob("*"))
    for agent in ("claude", "codex", "gemini"):
        await get(http, f"{base}/api/{agent}/sessions/{path}", 404)
        url = yarl.URL(f"{base}/api/{agent}/sessions/{path}", encoded=True)
        async with http.delete(url) as response:
            assert response.status == 404
    assert sorted(home.rglob("*")) == before


async def test_delete_then_gone(base: str, http: aiohttp.ClientSession, home: Path) -> None:
    target = home / ".claude" / "projects" / encode(CWDS[1]) / f"{sid(7)}.jsonl"
    before = set(home.rglob("*"))
    async with http.delete(f"{base}/api/claude/sessions/{sid(7)}?token=t") as response:
        assert response.status == 200
        assert (await response.json())["deleted"] is True
    gone = before - set(home.rglob("*"))
    side = target.with_suffix("")
    assert gone == {target, side, side / "subagents", side / "subagents" / "agent-a1.jsonl"}
    await get(http, f"{base}/api/claude/sessions/{sid(7)}", 404)
    async with http.delete(f"{base}/api/claude/sessions/{sid(7)}") as response:
        assert response.status == 404


async def test_a_session_growing_while_read(
    base: str, http: aiohttp.ClientSession, home: Path
) -> None:
    """A writer appends turns (and splits lines across writes) while readers poll."""
    path = home / ".claude" / "projects" / encode(CWDS[0]) / f"{sid(0)}.jsonl"
    extra = claude_lines(sid(0), CWDS[0], 40, 50_000.0)[1:-1]
    done = asyncio.Event()

    async def writer() -> None:
        with path.open("a") as handle:
            for text in extra:
                middle = len(text) // 2
                handle.write(text[:middle])
                handle.flush()
                await asyncio.sleep(0)
                handle.write(text[middle:])
                handle.flush()
                await asyncio.sleep(0)
        done.set()

    async def reader() -> list[int]:
        totals = []
        while not done.is_set():
            body = await get(http, f"{base}/api/claude/sessions/{sid(0)}?limit=1")
            totals.append(body["total"])
        return totals

    task = asyncio.create_task(writer())
    totals = await asyncio.wait_for(reader(), units(30))
    await task
    assert totals == sorted(totals)
    final = await get(http, f"{base}/api/claude/sessions/{sid(0)}?limit=1000")
    assert final["total"] == 42 * CLAUDE_MESSAGES_PER_TURN
    listed = await get(http, f"{base}/api/claude/sessions?limit=1")
    assert listed["sessions"][0]["id"] == sid(0)
    assert listed["sessions"][0]["messageCount"] == 42 * 5


async def test_many_requests_at_once(base: str, http: aiohttp.ClientSession) -> None:
    urls = [f"{base}/api/claude/sessions/{sid(n)}" for n in range(0, 120, 3)]
    urls += [f"{base}/api/claude/projects"] * 10
    bodies = await asyncio.wait_for(asyncio.gather(*(get(http, url) for url in urls)), units(30))
    assert all("messages" in body or "projects" in body for body in bodies)


async def test_errors_and_the_openapi_document(base: str, http: aiohttp.ClientSession) -> None:
    error = await get(http, f"{base}/api/claude/sessions/nope", 404)
    assert error["error"]["status"] == 404 and "nope" in error["error"]["message"]
    assert error["error"]["code"] == "history_not_found"
    document = await get(http, f"{base}/api/openapi.json")
    for agent in ("claude", "codex", "gemini"):
        assert set(document["paths"][f"/api/{agent}/sessions/{{session_id}}"]) == {"get", "delete"}
    assert "HistoryMessagePage" in document["components"]["schemas"]


class _CountingReaders(HistoryReaders):
    """Real readers that note how many listings run at once (each made to take a while)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.active = 0
        self.most = 0
        self._guard = threading.Lock()

    def sessions(self, *args: Any, **kwargs: Any) -> Any:
        with self._guard:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(units(0.05))
            return super().sessions(*args, **kwargs)
        finally:
            with self._guard:
                self.active -= 1


async def test_history_work_runs_off_the_loop_within_its_bound(
    home: Path, http: aiohttp.ClientSession
) -> None:
    readers = _CountingReaders(claude_dir=home / ".claude", limits=HistoryLimits(max_concurrency=2))
    app = web.Application()
    setup_history_routes(app, readers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(units(0.01))
                ticks += 1

        clock = asyncio.create_task(ticker())
        try:
            bodies = await asyncio.wait_for(
                asyncio.gather(
                    *(get(http, f"{base}/api/claude/sessions?limit=5") for _ in range(8))
                ),
                units(30),
            )
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
        assert all(body["total"] == 121 for body in bodies)
        assert readers.most == 2  # parallel, and never more than the bound
        assert ticks >= 10  # the loop kept running while the readers worked
    finally:
        await runner.cleanup()
