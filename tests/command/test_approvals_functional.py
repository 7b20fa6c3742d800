"""Approvals over the HTTP API (issue 15), against the fake Claude speaking the control protocol.

The fake asks ``can_use_tool`` for ``touch <file>`` and obeys the answer, so these tests see what
a person's phone would: the pending approval in the inbox and on the session, a decision taken
once (200, then 409), the events replayed, the deadline and the cancel denying.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from arp.client.cli import build_parser
from arp.command.remote import RemoteConfig, RemoteServer
from arp.command.remote_protocol import Defaults
from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config, post_json, run_to_end, start
from tests.conftest import units


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CommandServer]:
    config = fake_config(
        tmp_path,
        session_overrides={"approval_timeout": units(30)},
    )
    async with CommandServer(config) as srv:
        yield srv


@pytest.fixture
async def http(server: CommandServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as client:
        yield client


async def get(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def inbox(http: aiohttp.ClientSession, count: int = 1) -> list[dict[str, Any]]:
    """The pending approvals, once there are ``count`` of them (bounded in time)."""
    async with asyncio.timeout(units(10)):
        while True:
            approvals: list[dict[str, Any]] = (await get(http, "/api/approvals"))["approvals"]
            if len(approvals) >= count:
                return approvals
            await asyncio.sleep(0.02)


async def ask(http: aiohttp.ClientSession, target: Path, extra: str = "") -> dict[str, Any]:
    return await start(
        http,
        executor="claude",
        prompt=f"touch={target} {extra}".strip(),
        permissionMode="ask",
    )


def decisions(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["decision"], e["by"]) for e in events if e["kind"] == "approval_decision"]


async def test_deny_from_the_inbox(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    target = tmp_path / "denied.txt"
    session = await ask(http, target)
    sid = session["session_id"]
    assert session["permission_mode"] == "ask"
    [pending] = await inbox(http)
    assert pending["session_id"] == sid and pending["tool_name"] == "Bash"
    assert pending["tool_input"] == {"command": f"touch {target}"}
    assert pending["title"] == f"Bash: touch {target}"
    assert pending["requested_at"] < pending["expires_at"]
    state = await get(http, f"/api/sessions/{sid}")
    assert state["pending_approvals"] == [{k: v for k, v in pending.items() if k != "session_id"}]

    status, decided = await post_json(
        http,
        f"/api/sessions/{sid}/approvals/{pending['approval_id']}",
        {"decision": "deny", "message": "no touching"},
    )
    assert status == 200, decided
    assert decided["decision"] == "deny" and decided["by"] == "person"
    assert decided["message"] == "no touching" and decided["approval_id"] == pending["approval_id"]
    events, final = await run_to_end(http, sid)
    assert final["status"] == "completed" and final["pending_approvals"] == []
    assert not target.exists()
    assert (await get(http, "/api/approvals")) == {"approvals": []}
    # Replayable like every event: the request, then the decision, then the agent was told.
    kinds = [e["kind"] for e in events]
    assert kinds.index("approval_request") < kinds.index("approval_decision")
    request = next(e for e in events if e["kind"] == "approval_request")
    assert request["approval_id"] == pending["approval_id"]
    assert request["tool_name"] == "Bash" and request["expires_at"] == pending["expires_at"]
    assert decisions(events) == [("deny", "person")]
    told = next(
        e for e in events if e.get("tool_id") == "toolu_ask_0" and e["kind"] == "tool_result"
    )
    assert told["is_error"] is True and told["text"] == "no touching"

    # The first decision won: a second one is a 409; unknown ids are 404s; bad bodies 400.
    again = f"/api/sessions/{sid}/approvals/{pending['approval_id']}"
    assert (await post_json(http, again, {"decision": "allow"}))[0] == 409
    assert (await post_json(http, f"/api/sessions/{sid}/approvals/nope", {"decision": "allow"}))[
        0
    ] == 404
    missing = f"/api/sessions/no-such/approvals/{pending['approval_id']}"
    assert (await post_json(http, missing, {"decision": "allow"}))[0] == 404
    status, body = await post_json(http, again, {"decision": "maybe"})
    assert status == 400 and "decision" in body["error"]["message"]


async def test_allow_runs_the_tool_and_remember_covers_the_rest(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    target = tmp_path / "allowed.txt"
    session = await ask(http, target, "asks=3")
    sid = session["session_id"]
    [pending] = await inbox(http)
    status, decided = await post_json(
        http,
        f"/sessions/{sid}/approvals/{pending['approval_id']}",  # the bare path works too
        {"decision": "allow", "remember": "session"},
    )
    assert status == 200 and decided["remember"] == "session", decided
    events, final = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    assert target.exists()
    # The two later asks for the same tool were answered without asking the person.
    assert [e["kind"] for e in events].count("approval_request") == 1
    results = [e for e in events if e["kind"] == "tool_result" and "_ask_" in e["tool_id"]]
    assert len(results) == 3 and not any(e["is_error"] for e in results)


async def test_two_decisions_at_once_one_wins(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    target = tmp_path / "raced.txt"
    session = await ask(http, target)
    sid = session["session_id"]
    [pending] = await inbox(http)
    path = f"/api/sessions/{sid}/approvals/{pending['approval_id']}"
    answers = await asyncio.gather(
        post_json(http, path, {"decision": "allow"}),
        post_json(http, path, {"decision": "deny"}),
    )
    assert sorted(status for status, _ in answers) == [200, 409], answers
    winner = next(body for status, body in answers if status == 200)
    events, final = await run_to_end(http, sid)
    assert final["status"] == "completed"
    assert decisions(events) == [(winner["decision"], "person")]
    assert target.exists() == (winner["decision"] == "allow")


async def test_the_deadline_denies(tmp_path: Path) -> None:
    config = fake_config(tmp_path, session_overrides={"approval_timeout": units(0.5)})
    async with CommandServer(config) as server, aiohttp.ClientSession(base_url=server.url) as http:
        target = tmp_path / "late.txt"
        session = await ask(http, target)
        sid = session["session_id"]
        events, final = await run_to_end(http, sid)
        assert final["status"] == "completed" and not target.exists()
        assert decisions(events) == [("deny", "timeout")]
        decision = next(e for e in events if e["kind"] == "approval_decision")
        assert decision["message"] == "timed out"
        status, _ = await post_json(
            http, f"/api/sessions/{sid}/approvals/{decision['approval_id']}", {"decision": "allow"}
        )
        assert status == 409


async def test_cancel_denies_what_is_pending(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    target = tmp_path / "cancelled.txt"
    session = await ask(http, target)
    sid = session["session_id"]
    [pending] = await inbox(http)
    status, cancelled = await post_json(http, f"/api/sessions/{sid}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert cancelled["pending_approvals"] == []
    assert (await get(http, "/api/approvals")) == {"approvals": []}
    events, _ = await run_to_end(http, sid)
    assert decisions(events) == [("deny", "cancel")]
    assert not target.exists()
    status, _ = await post_json(
        http, f"/api/sessions/{sid}/approvals/{pending['approval_id']}", {"decision": "allow"}
    )
    assert status == 409


async def test_ask_is_a_permission_mode_like_the_others(http: aiohttp.ClientSession) -> None:
    status, body = await post_json(
        http, "/api/sessions", {"executor": "claude", "prompt": "hi", "permissionMode": "asks"}
    )
    # The accepted modes are listed.
    assert status == 400 and "ask" in body["error"]["message"], body


async def test_the_openapi_document_names_the_approval_api(http: aiohttp.ClientSession) -> None:
    doc = await get(http, "/api/openapi.json")
    assert "/api/approvals" in doc["paths"]
    decide = doc["paths"]["/api/sessions/{session_id}/approvals/{approval_id}"]["post"]
    assert set(decide["responses"]) >= {"200", "404", "409"}
    schemas = doc["components"]["schemas"]
    assert "pending_approvals" in schemas["Session"]["properties"]
    assert {"PendingApproval", "ApprovalDecision"} <= set(schemas)
    assert {"approval_request", "approval_decision"} <= set(
        schemas["Event"]["properties"]["kind"]["enum"]
    )


def test_arpc_approval_timeout_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["--command-mode"]).approval_timeout == 900.0
    assert parser.parse_args(["--approval-timeout", "60"]).approval_timeout == 60.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--approval-timeout", "0"])


async def test_the_remote_protocol_reports_an_approval_the_peer_answers(
    server: CommandServer, tmp_path: Path
) -> None:
    """``ask_before_tool_execution: true`` runs in ask mode; the pending approval comes as a
    ToolCall line with ``approval``; the peer decides it with the decide_approval Instruction
    on the same connection, and the request's answer follows."""
    remote = RemoteServer(
        RemoteConfig(defaults=Defaults(project_path=str(tmp_path)), request_timeout=units(20)),
        server.manager,
    )
    await remote.start()
    target = tmp_path / "remote-touched.txt"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", remote.port)

        async def send(obj: dict[str, Any]) -> None:
            writer.write((json.dumps(obj) + "\n").encode())
            await writer.drain()

        async def read() -> dict[str, Any]:
            async with asyncio.timeout(units(10)):
                return dict(json.loads(await reader.readline()))

        await send(
            {
                "request_id": "ask-1",
                "input": {"Text": f"touch={target}"},
                "config": {"ask_before_tool_execution": True},
            }
        )
        asked = await read()
        assert asked["request_id"] == "ask-1" and asked["done"] is False
        assert asked["response"] == {
            "ToolCall": {"name": "Bash", "arguments": {"command": f"touch {target}"}}
        }
        approval = asked["approval"]
        assert approval["title"] == f"Bash: touch {target}" and approval["expires_at"]
        listed = {"Instruction": {"command": "list_approvals", "parameters": {}}}
        await send({"request_id": "l-1", "input": listed})
        inbox = await read()
        [pending] = inbox["response"]["ToolResult"]["result"]["approvals"]
        assert pending["approval_id"] == approval["approval_id"]
        decide = {
            "command": "decide_approval",
            "parameters": {
                "session_id": asked["session_id"],
                "approval_id": approval["approval_id"],
                "decision": "deny",
                "message": "not over TCP",
            },
        }
        await send({"request_id": "d-1", "input": {"Instruction": decide}})
        answers = {(line := await read())["request_id"]: line for _ in range(2)}
        decided = answers["d-1"]["response"]["ToolResult"]["result"]
        assert decided["decision"] == "deny" and decided["by"] == "person"
        final = answers["ask-1"]
        assert final["error"] is None, final
        assert not target.exists()
        tools = final["response"]["Multi"]
        assert {"ToolResult": {"name": "Bash", "result": "not over TCP"}} in tools
        # A second decision is refused: the first one won.
        await send({"request_id": "d-2", "input": {"Instruction": decide}})
        again = await read()
        assert (
            again["error"].startswith("processing_error:") and "already decided" in again["error"]
        )
        writer.close()
    finally:
        await remote.close()
