"""The MCP server over real Streamable HTTP on loopback, and through a real relay with the token.

The SDK's own client drives a command server whose sessions run the fake CLIs, and whose
history readers read a fixture tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from arp.agents.history import HistoryReaders
from arp.client.config import Target
from arp.command.mcp import McpLimits, mcp_service
from arp.command.mcp.service import McpService
from arp.command.server import CommandServer
from arp.errors import ConfigError
from tests.agents.history.trees import sid, write_claude_session, write_codex_session
from tests.command.sessions_support import fake_config
from tests.conftest import units
from tests.relay.conftest import StackFactory, make_stack, target  # noqa: F401 (fixtures)

TOOLS = {
    "start_session",
    "send_message",
    "get_session",
    "wait_session",
    "cancel_session",
    "get_changes",
    "list_sessions",
    "list_approvals",
    "decide_approval",
    "list_projects",
    "list_history_sessions",
    "read_history_session",
}
WEB, API = "/home/u/web", "/home/u/api"
CLIENT_ID = "mcp-tester"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    for n in range(3):
        write_claude_session(root / ".claude", WEB if n < 2 else API, sid(n), turns=3, start=n)
    write_codex_session(root / ".codex", API, sid(100), turns=1, start=50.0)
    return root


@pytest.fixture
async def server(tmp_path: Path, home: Path) -> AsyncIterator[CommandServer]:
    history = HistoryReaders(
        claude_dir=home / ".claude", codex_dir=home / ".codex", gemini_dir=home / ".gemini"
    )
    # No gemini binary: the "executor missing" case.
    config = fake_config(tmp_path, gemini_path=str(tmp_path / "nowhere" / "gemini"))
    async with CommandServer(config, history=history) as srv:
        yield srv


def limits() -> McpLimits:
    return McpLimits(shutdown_timeout=units(2), start_timeout=units(5), forward_idle=units(30))


@pytest.fixture
async def mcp(server: CommandServer) -> AsyncIterator[McpService]:
    args = argparse.Namespace(enable_mcp=True, mcp_port=0)
    service = mcp_service(args, server, limits=limits())
    assert service is not None
    async with service as running:
        yield running


@pytest.fixture
async def relay_url(make_stack: StackFactory, server: CommandServer, mcp: McpService) -> str:  # noqa: F811
    stack = await make_stack(client_id=None)
    await stack.start_client(CLIENT_ID, http_target=Target("127.0.0.1", server.port))
    return f"{stack.base}/mcp?token={CLIENT_ID}"


def data(result: CallToolResult) -> Any:
    """A tool's answer: its structured content, which its text content says too."""
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    return result.structured_content


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    return data(await client.call_tool(tool, arguments))


