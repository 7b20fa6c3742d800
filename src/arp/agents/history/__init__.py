"""Browse the agents' own history: Claude Code, Codex and Gemini CLI sessions on disk.

Pure readers (no asyncio, no sockets); every method blocks on file I/O, so async callers run
them in a worker thread (`asyncio.to_thread`) with a bound on how many at once. Every face of
command mode (HTTP API, MCP server, web console, remote TCP) calls these and nothing else.

    readers = HistoryReaders()                   # this user's folders: CLAUDE_CONFIG_DIR,
                                                 # CODEX_HOME, GEMINI_CLI_HOME honoured
    readers = HistoryReaders.from_env(env, home=...)           # the same from a given env/home
    readers = HistoryReaders(claude_dir=..., claude_json=..., codex_dir=..., gemini_dir=...,
                             limits=HistoryLimits(...))        # tests: fixture trees

    readers.projects(agent="claude") -> list[Project]
        every project, most recently active first, each with `recent_sessions`
    readers.working_directories(agent="claude") -> list[str]
        distinct real working directories, most recently used first
    readers.sessions(agent="claude", *, project_path=None, project_id=None,
                     limit=None, offset=0) -> SessionPage
        newest first; `project_path` filters by real path, `project_id` by project (404 if unknown)
    readers.session(agent, session_id) -> SessionSummary
    readers.messages(agent, session_id, *, offset=0, limit=None) -> MessagePage
        messages in conversation order, paged. A long session is parsed progressively (as far
        as the page needs, then for at most `HistoryLimits.parse_budget` seconds): until
        `complete` is true, `total` counts the messages parsed so far; ask again to go on
    readers.all_messages(agent, session_id) -> tuple[HistoryMessage, ...]
    readers.delete_session(agent, session_id) -> DeletedSession
        removes the session's file and its side folder (sub-agents), nothing else

`agent` is one of `AGENTS` ("claude", "codex", "gemini"). Errors: `HistoryNotFound` (status
404: unknown agent/project/session, or an id with '/', '..' or other non-name characters),
`HistoryRequestError` (400: negative offset or limit); a session file over
`HistoryLimits.max_transcript_bytes` raises `ArpError` with status 413. Limits default to
`HistoryLimits()` (page sizes: sessions 50 by default, at most 1000; messages 200, at most 2000).

Every value has `to_json()` (camelCase keys, ISO 8601 UTC times): `SessionSummary` {agent, id,
projectId, projectPath, title, createdAt, lastActivity, messageCount, sizeBytes, gitBranch,
version}; `Project` {agent, id, path, sessionCount, lastActivity, recentSessions};
`SessionPage` {sessions, total, offset, limit, hasMore}; `MessagePage` {session, messages, total,
complete, offset, limit, hasMore}; `DeletedSession` {deleted, agent, id}; `HistoryMessage`
{index (in pages), role: user|assistant|system, kind: text|thinking|tool_use|tool_result|summary,
text, timestamp?, id?, messageId?, parentId?, toolName?, toolInput?, toolUseId?, isError?,
model?, extra?}. `messageCount` in listings
counts the session's user/assistant records (Claude: lines; Codex: prompts and answers;
Gemini: user and model messages), not the normalised pieces `messages()` returns.
"""

from arp.agents.history.model import (
    AGENTS,
    KINDS,
    DeletedSession,
    HistoryMessage,
    HistoryNotFound,
    HistoryRequestError,
    MessagePage,
    Project,
    SessionPage,
    SessionSummary,
)
from arp.agents.history.readers import HistoryReaders, SessionFile
from arp.config import HistoryLimits

__all__ = [
    "AGENTS",
    "KINDS",
    "DeletedSession",
    "HistoryLimits",
    "HistoryMessage",
    "HistoryNotFound",
    "HistoryReaders",
    "HistoryRequestError",
    "MessagePage",
    "Project",
    "SessionFile",
    "SessionPage",
    "SessionSummary",
]
