"""Shared helpers of the sessions tests: a command server on loopback over the fake CLIs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from arp.command.config import CommandConfig
from tests.conftest import units
from tests.fakes.install import install_fakes


def fake_config(tmp_path: Path, **changes: Any) -> CommandConfig:
    fakes = install_fakes(tmp_path / "bin")
    overrides = {
        "sigint_grace": units(1),
        "sigterm_grace": units(1),
        "kill_wait": units(3),
        "idle_tick": units(0.5),
    }
    overrides.update(changes.pop("session_overrides", {}))
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "command_path": fakes["claude"],
        "codex_path": fakes["codex"],
        "gemini_path": fakes["gemini"],
        "max_sessions": 4,
        "shutdown_timeout": units(2),
        "session_overrides": overrides,
    }
    values.update(changes)
    return CommandConfig(**values)


@dataclass
class SseEvent:
    id: int | None
    event: str
    data: Any


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Parses a text/event-stream body as it arrives (comments and retry lines skipped)."""
    event_id: int | None = None
    name = "message"
    data: list[str] = []
    while True:
        raw = await asyncio.wait_for(response.content.readline(), units(10))
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\n")
        if line == "":
            if data:
                yield SseEvent(event_id, name, json.loads("\n".join(data)))
            event_id, name, data = None, "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


async def run_to_end(
    http: aiohttp.ClientSession, session_id: str, *, after: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Follows a session's SSE stream to its end: (events, final session)."""
    events: list[dict[str, Any]] = []
    async with http.get(f"/api/sessions/{session_id}/events", params={"after": after}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for item in sse_events(resp):
            if item.event == "end":
                return events, item.data
            assert item.id == item.data["seq"]
            events.append(item.data)
    raise AssertionError("the stream closed without an end event")


async def start(http: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    async with http.post("/api/sessions", json=body) as resp:
        data = await resp.json()
        assert resp.status == 201, data
        return dict(data)


async def post_json(
    http: aiohttp.ClientSession, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(path, json=body) as resp:
        return resp.status, await resp.json()


def process_gone(pid: int) -> bool:
    """True when ``pid`` is not running: no such process, or a zombie nobody here owns."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def wait_for_file(path: Path, timeout: float) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not process_gone(pid)