async def fails(client: Client, tool: str, **arguments: Any) -> str:
    """The text of the tool error `tool` answers with."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


async def poll_to_end(client: Client, session_id: str, after: int = 0) -> tuple[list[Any], Any]:
    """get_session from `after` until the session is no longer running: (events, session)."""
    events: list[Any] = []
    deadline = time.monotonic() + units(15)
    while time.monotonic() < deadline:
        page = await call(client, "get_session", session_id=session_id, after_seq=after)
        assert [e["seq"] for e in page["events"]] == list(
            range(after + 1, after + 1 + len(page["events"]))
        )
        events.extend(page["events"])
        after = page["next_after_seq"]
        if page["session"]["status"] != "running" and not page["has_more"]:
            return events, page["session"]
        await asyncio.sleep(units(0.05))
    raise AssertionError("the session did not end")


def connect(url: str, mode: str = "legacy") -> Client:
    return Client(url, mode=mode, read_timeout_seconds=units(20))  # type: ignore[arg-type]


SLOW = f"events=1000 sleep={units(0.05)}"


async def drive(url: str, mode: str) -> None:
    """The flow the issue names: list tools, start → get until completed → follow-up → cancel."""
    async with connect(url, mode) as client:
        tools = (await client.list_tools()).tools
        assert {tool.name for tool in tools} == TOOLS
        for tool in tools:
            assert tool.description
            for name, schema in tool.input_schema.get("properties", {}).items():
                assert schema.get("description"), (tool.name, name)

        started = await call(client, "start_session", executor="claude", prompt="events=3")
        assert started["status"] == "running"
        session_id = started["session_id"]
        events, session = await poll_to_end(client, session_id)
        assert session["status"] == "completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["seq"] == session["last_seq"]
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "prompt" and kinds[-2:] == ["result", "status"]
        assert {"tool_call", "tool_result"} <= set(kinds)
        texts = [e["text"] for e in events if e["kind"] == "text"]
        assert texts == ["piece 0", "piece 1", "piece 2"]
        assert all("raw" not in e for e in events)

        again = await call(client, "send_message", session_id=session_id, prompt="events=1 more")
        assert again["status"] == "running" and again["runs"] == 2
        waited = await call(client, "wait_session", session_id=session_id, timeout_s=units(15))
        assert waited["finished"] is True and waited["session"]["status"] == "completed"
        more, _ = await poll_to_end(client, session_id, after=session["last_seq"])
        assert more[0] == {**more[0], "kind": "prompt", "text": "events=1 more", "run": 1}

        slow = await call(client, "start_session", executor="codex", prompt=SLOW)
        cancelled = await call(client, "cancel_session", session_id=slow["session_id"])
        assert cancelled["status"] == "cancelled"

        listed = await call(client, "list_sessions")
        assert [s["session_id"] for s in listed["sessions"]] == [slow["session_id"], session_id]
        assert listed["total"] == 2


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_local_flow(mcp: McpService, mode: str) -> None:
    assert mcp.host == "127.0.0.1" and mcp.port > 0
    await drive(mcp.url, mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_flow_through_the_relay_with_the_token(relay_url: str, mode: str) -> None:
    await drive(relay_url, mode)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def test_without_the_token_the_relay_refuses(relay_url: str) -> None:
    bare = relay_url.split("?")[0]
    async with (
        aiohttp.ClientSession() as http,
        http.post(bare, json=INITIALIZE, headers=ACCEPT) as resp,
    ):
        assert resp.status == 404
        assert "Mcp-Session-Id" not in resp.headers
    with pytest.raises(BaseExceptionGroup) as caught:
        async with connect(bare) as client:
            await client.list_tools()
    errors = [exc for exc in leaves(caught.value) if isinstance(exc, MCPError)]
    assert [str(exc) for exc in errors] == ["Not Found"], caught.value


async def test_streamable_http_semantics_pass_through_the_relay(relay_url: str) -> None:
    """Session id header, SSE answer to a POST, 202 to a notification, the GET stream, DELETE."""
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(relay_url, json=INITIALIZE, headers=ACCEPT) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            session = resp.headers["Mcp-Session-Id"]
            body = await resp.text()
        answer = next(line for line in body.splitlines() if line.startswith("data: {"))
        assert json.loads(answer[6:])["result"]["serverInfo"]["name"] == "arp"

        headers = {
            **ACCEPT,
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-11-25",
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(relay_url, json=note, headers=headers) as resp:
            assert resp.status == 202
        async with http.get(relay_url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        async with http.post(relay_url, json=listing, headers=headers) as resp:
            assert resp.status == 200
            assert "start_session" in await resp.text()
        async with http.delete(relay_url, headers=headers) as resp:
            assert resp.status == 200
        async with http.post(relay_url, json=listing, headers=headers) as resp:
            assert resp.status == 404  # the MCP session is gone
        # The token may travel in the relay's header instead of the query.
        by_header = {**ACCEPT, "X-ARP-Token": CLIENT_ID}
        async with http.post(relay_url.split("?")[0], json=INITIALIZE, headers=by_header) as resp:
            assert resp.status == 200 and resp.headers["Mcp-Session-Id"] != session


async def test_the_loopback_port_refuses_other_host_names(mcp: McpService) -> None:
    """The SDK's DNS-rebinding protection holds on the loopback port."""
    async with aiohttp.ClientSession() as http:
        rebound = {**ACCEPT, "Host": f"evil.example:{mcp.port}"}
        async with http.post(mcp.url, json=INITIALIZE, headers=rebound) as resp:
            assert resp.status == 421
        async with http.post(mcp.url, json=INITIALIZE, headers=ACCEPT) as resp:
            assert resp.status == 200


