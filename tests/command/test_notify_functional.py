"""Notifications (issue 15): webhook and ntfy formats received by a loopback HTTP server, and a
dead endpoint that delays no run."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from arp.agents.session_types import Notice, StartRequest
from arp.agents.sessions import SessionConfig, SessionManager
from arp.client.cli import build_parser
from arp.command.notify import Notifier, NotifyConfig, note, notifier_from_args, parse_target
from arp.errors import ConfigError
from tests.conftest import units
from tests.fakes.install import install_fakes


class Inbox:
    """A loopback HTTP server that keeps what is posted to it."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, await request.json()))
        self.arrived.set()
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def wait_for(self, count: int) -> list[tuple[str, Any]]:
        async with asyncio.timeout(units(10)):
            while len(self.posts) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.posts


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox()
    await box.start()
    yield box
    assert box.runner is not None
    await box.runner.cleanup()


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    config = SessionConfig(binaries=install_fakes(tmp_path / "bin"), kill_wait=units(3))
    async with SessionManager(config) as sessions:
        yield sessions


def test_targets() -> None:
    assert parse_target("https://hooks.example/x?y=1").kind == "webhook"
    ntfy = parse_target("ntfy://ntfy.local:8080/arp-alerts")
    assert (ntfy.kind, ntfy.post_url, ntfy.topic) == (
        "ntfy",
        "http://ntfy.local:8080/",
        "arp-alerts",
    )
    assert parse_target("ntfy+https://ntfy.sh/t").post_url == "https://ntfy.sh/"
    for bad in ("ftp://x/y", "ntfy://host", "ntfy://host/a/b", "https:///nohost", "mailto:a@b"):
        with pytest.raises(ConfigError):
            parse_target(bad)
    args = build_parser().parse_args(["--notify-url", "http://127.0.0.1:1/a", "--notify-url",
                                      "ntfy://127.0.0.1:2/t"])  # fmt: skip
    assert args.notify_url == ["http://127.0.0.1:1/a", "ntfy://127.0.0.1:2/t"]
    assert build_parser().parse_args([]).notify_url == []


async def test_webhook_and_ntfy_formats(
    manager: SessionManager, inbox: Inbox, tmp_path: Path
) -> None:
    urls = (f"http://127.0.0.1:{inbox.port}/hook", f"ntfy://127.0.0.1:{inbox.port}/arp-test")
    async with Notifier(NotifyConfig(urls=urls), manager) as notifier:
        notifier.console_url = "http://relay.example:17003/"
        target = tmp_path / "notified.txt"
        session = await manager.start_session(
            StartRequest("claude", f"touch={target}\nplease", permission_mode="ask")
        )
        posts = await inbox.wait_for(2)
        by_path = dict(posts)
        hook = by_path["/hook"]
        assert hook["event"] == "approval_requested"
        assert hook["session_id"] == session.session_id
        assert hook["title"] == f"Claude asks: Bash: touch {target}"
        assert hook["url"] == f"http://relay.example:17003/#/run/{session.session_id}"
        ntfy = by_path["/"]
        assert ntfy["topic"] == "arp-test" and ntfy["priority"] == 4
        assert ntfy["title"] == hook["title"] and ntfy["click"] == hook["url"]
        [pending] = manager.approvals()
        manager.decide(session.session_id, pending.approval_id, "allow")
        posts = await inbox.wait_for(4)
        ended = [body for _, body in posts[2:]]
        hook = next(body for body in ended if "event" in body)
        assert hook["event"] == "completed" and hook["title"] == "Claude finished"
        assert hook["message"].startswith("touch=")
        ntfy = next(body for body in ended if "topic" in body)
        assert ntfy["priority"] == 3 and ntfy["tags"] == ["completed"]
        async with asyncio.timeout(units(5)):
            while notifier.delivered < 4:  # counted once each answer is read
                await asyncio.sleep(0.01)


async def test_a_dead_endpoint_delays_no_run(manager: SessionManager, inbox: Inbox) -> None:
    # A listener that accepts and never answers, and a port nobody listens on.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    urls = (
        f"http://127.0.0.1:{silent.getsockname()[1]}/never",
        f"http://127.0.0.1:{closed_port}/refused",
        f"http://127.0.0.1:{inbox.port}/alive",
    )
    config = NotifyConfig(urls=urls, timeout=units(5), retries=2, backoff=units(1), max_queue=1)
    try:
        async with Notifier(config, manager) as notifier:
            began = time.monotonic()
            for _ in range(3):
                session = await manager.start_session(StartRequest("codex", "events=1"))
                final = await manager.wait(session.session_id, units(10))
                assert final.status == "completed"
            assert time.monotonic() - began < units(3), "a dead endpoint slowed the runs"
            # The live endpoint is not held up by the dead ones either.
            posts = await inbox.wait_for(3)
            assert [body["event"] for _, body in posts] == ["completed"] * 3
            # The silent one's queue is bounded: what does not fit is dropped, not kept.
            assert notifier.dropped >= 1
            closing = time.monotonic()
        assert time.monotonic() - closing < units(7)
    finally:
        silent.close()


def test_notes_of_failures_and_cancels() -> None:
    from arp.agents.events import Usage
    from arp.agents.session_types import Session

    session = Session(
        session_id="s", executor="gemini", status="failed", prompt="\n  do it\nmore",
        model=None, project_path="/p", permission_mode=None, agent_session_id=None,
        created_at=0.0, updated_at=0.0, started_at=None, ended_at=None, exit_code=1,
        usage=Usage(), runs=1, last_seq=3, error="boom\ntrace", pid=None,
    )  # fmt: skip
    failed = note(Notice("failed", session), None)
    assert failed == {
        "event": "failed",
        "session_id": "s",
        "title": "Gemini failed",
        "message": "boom",
        "url": None,
    }
    assert note(Notice("cancelled", session), None)["message"] == "do it"


def test_no_notifier_without_urls(manager: SessionManager) -> None:
    assert notifier_from_args(build_parser().parse_args([]), manager) is None
