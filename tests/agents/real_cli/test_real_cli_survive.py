"""Runs of the real CLIs outlive arpc (issue 20): kill -9 arpc while the agent's tool runs.

arpc is a command server in a child process (`tests.command.arpc_child`, given the real binaries
and the agents' environment); the mock model API lives in the test's process, so it outlives
the kill. The mock asks for a shell tool that prints a line a second for several seconds; arpc is
killed in the middle of it, started again on the same data dir, and the run must complete with
the tool's output and the final reply, its events numbered 1..N once, and a stream client that
reconnects with its last seq must get exactly the rest. Then the same across an ask-mode approval
that was pending when arpc died. Opt-in like the rest of the tier (``ARP_REAL_CLI=1``).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agents.real_cli.agent_home import AgentHome
from tests.agents.real_cli.mock_models import MockModelApi
from tests.command.sessions_support import post_json, run_to_end, sse_events, start
from tests.command.test_sessions_survive_functional import Arpc, arpcs  # noqa: F401
from tests.conftest import units

pytestmark = pytest.mark.skipif(
    os.environ.get("ARP_REAL_CLI") != "1",
    reason="real agent CLI tier is opt-in: run scripts/install-agent-clis.sh, set ARP_REAL_CLI=1",
)

MODELS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5-codex", "gemini": None}
TICKS = 6
"""Lines the tool prints, one a second."""


def arpc_config(tmp_path: Path, binaries: dict[str, str], home: AgentHome, **more: Any) -> Path:
    path = tmp_path / "arpc.json"
    overrides = {
        "extra_env": home.env,
        "sigint_grace": units(3),
        "sigterm_grace": units(3),
        "kill_wait": units(5),
        "idle_tick": units(1),
        **more,
    }
    path.write_text(
        json.dumps(
            {
                "command_path": binaries["claude"],
                "codex_path": binaries["codex"],
                "gemini_path": binaries["gemini"],
                "session_overrides": overrides,
            }
        )
    )
    return path


async def follow_until(
    http: aiohttp.ClientSession, sid: str, seen: list[dict[str, Any]], predicate: Any
) -> None:
    """Appends the session's events to ``seen`` until ``predicate(event)`` holds for one."""
    async with http.get(f"/api/sessions/{sid}/events") as resp:
        async with asyncio.timeout(units(90)):
            async for item in sse_events(resp):
                assert item.event != "end", f"the run ended early: {seen}"
                seen.append(item.data)
                if predicate(item.data):
                    return


def story(events: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{e['seq']} {e['kind']}: {str(e.get('text') or e.get('tool_name') or '')[:160]!r}"
        for e in events
    )


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
async def test_kill_9_mid_tool_then_restart_the_run_completes(
    cli: str,
    cli_binaries: dict[str, str],
    agent_home: AgentHome,
    mock_api: MockModelApi,
    tmp_path: Path,
    arpcs: list[Arpc],  # noqa: F811
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    config = arpc_config(tmp_path, cli_binaries, agent_home)
    ticks = " ".join(str(i) for i in range(1, TICKS + 1))
    command = f"for i in {ticks}; do echo tick$i; sleep 1; done"
    first = await Arpc.start(tmp_path, "--config-json", str(config))
    arpcs.append(first)
    seen: list[dict[str, Any]] = []
    async with await first.http() as http:
        body: dict[str, Any] = {
            "executor": cli,
            "prompt": f"ASK-s RUN_SHELL[{command}]",
            "projectPath": str(project),
        }
        if cli == "claude":  # its bypass mode refuses to run as root (CI containers do)
            body["allowedTools"] = ["Bash"]
        else:
            body["permissionMode"] = "bypassPermissions"
        if MODELS[cli]:
            body["model"] = MODELS[cli]
        session = await start(http, **body)
        sid = session["session_id"]
        await follow_until(http, sid, seen, lambda e: e["kind"] == "tool_call")
    await asyncio.sleep(units(2.5))  # the tool is halfway through
    await first.kill()
    await asyncio.sleep(units(1))
    second = await Arpc.start(tmp_path, "--config-json", str(config))
    arpcs.append(second)
    async with await second.http() as http:
        last = seen[-1]["seq"]
        rest, final = await run_to_end(http, sid, after=last)
        everything, _ = await run_to_end(http, sid)
    told = story(everything)
    assert final["status"] == "completed", f"{final.get('error')}\n{told}"
    assert [e["seq"] for e in rest] == list(range(last + 1, final["last_seq"] + 1)), told
    assert [e["seq"] for e in everything] == list(range(1, final["last_seq"] + 1)), told
    assert everything[: len(seen)] == seen
    words = " ".join(
        json.dumps(e.get("text") or "") + json.dumps(e.get("raw") or "") for e in everything
    )
    assert f"tick{TICKS}" in words, told  # the tool's output, printed after the kill
    assert any(e["kind"] == "result" for e in everything), told
    assert texts_after_tool(everything), told


def texts_after_tool(events: list[dict[str, Any]]) -> bool:
    """The agent's final reply came after the tool's result."""
    results = [i for i, e in enumerate(events) if e["kind"] == "tool_result"]
    start_at = results[-1] if results else 0
    return any(e["kind"] == "text" and e.get("text") for e in events[start_at:])


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
async def test_a_pending_approval_survives_kill_9(
    cli: str,
    cli_binaries: dict[str, str],
    agent_home: AgentHome,
    mock_api: MockModelApi,
    tmp_path: Path,
    arpcs: list[Arpc],  # noqa: F811
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    target = project / "touched.txt"
    config = arpc_config(tmp_path, cli_binaries, agent_home)
    first = await Arpc.start(tmp_path, "--config-json", str(config))
    arpcs.append(first)
    seen: list[dict[str, Any]] = []
    async with await first.http() as http:
        session = await start(
            http,
            executor=cli,
            prompt=f"ASK-t RUN_SHELL[touch {target}]",
            projectPath=str(project),
            permissionMode="ask",
        )
        sid = session["session_id"]
        await follow_until(http, sid, seen, lambda e: e["kind"] == "approval_request")
    await first.kill()
    second = await Arpc.start(tmp_path, "--config-json", str(config))
    arpcs.append(second)
    async with await second.http() as http:
        async with asyncio.timeout(units(30)):
            while True:
                async with http.get("/api/approvals") as resp:
                    approvals = (await resp.json())["approvals"]
                if approvals:
                    break
                await asyncio.sleep(0.1)
        (again,) = approvals
        assert again["session_id"] == sid and str(target) in again["title"]
        status, _ = await post_json(
            http, f"/api/sessions/{sid}/approvals/{again['approval_id']}", {"decision": "allow"}
        )
        assert status == 200
        events, final = await run_to_end(http, sid)
    told = story(events)
    assert final["status"] == "completed", f"{final.get('error')}\n{told}"
    assert target.exists(), told
    assert [e["seq"] for e in events] == list(range(1, final["last_seq"] + 1)), told