async def test_tool_errors(mcp: McpService, server: CommandServer) -> None:
    async with connect(mcp.url) as client:
        text = await fails(client, "get_session", session_id="nope")
        assert "no session 'nope'" in text and "404" in text
        text = await fails(client, "cancel_session", session_id="nope")
        assert "no session 'nope'" in text
        text = await fails(client, "start_session", executor="gemini", prompt="hi")
        assert "gemini binary not found" in text and "--gemini-path" in text
        text = await fails(client, "start_session", executor="cobol", prompt="hi")
        assert "executor" in text
        text = await fails(client, "get_session", session_id="x", after_seq=-1)
        assert "after_seq" in text

        slow = await call(client, "start_session", executor="claude", prompt=SLOW)
        text = await fails(client, "send_message", session_id=slow["session_id"], prompt="more")
        assert "still running" in text and "409" in text
        waited = await call(
            client, "wait_session", session_id=slow["session_id"], timeout_s=units(0.2)
        )
        assert waited == {**waited, "finished": False}
        assert waited["session"]["status"] == "running"
        big = "x" * (server.config.max_prompt_bytes + 1)
        text = await fails(client, "start_session", executor="codex", prompt=big)
        assert "413" in text
        await call(client, "cancel_session", session_id=slow["session_id"])


async def test_get_session_pages_by_count_and_size(mcp: McpService) -> None:
    async with connect(mcp.url) as client:
        started = await call(client, "start_session", executor="claude", prompt="events=20")
        session_id = started["session_id"]
        await call(client, "wait_session", session_id=session_id, timeout_s=units(15))
        page = await call(client, "get_session", session_id=session_id, limit=5)
        assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5]
        assert page["has_more"] is True and page["next_after_seq"] == 5
        raw = await call(client, "get_session", session_id=session_id, after_seq=1, limit=1)
        assert "raw" not in raw["events"][0]
        raw = await call(
            client, "get_session", session_id=session_id, after_seq=1, limit=1, include_raw=True
        )
        assert raw["events"][0]["raw"]


async def test_get_session_reply_size_is_bounded(server: CommandServer) -> None:
    small = McpLimits(max_reply_chars=2000, shutdown_timeout=units(2))
    history = server.history or HistoryReaders()
    async with McpService(server.manager, history, limits=small) as svc, connect(svc.url) as client:
        started = await call(client, "start_session", executor="claude", prompt="big=1500")
        session_id = started["session_id"]
        await call(client, "wait_session", session_id=session_id, timeout_s=units(15))
        seen: list[int] = []
        after = 0
        for _ in range(50):
            page = await call(client, "get_session", session_id=session_id, after_seq=after)
            assert page["events"], page
            assert len(json.dumps(page["events"])) <= 2000 or len(page["events"]) == 1
            seen.extend(e["seq"] for e in page["events"])
            after = page["next_after_seq"]
            if not page["has_more"]:
                break
        assert seen == list(range(1, page["session"]["last_seq"] + 1))
        assert len(seen) > 2


async def test_history_tools(mcp: McpService) -> None:
    async with connect(mcp.url) as client:
        projects = await call(client, "list_projects")
        paths = [(p["agent"], p["path"]) for p in projects["projects"]]
        assert sorted(paths) == [("claude", API), ("claude", WEB), ("codex", API)]
        assert paths[0] == ("codex", API)  # the most recently active first
        claude = await call(client, "list_projects", agent="claude")
        assert {p["path"] for p in claude["projects"]} == {WEB, API}

        page = await call(client, "list_history_sessions", agent="claude", project_path=WEB)
        assert [s["id"] for s in page["sessions"]] == [sid(1), sid(0)]
        assert page["total"] == 2 and page["agent"] == "claude"
        page = await call(client, "list_history_sessions", agent="claude", limit=1, offset=1)
        assert [s["id"] for s in page["sessions"]] == [sid(1)] and page["hasMore"] is True

        read = await call(client, "read_history_session", agent="claude", session_id=sid(0))
        assert read["session"]["id"] == sid(0)
        roles = {m["role"] for m in read["messages"]}
        assert {"user", "assistant"} <= roles
        assert read["messages"][0]["text"].startswith("please fix the bug")
        part = await call(
            client, "read_history_session", agent="claude", session_id=sid(0), limit=2, offset=1
        )
        assert [m["index"] for m in part["messages"]] == [1, 2]
        assert part["messages"] == read["messages"][1:3]

        text = await fails(client, "read_history_session", agent="claude", session_id=sid(55))
        assert "no claude session" in text and "404" in text
        text = await fails(client, "list_history_sessions", agent="nobody")
        assert "agent" in text


