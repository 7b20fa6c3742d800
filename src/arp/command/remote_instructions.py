"""The remote protocol's Instructions: built-in commands that start no agent.

Each takes the server (`InstructionHost`: what of `arp.command.remote.RemoteServer` they use)
and the Instruction's parameters, and returns its JSON result; an `ArpError` becomes the
request's ``processing_error``. The table is `INSTRUCTIONS` (docs/remote-protocol.md lists
each command, its parameters and its result).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from arp.agents.approvals import parse_decision
from arp.agents.executors import AGENTS
from arp.agents.history import HistoryReaders
from arp.agents.session_types import PAGE_EVENTS
from arp.agents.sessions import SessionManager
from arp.command.remote_config import RemoteConfig
from arp.command.remote_protocol import Answer
from arp.errors import ArpError


class InstructionHost(Protocol):
    """What the Instructions use of the remote server."""

    config: RemoteConfig
    manager: SessionManager

    @property
    def history(self) -> HistoryReaders: ...

    async def in_thread(self, call: Callable[[], Any]) -> Any: ...


def _int_param(params: dict[str, Any], name: str, default: int, top: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArpError(f"parameter {name!r} must be a whole number of at least 0")
    return min(value, top)


def _str_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ArpError(f"parameter {name!r} is required (a string)")
    return value


async def _list_sessions(server: InstructionHost, params: dict[str, Any]) -> Any:
    limit = _int_param(params, "limit", 50, 1000)
    offset = _int_param(params, "offset", 0, 1_000_000)
    sessions = server.manager.list(limit=limit, offset=offset)
    return {"sessions": [s.to_json() for s in sessions], "total": server.manager.count()}


async def _session_output(server: InstructionHost, params: dict[str, Any]) -> Any:
    session_id = _str_param(params, "session_id")
    after = _int_param(params, "after_seq", 0, 1 << 62)
    limit = _int_param(params, "limit", PAGE_EVENTS, PAGE_EVENTS)
    # The manager's one page (as the HTTP API's and MCP's get_session), plus the answer text.
    page = server.manager.page(session_id, after, limit)
    answer = Answer(page.session.executor, stream=False)
    for event in page.events():
        answer.feed(event)
    body = page.to_json()
    return {"session": body.pop("session"), "text": answer.text, **body}


async def _cancel_session(server: InstructionHost, params: dict[str, Any]) -> Any:
    session = await server.manager.cancel(_str_param(params, "session_id"))
    return {"session": session.to_json()}


async def _list_projects(server: InstructionHost, params: dict[str, Any]) -> Any:
    agent = params.get("agent", "claude")
    if agent not in AGENTS:
        raise ArpError(f"parameter 'agent' must be one of {', '.join(AGENTS)}")
    history = server.history
    projects = await server.in_thread(lambda: history.projects(agent))
    limit = _int_param(params, "limit", 100, 1000)
    return {"projects": [p.to_json() for p in projects[:limit]], "total": len(projects)}


async def _list_approvals(server: InstructionHost, params: dict[str, Any]) -> Any:
    return {"approvals": [a.to_json(with_session=True) for a in server.manager.approvals()]}


async def _decide_approval(server: InstructionHost, params: dict[str, Any]) -> Any:
    decision, message, remember = parse_decision(params)
    approval = server.manager.decide(
        _str_param(params, "session_id"),
        _str_param(params, "approval_id"),
        decision,
        message=message,
        remember=remember,
    )
    return approval.decision_json()


async def _help(server: InstructionHost, params: dict[str, Any]) -> Any:
    defaults = server.config.defaults
    return {
        "commands": sorted(INSTRUCTIONS),
        "defaults": {
            "executor": defaults.executor,
            "model": defaults.model,
            "project_path": defaults.project_path,
            "permission_mode": defaults.permission_mode,
        },
        "limits": {
            "max_line": server.config.max_line,
            "max_concurrent": server.config.max_concurrent,
            "max_memory": server.config.max_memory,
            "request_timeout": server.config.request_timeout,
        },
    }


INSTRUCTIONS: Final[dict[str, Callable[[InstructionHost, dict[str, Any]], Awaitable[Any]]]] = {
    "list_sessions": _list_sessions,
    "session_output": _session_output,
    "cancel_session": _cancel_session,
    "list_projects": _list_projects,
    "list_approvals": _list_approvals,
    "decide_approval": _decide_approval,
    "help": _help,
}
