"""The MCP tools and resources: thin adapters over the session manager and the history readers.

Each tool makes one call to `SessionManager` or `HistoryReaders` and returns what that call
returns in the JSON form the HTTP API uses (``Session.to_json()``, ``Event.to_json()``, the
history values' ``to_json()``), so the MCP face and the HTTP face cannot drift apart. An
`ArpError` (unknown session, executor binary missing, too many sessions, prompt too large, …)
becomes an MCP tool error (``isError: true``) whose text is the error's message and status; a
resource read fails the same way with a `ResourceError`.

    server = build_mcp_server(manager, history, McpLimits())   # an MCPServer, not yet serving
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from arp import __version__
from arp.agents.approvals import parse_decision
from arp.agents.attachments import uploads_from_json
from arp.agents.executors import AGENTS, AgentName
from arp.agents.history import HistoryReaders
from arp.agents.session_types import StartRequest
from arp.agents.sessions import SessionManager
from arp.config import McpLimits
from arp.errors import ArpError

_T = TypeVar("_T")

Executor = AgentName
Agent = AgentName
"""The tools' agent arguments: the executors table's names (`AgentName` is checked against the
table at import), so the schemas MCP clients see list exactly the agents ARP knows."""

INSTRUCTIONS = """\
ARP runs AI coding agents (Claude Code, Codex, Gemini CLI) as headless processes on the machine \
where arpc runs, and reads the conversations those agents stored on that machine.

Driving an agent: start_session starts a run and returns at once (status "running"). Poll \
get_session with after_seq set to the previous reply's next_after_seq to read its output \
without missing or repeating anything, or call wait_session to block until the run ends. \
When the status is "completed", send_message continues the same conversation. cancel_session \
stops a run and keeps its output. list_sessions shows the sessions this arpc ran. Both \
start_session and send_message take attachments (images, text files, base64); get_changes \
shows what a session changed in its project (a diff per file).

Approvals: a session started with permission_mode "ask" waits for a person before each tool use \
its agent would prompt for. list_approvals shows what waits; decide_approval allows or denies \
one (the first decision wins; undecided ones are denied at their deadline).

History: list_projects, list_history_sessions and read_history_session browse what the agents \
themselves stored (including sessions started outside ARP)."""

_NAMES = ", ".join(AGENTS[:-1]) + " or " + AGENTS[-1]
_EXECUTOR_HELP = f"Which agent CLI runs the session: {_NAMES}."
_AGENT_HELP = f"Whose stored history to read: {_NAMES}."
_SESSION_HELP = "The session id start_session or list_sessions returned."
_ATTACHMENTS_HELP = (
    "Images (png, jpeg, gif, webp) and text files for the agent: a list of {name, "
    "content_type, data (base64)}; at most AttachmentBounds.max_count per prompt and "
    "max_bytes together."
)
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)


@contextlib.contextmanager
def _errors(kind: type[Exception]) -> Iterator[None]:
    """An `ArpError` becomes the SDK's error type, so the caller sees its message as is."""
    try:
        yield
    except ArpError as exc:
        raise kind(f"{exc.message} (status {exc.status})") from exc