async def test_resources(mcp: McpService) -> None:
    async with connect(mcp.url) as client:
        started = await call(client, "start_session", executor="claude", prompt="events=1")
        session_id = started["session_id"]
        await call(client, "wait_session", session_id=session_id, timeout_s=units(15))
        static = {str(r.uri) for r in (await client.list_resources()).resources}
        assert static == {"arp://sessions"}
        templates = {
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        }
        assert templates == {
            "arp://sessions/{session_id}",
            "arp://history/{agent}/projects",
            "arp://history/{agent}/sessions/{session_id}",
        }

        async def read(uri: str) -> Any:
            contents = (await client.read_resource(uri)).contents
            assert contents[0].mime_type == "application/json"
            return json.loads(contents[0].text)  # type: ignore[union-attr]

        listed = await read("arp://sessions")
        assert [s["session_id"] for s in listed["sessions"]] == [session_id]
        one = await read(f"arp://sessions/{session_id}")
        assert one["session"]["status"] == "completed" and one["events"][0]["kind"] == "prompt"
        projects = await read("arp://history/codex/projects")
        assert [p["path"] for p in projects["projects"]] == [API]
        messages = await read(f"arp://history/claude/sessions/{sid(2)}")
        assert messages["session"]["projectPath"] == API
        with pytest.raises(MCPError, match="no session"):
            await read("arp://sessions/nope")


async def test_mcp_not_enabled_answers_404_and_other_sites_403(server: CommandServer) -> None:
    assert mcp_service(argparse.Namespace(enable_mcp=False, mcp_port=0), server) is None
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/mcp", json=INITIALIZE, headers=ACCEPT) as resp:
            assert resp.status == 404
            assert "--enable-mcp" in (await resp.json())["error"]["message"]
        args = argparse.Namespace(enable_mcp=True, mcp_port=0)
        service = mcp_service(args, server, limits=limits())
        assert service is not None
        async with service:
            evil = {**ACCEPT, "Origin": "http://evil.example"}
            for method in ("GET", "POST", "DELETE"):
                async with http.request(
                    method, f"{server.url}/mcp", json=INITIALIZE, headers=evil
                ) as resp:
                    assert resp.status == 403, method
            async with http.post(f"{server.url}/mcp", json=INITIALIZE, headers=ACCEPT) as resp:
                assert resp.status == 200
        async with http.post(f"{server.url}/mcp", json=INITIALIZE, headers=ACCEPT) as resp:
            assert resp.status == 404  # closed: detached again


async def test_loopback_port_in_use_fails_start(server: CommandServer) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with McpService(server.manager, HistoryReaders(), limits=limits()) as first:
        # uvicorn runs embedded: the process's signals stay arpc's.
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
        taken = McpService(server.manager, HistoryReaders(), port=first.port, limits=limits())
        with pytest.raises(ConfigError, match="--mcp-port"):
            await taken.start()
        await taken.close()


@pytest.mark.parametrize("where", ["local", "relay"])
async def test_close_ends_open_streams_promptly(
    mcp: McpService, relay_url: str, where: str
) -> None:
    """A client holding the GET stream and waiting on a call does not hold up closing, and
    learns at once that its call was cut, locally and through the relay alike."""
    async with connect(mcp.url if where == "local" else relay_url) as client:
        await client.list_tools()
        slow = await call(client, "start_session", executor="claude", prompt=SLOW)
        waiting = asyncio.ensure_future(
            client.call_tool("wait_session", {"session_id": slow["session_id"], "timeout_s": 60})
        )
        await asyncio.sleep(units(0.2))
        began = time.monotonic()
        await mcp.close()
        with pytest.raises(MCPError, match="without a response"):
            await asyncio.wait_for(waiting, units(3))
        assert time.monotonic() - began < units(3)
        await mcp.close()  # idempotent
        await mcp.wait_closed()
