"""The MCP face without sockets: flags, and the tools' schemas as a model sees them.

The SDK's client talks to the server in-process here; test_mcp_functional.py drives it over
Streamable HTTP, locally and through the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from arp import argtypes
from arp.agents.history import HistoryReaders
from arp.agents.sessions import SessionConfig, SessionManager
from arp.command.mcp import DEFAULT_MCP_PORT, add_mcp_arguments, mcp_service
from arp.command.mcp.tools import build_mcp_server
from tests.conftest import units
from tests.fakes.install import install_fakes


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_mcp_arguments(parser)
    return parser.parse_args(argv)


def test_flags_default_to_off_on_port_9021() -> None:
    args = parse()
    assert args.enable_mcp is False
    assert args.mcp_port == DEFAULT_MCP_PORT == 9021
    assert mcp_service(args, server=None) is None  # type: ignore[arg-type]


def test_flags_enable_and_choose_the_port() -> None:
    args = parse("--enable-mcp", "--mcp-port", "0")
    assert args.enable_mcp is True and args.mcp_port == 0
    assert parse("--mcp-port=19021").mcp_port == 19021


def test_the_port_flag_uses_the_shared_argument_type() -> None:
    parser = argparse.ArgumentParser()
    add_mcp_arguments(parser)
    assert parser._option_string_actions["--mcp-port"].type is argtypes.port


@pytest.mark.parametrize("bad", ["-1", "65536", "http"])
def test_a_bad_port_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--mcp-port", bad)
    assert "--mcp-port" in capsys.readouterr().err


@contextlib.asynccontextmanager
async def in_process(tmp_path: Path) -> AsyncIterator[Client]:
    """A client of a server over a manager with no CLI (not a fixture: the SDK's task groups
    must be left by the task that entered them)."""
    history = HistoryReaders(
        claude_dir=tmp_path / "c", codex_dir=tmp_path / "x", gemini_dir=tmp_path / "g"
    )
    async with (
        SessionManager(SessionConfig(binaries={"claude": str(tmp_path / "none")})) as manager,
        Client(build_mcp_server(manager, history)) as client,
    ):
        yield client


async def tools(client: Client) -> dict[str, Any]:
    return {tool.name: tool for tool in (await client.list_tools()).tools}


async def test_schemas_say_what_each_argument_is(tmp_path: Path) -> None:
    async with in_process(tmp_path) as client:
        found = await tools(client)
        start = found["start_session"].input_schema
        assert start["required"] == ["executor", "prompt"]
        assert start["properties"]["executor"]["enum"] == ["claude", "codex", "gemini"]
        for name in ("model", "project_path", "permission_mode"):
            assert name in start["properties"]
        assert set(found["get_session"].input_schema["properties"]) == {
            "session_id",
            "after_seq",
            "limit",
            "include_raw",
        }
        assert found["get_session"].input_schema["properties"]["after_seq"]["minimum"] == 0
        assert found["wait_session"].input_schema["required"] == ["session_id"]
        assert found["read_history_session"].input_schema["required"] == ["agent", "session_id"]
        for tool in found.values():
            assert len(tool.description) > 40, tool.name
            for name, schema in tool.input_schema.get("properties", {}).items():
                assert len(schema["description"]) > 10, (tool.name, name)


async def test_hints_tell_reading_from_acting(tmp_path: Path) -> None:
    async with in_process(tmp_path) as client:
        found = await tools(client)
        reading = {name for name, tool in found.items() if tool.annotations.read_only_hint}
        assert reading == {
            "get_session",
            "wait_session",
            "get_changes",
            "list_sessions",
            "list_approvals",
            "list_projects",
            "list_history_sessions",
            "read_history_session",
        }
        assert found["cancel_session"].annotations.destructive_hint is True


async def test_errors_come_back_as_tool_errors(tmp_path: Path) -> None:
    async with in_process(tmp_path) as client:
        result = await client.call_tool("start_session", {"executor": "claude", "prompt": "hi"})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "claude binary not found" in text and "(status 400)" in text
        result = await client.call_tool("wait_session", {"session_id": "gone"})
        assert result.is_error and "no session 'gone'" in result.content[0].text  # type: ignore[union-attr]
        listed = await client.call_tool("list_sessions", {})
        assert listed.structured_content == {"sessions": [], "total": 0, "limit": 50, "offset": 0}
        assert (await client.call_tool("list_projects", {})).structured_content == {
            "projects": [],
            "total": 0,
        }


async def test_approvals_through_mcp(tmp_path: Path) -> None:
    """list_approvals and decide_approval over a run in ask mode (the fake Claude asks)."""
    history = HistoryReaders(
        claude_dir=tmp_path / "c", codex_dir=tmp_path / "x", gemini_dir=tmp_path / "g"
    )
    config = SessionConfig(binaries=install_fakes(tmp_path / "bin"), kill_wait=units(3))
    target = tmp_path / "mcp-touched.txt"
    async with (
        SessionManager(config) as manager,
        Client(build_mcp_server(manager, history)) as client,
    ):
        found = await tools(client)
        decide = found["decide_approval"].input_schema
        assert decide["required"] == ["session_id", "approval_id", "decision"]
        assert decide["properties"]["decision"]["enum"] == ["allow", "deny"]
        started = await client.call_tool(
            "start_session",
            {"executor": "claude", "prompt": f"touch={target}", "permission_mode": "ask"},
        )
        sid = started.structured_content["session_id"]  # type: ignore[index]
        async with asyncio.timeout(units(10)):
            while True:
                listed = (await client.call_tool("list_approvals", {})).structured_content
                assert listed is not None
                if listed["approvals"]:
                    break
                await asyncio.sleep(0.02)
        [pending] = listed["approvals"]
        assert pending["session_id"] == sid and pending["tool_name"] == "Bash"
        answer = await client.call_tool(
            "decide_approval",
            {"session_id": sid, "approval_id": pending["approval_id"], "decision": "allow"},
        )
        assert answer.structured_content is not None
        assert answer.structured_content["decision"] == "allow"
        assert answer.structured_content["by"] == "person"
        again = await client.call_tool(
            "decide_approval",
            {"session_id": sid, "approval_id": pending["approval_id"], "decision": "deny"},
        )
        assert again.is_error and "(status 409)" in again.content[0].text  # type: ignore[union-attr]
        done = await client.call_tool("wait_session", {"session_id": sid, "timeout_s": units(10)})
        assert done.structured_content["finished"] is True  # type: ignore[index]
        page = (await client.call_tool("get_session", {"session_id": sid})).structured_content
        assert page is not None
        kinds = [e["kind"] for e in page["events"]]
        assert "approval_request" in kinds and "approval_decision" in kinds
        assert target.exists()


async def test_attachments_and_changes_through_mcp(tmp_path: Path) -> None:
    """Issue 16: start_session takes attachments as the HTTP API does; get_changes answers."""
    import base64

    fakes = install_fakes(tmp_path / "bin")
    project = tmp_path / "project"
    project.mkdir()
    (project / "old.txt").write_text("old\n")
    history = HistoryReaders(
        claude_dir=tmp_path / "c", codex_dir=tmp_path / "x", gemini_dir=tmp_path / "g"
    )
    config = SessionConfig(
        data_dir=tmp_path / "data", binaries={"claude": fakes["claude"]}, kill_wait=units(3)
    )
    async with (
        SessionManager(config) as manager,
        Client(build_mcp_server(manager, history)) as client,
    ):
        data = base64.b64encode(b"hi\n").decode()
        note = {"name": "n.txt", "content_type": "text/plain", "data": data}
        started = await client.call_tool(
            "start_session",
            {
                "executor": "claude",
                "prompt": f"events=0 writefile={project}/new.txt",
                "project_path": str(project),
                "attachments": [note],
            },
        )
        session = started.structured_content
        assert session is not None, started
        assert [a["name"] for a in session["attachments"]] == ["n.txt"]
        await manager.wait(session["session_id"], units(10))
        changes = await client.call_tool("get_changes", {"session_id": session["session_id"]})
        assert changes.structured_content is not None, changes
        files = changes.structured_content["files"]
        assert [(f["path"], f["status"]) for f in files] == [("new.txt", "added")]
        too_many = await client.call_tool(
            "start_session",
            {"executor": "claude", "prompt": "x", "attachments": [note] * 11},
        )
        assert too_many.is_error
        assert "status 413" in too_many.content[0].text  # type: ignore[union-attr]