class ArpTools:
    """The tools' bodies; each public method is one MCP tool (its docstring is the description)."""

    def __init__(self, manager: SessionManager, history: HistoryReaders, limits: McpLimits) -> None:
        self.manager = manager
        self.history = history
        self.limits = limits
        # The readers block on files: worker threads, a bounded number at once.

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        return await self.history.run(call)

    # ------------------------------------------------------------------------- sessions

    async def start_session(
        self,
        executor: Annotated[Executor, Field(description=_EXECUTOR_HELP)],
        prompt: Annotated[str, Field(description="The task for the agent, in plain words.")],
        model: Annotated[
            str | None,
            Field(description="The model to ask the CLI for (default: the CLI's own default)."),
        ] = None,
        project_path: Annotated[
            str | None,
            Field(
                description="The folder the agent works in, an absolute path on arpc's machine "
                "(default: arpc's allowed root or its working directory)."
            ),
        ] = None,
        permission_mode: Annotated[
            str | None,
            Field(
                description="The CLI's permission mode, e.g. claude: default, acceptEdits, "
                "plan, bypassPermissions, or ask: a person decides each tool use "
                "(list_approvals, decide_approval). Default: the CLI's own."
            ),
        ] = None,
        attachments: Annotated[
            list[dict[str, str]] | None, Field(description=_ATTACHMENTS_HELP)
        ] = None,
    ) -> dict[str, Any]:
        """Start an agent session on arpc's machine. Returns at once with the session (its
        session_id and status "running"); follow it with get_session or wait_session."""
        with _errors(ToolError):
            request = StartRequest.from_json(
                {
                    "executor": executor,
                    "prompt": prompt,
                    "model": model,
                    "project_path": project_path,
                    "permission_mode": permission_mode,
                }
            )
            uploads = uploads_from_json(attachments, self.manager.config.attachments)
            session = await self.manager.start_session(request, uploads)
        return session.to_json()

    async def send_message(
        self,
        session_id: Annotated[str, Field(description=_SESSION_HELP)],
        prompt: Annotated[str, Field(description="The follow-up message for the agent.")],
        attachments: Annotated[
            list[dict[str, str]] | None, Field(description=_ATTACHMENTS_HELP)
        ] = None,
    ) -> dict[str, Any]:
        """Continue a session's conversation with a follow-up prompt (a new run that resumes
        the agent's conversation). Only when the session is not running; returns the session."""
        with _errors(ToolError):
            uploads = uploads_from_json(attachments, self.manager.config.attachments)
            session = await self.manager.send_message(session_id, prompt, attachments=uploads)
        return session.to_json()

    async def get_changes(
        self,
        session_id: Annotated[str, Field(description=_SESSION_HELP)],
        path: Annotated[
            str | None,
            Field(description="One file (relative path) to get its whole diff; default: all."),
        ] = None,
    ) -> dict[str, Any]:
        """What the session changed in its project since its first run started: in git the
        diff against the work tree then (the person's uncommitted changes are not counted),
        otherwise the files changed since a snapshot. Each file: path, status (added, modified,
        deleted, renamed), additions, deletions, diff (cut when long; binary files have none)."""
        with _errors(ToolError):
            return await self.manager.changes(session_id, path)

    async def get_session(
        self,
        session_id: Annotated[str, Field(description=_SESSION_HELP)],
        after_seq: Annotated[
            int,
            Field(
                ge=0,
                description="Return only events numbered after this; pass the previous "
                "reply's next_after_seq to poll without gaps or repeats (0: from the start).",
            ),
        ] = 0,
        limit: Annotated[
            int | None, Field(ge=1, description="The most events to return (default 200).")
        ] = None,
        include_raw: Annotated[
            bool,
            Field(description="Also return each event's raw CLI line (large; rarely needed)."),
        ] = False,
    ) -> dict[str, Any]:
        """A session's state (status, usage, error) and its events after after_seq: the
        agent's text, tool calls and tool results, its final result, and ARP's prompt and
        status markers. has_more is true when more events are waiting: ask again from
        next_after_seq."""
        with _errors(ToolError):
            return self._session_page(session_id, after_seq, limit, include_raw)

    def _session_page(
        self, session_id: str, after_seq: int, limit: int | None, include_raw: bool
    ) -> dict[str, Any]:
        wanted = min(limit or self.limits.default_events, self.limits.max_events)
        page = self.manager.page(session_id, after_seq, wanted)
        return page.to_json(with_raw=include_raw, max_chars=self.limits.max_reply_chars)

    async def wait_session(
        self,
        session_id: Annotated[str, Field(description=_SESSION_HELP)],
        timeout_s: Annotated[
            float,
            Field(
                gt=0,
                description="Seconds to wait at most (default 30, at most 600); keep it under "
                "your client's request timeout.",
            ),
        ] = 30.0,
    ) -> dict[str, Any]:
        """Wait until the session's run ends or timeout_s passes, then return the session;
        finished says whether it ended. Read its output with get_session."""
        timeout = min(timeout_s, self.limits.max_wait)
        with _errors(ToolError):
            session = await self.manager.wait(session_id, timeout)
        return {"session": session.to_json(), "finished": not session.running}

    async def cancel_session(
        self, session_id: Annotated[str, Field(description=_SESSION_HELP)]
    ) -> dict[str, Any]:
        """Stop a session's run (its output is kept; the status becomes "cancelled").
        Returns the session; a session that is not running is returned unchanged."""
        with _errors(ToolError):
            session = await self.manager.cancel(session_id)
        return session.to_json()

    async def list_sessions(
        self,
        limit: Annotated[
            int | None, Field(ge=1, description="The most sessions to return (default 50).")
        ] = None,
        offset: Annotated[int, Field(ge=0, description="Sessions to skip.")] = 0,
    ) -> dict[str, Any]:
        """The sessions this arpc ran, newest first, with their status."""
        limit = min(limit or self.limits.default_list, self.limits.max_list)
        sessions = self.manager.list(limit=limit, offset=offset)
        return {
            "sessions": [session.to_json() for session in sessions],
            "total": self.manager.count(),
            "limit": limit,
            "offset": offset,
        }

    # ------------------------------------------------------------------------ approvals

    async def list_approvals(self) -> dict[str, Any]:
        """The tool uses that agents in ask mode wait on a person for, oldest first: each with
        its session_id, approval_id, tool_name, tool_input, title and expires_at."""
        return {"approvals": [a.to_json(with_session=True) for a in self.manager.approvals()]}

    async def decide_approval(
        self,
        session_id: Annotated[str, Field(description=_SESSION_HELP)],
        approval_id: Annotated[str, Field(description="The approval_id from list_approvals.")],
        decision: Annotated[
            Literal["allow", "deny"], Field(description="allow runs the tool; deny refuses it.")
        ],
        message: Annotated[
            str | None,
            Field(description="Optional words for the agent (Claude gets them with a deny)."),
        ] = None,
        remember: Annotated[
            Literal["session"] | None,
            Field(
                description='With allow, "session" lets the same tool run unasked for the '
                "rest of the session."
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Decide a pending approval. The first decision wins: a later one, or one after the
        deadline, is an error (status 409). Returns the recorded decision."""
        with _errors(ToolError):
            decision_, message_, remember_ = parse_decision(
                {"decision": decision, "message": message, "remember": remember}
            )
            approval = self.manager.decide(
                session_id, approval_id, decision_, message=message_, remember=remember_
            )
        return approval.decision_json()

    # -------------------------------------------------------------------------- history

    async def list_projects(
        self,
        agent: Annotated[
            Agent | None, Field(description=_AGENT_HELP + " Default: every agent.")
        ] = None,
        limit: Annotated[
            int | None, Field(ge=1, description="The most projects to return (default 50).")
        ] = None,
    ) -> dict[str, Any]:
        """The projects (working folders) the agents stored sessions for, most recently active
        first, each with its session count and newest sessions."""
        agents = (agent,) if agent else AGENTS
        limit = min(limit or self.limits.default_list, self.limits.max_list)
        with _errors(ToolError):
            found = []
            for name in agents:
                found.extend(await self._in_thread(functools.partial(self.history.projects, name)))
        found.sort(key=lambda project: -(project.last_activity or 0.0))
        return {"projects": [project.to_json() for project in found[:limit]], "total": len(found)}

    async def list_history_sessions(
        self,
        agent: Annotated[Agent, Field(description=_AGENT_HELP)],
        project_path: Annotated[
            str | None, Field(description="Only sessions run in this folder (absolute path).")
        ] = None,
        limit: Annotated[
            int | None, Field(ge=1, description="The most sessions to return (default 50).")
        ] = None,
        offset: Annotated[int, Field(ge=0, description="Sessions to skip.")] = 0,
    ) -> dict[str, Any]:
        """An agent's stored sessions, newest first: id, title, project path, message count,
        last activity. Read one with read_history_session."""
        with _errors(ToolError):
            page = await self._in_thread(
                lambda: self.history.sessions(
                    agent, project_path=project_path, limit=limit, offset=offset
                )
            )
        return dict(page.to_json(), agent=agent)

    async def read_history_session(
        self,
        agent: Annotated[Agent, Field(description=_AGENT_HELP)],
        session_id: Annotated[
            str, Field(description="The stored session's id, from list_history_sessions.")
        ],
        limit: Annotated[
            int | None, Field(ge=1, description="The most messages to return (default 200).")
        ] = None,
        offset: Annotated[int, Field(ge=0, description="Messages to skip.")] = 0,
    ) -> dict[str, Any]:
        """A stored session's messages in conversation order (user and assistant text,
        thinking, tool calls and results), paged: has_more says to ask again from a larger
        offset; complete is false while a long session is still being parsed."""
        with _errors(ToolError):
            page = await self._in_thread(
                lambda: self.history.messages(agent, session_id, offset=offset, limit=limit)
            )
        return page.to_json()

    # ------------------------------------------------------------------------ resources

    def sessions_resource(self) -> dict[str, Any]:
        sessions = self.manager.list(limit=self.limits.default_list)
        return {"sessions": [s.to_json() for s in sessions], "total": self.manager.count()}

    def session_resource(self, session_id: str) -> dict[str, Any]:
        with _errors(ResourceError):
            return self._session_page(session_id, 0, None, False)

    async def projects_resource(self, agent: str) -> dict[str, Any]:
        with _errors(ResourceError):
            projects = await self._in_thread(lambda: self.history.projects(agent))
        return {"agent": agent, "projects": [project.to_json() for project in projects]}

    async def history_session_resource(self, agent: str, session_id: str) -> dict[str, Any]:
        with _errors(ResourceError):
            page = await self._in_thread(lambda: self.history.messages(agent, session_id))
        return page.to_json()


def build_mcp_server(
    manager: SessionManager, history: HistoryReaders, limits: McpLimits | None = None
) -> MCPServer:
    """An MCP server whose tools and resources call `manager` and `history`."""
    tools = ArpTools(manager, history, limits or McpLimits())
    server: MCPServer = MCPServer(
        name="arp",
        title="ARP agents",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
    )
    for tool, hints in (
        (tools.start_session, _CHANGES),
        (tools.send_message, _CHANGES),
        (tools.get_session, _READ_ONLY),
        (tools.wait_session, _READ_ONLY),
        (tools.get_changes, _READ_ONLY),
        (tools.cancel_session, ToolAnnotations(read_only_hint=False, destructive_hint=True)),
        (tools.list_sessions, _READ_ONLY),
        (tools.list_approvals, _READ_ONLY),
        (tools.decide_approval, _CHANGES),
        (tools.list_projects, _READ_ONLY),
        (tools.list_history_sessions, _READ_ONLY),
        (tools.read_history_session, _READ_ONLY),
    ):
        server.add_tool(tool, annotations=hints, structured_output=True)
    json_type = "application/json"
    server.resource(
        "arp://sessions",
        name="sessions",
        description="The sessions this arpc ran, newest first.",
        mime_type=json_type,
    )(tools.sessions_resource)
    server.resource(
        "arp://sessions/{session_id}",
        name="session",
        description="One session's state and its first events.",
        mime_type=json_type,
    )(tools.session_resource)
    server.resource(
        "arp://history/{agent}/projects",
        name="history-projects",
        description=f"An agent's projects ({_NAMES}), most recent first.",
        mime_type=json_type,
    )(tools.projects_resource)
    server.resource(
        "arp://history/{agent}/sessions/{session_id}",
        name="history-session",
        description="A stored session's first messages.",
        mime_type=json_type,
    )(tools.history_session_resource)
    return server
