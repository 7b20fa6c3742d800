"""`HistoryReaders`: the one entry point every face of command mode calls.

Each agent has a store that lists its own folders into `SessionFile`s (the only place a path
is made: ids from requests are looked up among them, never joined onto a folder) and a parser
for one session's records. Listings are cached per file by size and mtime; sessions' messages
by `TranscriptCache`. Methods block on file I/O: async callers run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from arp.agents.history import claude, codex, gemini
from arp.agents.history.files import Stamp, entry_stamp, is_dir, is_file, list_dir, stamp_of
from arp.agents.history.model import (
    AGENTS,
    DeletedSession,
    HistoryMessage,
    HistoryNotFound,
    MessagePage,
    Project,
    SessionPage,
    SessionSummary,
    check_agent,
    check_id,
    clip,
    page_bounds,
    parse_time,
)
from arp.agents.history.scan import Scanner, ScanState
from arp.agents.history.transcripts import TranscriptCache, TranscriptParser
from arp.config import HistoryLimits

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SessionFile:
    """A listed session and the files that hold it."""

    summary: SessionSummary
    path: Path
    side_folder: Path | None
    """A folder of the same session (sub-agents, tool outputs) removed with it."""
    jsonl: bool
    stamp: Stamp | None = None
    """Size and mtime when listed: a lookup trusts the listing while they hold."""
    older_files: tuple[Path, ...] = ()
    """Earlier files of the same session (Gemini's .json a resume carried on in .jsonl)."""


def _newest_first(session: SessionSummary) -> tuple[float, str]:
    return (-session.last_activity, session.id)


def _normal_path(path: str) -> str:
    stripped = path.rstrip("/\\")
    return stripped or path


class _Store:
    """One agent's sessions on disk."""

    agent = ""

    def __init__(self, limits: HistoryLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self.scanner: Scanner | None = None

    def files(self) -> list[SessionFile]:
        """Every session, summarised from the quick part of a scan (count and title may lag)."""
        raise NotImplementedError

    def title(self, state: ScanState) -> str:
        return clip(state.info.first_prompt or "", self.limits.title_chars)

    def summarise(
        self,
        state: ScanState,
        session_id: str,
        project_id: str,
        project_path: str | None,
    ) -> SessionSummary:
        return SessionSummary(
            agent=self.agent,
            id=session_id,
            project_id=project_id,
            project_path=project_path,
            title=self.title(state),
            created=state.info.created,
            last_activity=state.last_activity or state.stamp.mtime_ns / 1e9,
            message_count=state.count,
            size=state.stamp.size,
            git_branch=state.info.git_branch,
            version=state.info.version,
        )

    def complete(self, file: SessionFile) -> SessionFile:
        """The file with its count and title scanned to the end (done only for what is shown)."""
        stamp = stamp_of(file.path) or file.stamp
        if self.scanner is None or stamp is None:
            return file
        state = self.scanner.scan(file.path, stamp, full=True)
        summary = replace(
            file.summary,
            title=self.title(state),
            message_count=state.count,
            last_activity=state.last_activity or stamp.mtime_ns / 1e9,
            size=stamp.size,
        )
        return replace(file, summary=summary, stamp=stamp)

    def new_parser(self, file: SessionFile) -> TranscriptParser:
        raise NotImplementedError

    def empty_projects(self) -> dict[str, str | None]:
        """Projects with no sessions left (only Claude keeps such folders)."""
        return {}


class _ClaudeStore(_Store):
    agent = "claude"

    def __init__(self, root: Path, claude_json: Path | None, limits: HistoryLimits) -> None:
        super().__init__(limits)
        self.projects_dir = root / "projects"
        self.claude_json = claude_json
        self.scanner = self._scanner = Scanner(claude.RULES, limits)
        self._known: dict[str, Any] = {}
        self._empty: dict[str, str | None] = {}
        self._listed: dict[str, tuple[Stamp, str | None, SessionFile]] = {}

    def files(self) -> list[SessionFile]:
        found: list[SessionFile] = []
        empty: dict[str, str | None] = {}
        seen: set[Path] = set()
        listed: dict[str, tuple[Stamp, str | None, SessionFile]] = {}
        known = claude.known_paths(self.claude_json, self._known)
        for folder in list_dir(self.projects_dir):
            if not is_dir(folder) or not _valid(folder.name):
                continue
            entries = list_dir(Path(folder.path))
            names = {entry.name for entry in entries if is_dir(entry)}
            project: list[tuple[str, Stamp, str, ScanState]] = []
            for entry in entries:
                if not entry.name.endswith(".jsonl") or not is_file(entry):
                    continue
                session_id = entry.name[: -len(".jsonl")]
                if session_id.startswith("agent-") or not _valid(session_id):
                    continue
                stamp = entry_stamp(entry)
                if stamp is None:
                    continue
                cached = self._listed.get(entry.path)
                if cached is not None and cached[0] == stamp:
                    state = self._scanner.scan(cached[2].path, stamp, full=False)
                else:
                    state = self._scanner.scan(Path(entry.path), stamp, full=False)
                project.append((entry.path, stamp, session_id, state))
            newest = sorted(project, key=lambda item: -(item[3].last_activity or 0.0))
            real = next((item[3].info.cwd for item in newest if item[3].info.cwd), None)
            if real is None:
                real = next((p for p in known if claude.folder_matches(folder.name, p)), None)
            if not project:
                empty[folder.name] = real
            for text_path, stamp, session_id, state in project:
                cached = self._listed.get(text_path)
                if cached is not None and cached[0] == stamp and cached[1] == real:
                    file = cached[2]  # unchanged: the same value as last time, built once
                else:
                    path = Path(text_path)
                    summary = self.summarise(state, session_id, folder.name, state.info.cwd or real)
                    side = path.with_suffix("") if session_id in names else None
                    file = SessionFile(summary, path, side, jsonl=True, stamp=stamp)
                listed[text_path] = (stamp, real, file)
                seen.add(file.path)
                found.append(file)
        self._scanner.keep_only(seen)
        self._listed = listed
        self._empty = empty
        return found

    def empty_projects(self) -> dict[str, str | None]:
        return dict(self._empty)

    def title(self, state: ScanState) -> str:
        return claude.title_of(state.info, state.titles, self.limits.title_chars)

    def new_parser(self, file: SessionFile) -> TranscriptParser:
        return claude.ClaudeParser()


class _CodexStore(_Store):
    agent = "codex"

    def __init__(self, root: Path, limits: HistoryLimits) -> None:
        super().__init__(limits)
        self.sessions_dir = root / "sessions"
        self.scanner = self._scanner = Scanner(codex.RULES, limits)

    def _rollouts(self) -> list[Path]:
        paths: list[Path] = []
        folders = [(Path(self.sessions_dir), 0)]
        while folders:
            folder, depth = folders.pop()
            for entry in list_dir(folder):
                if depth < 3 and is_dir(entry):
                    folders.append((Path(entry.path), depth + 1))
                elif (
                    entry.name.startswith("rollout-")
                    and entry.name.endswith(".jsonl")
                    and is_file(entry)
                ):
                    paths.append(Path(entry.path))
        return paths

    def files(self) -> list[SessionFile]:
        found: list[SessionFile] = []
        seen: set[Path] = set()
        for path in self._rollouts():
            stamp = stamp_of(path)
            if stamp is None:
                continue
            seen.add(path)
            state = self._scanner.scan(path, stamp, full=False)
            session_id = state.info.session_id or _rollout_id(path.name)
            if session_id is None or not _valid(session_id):
                continue
            cwd = state.info.cwd
            project_id = claude.encode_path(cwd) if cwd else "unknown"
            summary = self.summarise(state, session_id, project_id, cwd)
            found.append(SessionFile(summary, path, None, jsonl=True, stamp=stamp))
        self._scanner.keep_only(seen)
        return found

    def new_parser(self, file: SessionFile) -> TranscriptParser:
        return codex.CodexParser()


def _rollout_id(name: str) -> str | None:
    """The uuid at the end of `rollout-<timestamp>-<uuid>.jsonl`."""
    stem = name[: -len(".jsonl")]
    parts = stem.split("-")
    return "-".join(parts[-5:]) if len(parts) >= 6 else None


class _GeminiStore(_Store):
    agent = "gemini"

    def __init__(self, root: Path, limits: HistoryLimits) -> None:
        super().__init__(limits)
        self.root = root
        self._summaries: dict[Path, tuple[Stamp, SessionSummary | None]] = {}
        self._registry: dict[str, Any] = {}

    def files(self) -> list[SessionFile]:
        found: list[SessionFile] = []
        seen: set[Path] = set()
        paths = gemini.project_paths(self.root, self._registry)
        for project in list_dir(self.root / "tmp"):
            if not is_dir(project) or not _valid(project.name):
                continue
            chats = Path(project.path) / "chats"
            entries = list_dir(chats)
            folders = {entry.name for entry in entries if is_dir(entry)}
            real = paths.get(project.name) or _project_root(Path(project.path))
            for entry in entries:
                jsonl = entry.name.endswith(".jsonl")
                if not entry.name.startswith("session-") or not is_file(entry):
                    continue
                if not (jsonl or entry.name.endswith(".json")):
                    continue
                path = Path(entry.path)
                stamp = stamp_of(path)
                if stamp is None:
                    continue
                seen.add(path)
                summary = self._summary(path, stamp, jsonl, project.name, real)
                if summary is None:
                    continue
                side = chats / summary.id if summary.id in folders else None
                found.append(SessionFile(summary, path, side, jsonl=jsonl, stamp=stamp))
        for path in [path for path in self._summaries if path not in seen]:
            del self._summaries[path]
        # Resuming an older .json session, Gemini CLI carries on in a .jsonl beside it: one
        # session, two files. The newer stands for it (and is what a delete removes first).
        by_id: dict[str, list[SessionFile]] = {}
        for file in found:
            by_id.setdefault(file.summary.id, []).append(file)
        sessions = []
        for files in by_id.values():
            files.sort(key=lambda file: (file.summary.last_activity, file.jsonl), reverse=True)
            newest = files[0]
            if len(files) > 1:
                newest = replace(newest, older_files=tuple(file.path for file in files[1:]))
            sessions.append(newest)
        return sessions

    def _summary(
        self, path: Path, stamp: Stamp, jsonl: bool, project_id: str, real: str | None
    ) -> SessionSummary | None:
        cached = self._summaries.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        parser = gemini.GeminiParser()
        cache = TranscriptCache(replace(self.limits, parse_budget=float("inf")))
        try:
            cache.page(path, lambda: parser, jsonl=jsonl, offset=0, limit=0)
        except HistoryNotFound:
            return None
        meta = parser.metadata
        count, prompt, first, last = gemini.conversation_facts(parser)
        session_id = meta.get("sessionId")
        summary = None
        if isinstance(session_id, str) and _valid(session_id):
            title = meta.get("summary") if isinstance(meta.get("summary"), str) else prompt
            summary = SessionSummary(
                agent=self.agent,
                id=session_id,
                project_id=project_id,
                project_path=real or _first_directory(meta),
                title=clip(title or "", self.limits.title_chars),
                created=parse_time(meta.get("startTime")) or first,
                last_activity=(last or parse_time(meta.get("lastUpdated")) or stamp.mtime_ns / 1e9),
                message_count=count,
                size=stamp.size,
            )
        self._summaries[path] = (stamp, summary)
        return summary

    def new_parser(self, file: SessionFile) -> TranscriptParser:
        return gemini.GeminiParser()


def _first_directory(meta: Mapping[str, Any]) -> str | None:
    directories = meta.get("directories")
    if isinstance(directories, list) and directories and isinstance(directories[0], str):
        return directories[0]
    return None


def _project_root(folder: Path) -> str | None:
    marker = folder / ".project_root"
    stamp = stamp_of(marker)
    if stamp is None or stamp.size > 4096:
        return None
    try:
        return marker.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _valid(value: str) -> bool:
    try:
        check_id("id", value)
    except HistoryNotFound:
        return False
    return True


def default_folders(env: Mapping[str, str], home: Path) -> dict[str, Path]:
    """Where the agents keep history: CLAUDE_CONFIG_DIR (else ~/.claude, with ~/.claude.json;
    with it set, .claude.json lives inside it), CODEX_HOME (else ~/.codex), GEMINI_CLI_HOME
    (its .gemini, else ~/.gemini)."""
    claude_config = env.get("CLAUDE_CONFIG_DIR")
    if claude_config:
        claude_dir = Path(claude_config).expanduser()
        claude_json = claude_dir / ".claude.json"
    else:
        claude_dir = home / ".claude"
        claude_json = home / ".claude.json"
    codex_home = env.get("CODEX_HOME")
    gemini_home = env.get("GEMINI_CLI_HOME")
    gemini_base = Path(gemini_home).expanduser() if gemini_home else home
    return {
        "claude_dir": claude_dir,
        "claude_json": claude_json,
        "codex_dir": Path(codex_home).expanduser() if codex_home else home / ".codex",
        "gemini_dir": gemini_base / ".gemini",
    }


_STORES: Final[dict[str, type[_Store]]] = {
    "claude": _ClaudeStore,
    "codex": _CodexStore,
    "gemini": _GeminiStore,
}
"""Each agent's reader; checked against the executors table's agents at import (a reader is
built for each in `HistoryReaders`)."""

if tuple(_STORES) != AGENTS:  # pragma: no cover - an agent added to the table without a reader
    raise RuntimeError(f"history readers {tuple(_STORES)} do not match the agents {AGENTS}")


class HistoryReaders:
    """Browse, read and delete the sessions Claude Code, Codex and Gemini CLI keep on disk.

    Thread-safe; every method blocks on file I/O (run it off the event loop). Missing folders
    read as empty. Unknown agents, projects and sessions raise `HistoryNotFound` (404); bad
    paging raises `HistoryRequestError` (400).
    """

    def __init__(
        self,
        *,
        claude_dir: Path | None = None,
        claude_json: Path | None = None,
        codex_dir: Path | None = None,
        gemini_dir: Path | None = None,
        limits: HistoryLimits | None = None,
    ) -> None:
        """Folders not given are this user's (see `default_folders`); `.claude.json` is read
        only with the default Claude folder or when given, so a test tree never meets the
        real one."""
        defaults = default_folders(os.environ, Path.home())
        if claude_dir is None:
            claude_dir = defaults["claude_dir"]
            claude_json = claude_json or defaults["claude_json"]
        self.limits = limits or HistoryLimits()
        self.claude_dir = claude_dir
        self.claude_json = claude_json
        self.codex_dir = codex_dir or defaults["codex_dir"]
        self.gemini_dir = gemini_dir or defaults["gemini_dir"]
        self._stores: dict[str, _Store] = {
            "claude": _ClaudeStore(self.claude_dir, claude_json, self.limits),
            "codex": _CodexStore(self.codex_dir, self.limits),
            "gemini": _GeminiStore(self.gemini_dir, self.limits),
        }
        self._transcripts = TranscriptCache(self.limits)
        self._by_id: dict[str, dict[str, SessionFile]] = {agent: {} for agent in AGENTS}
        self._gate: asyncio.Semaphore | None = None

    async def run(self, call: Callable[[], _T]) -> _T:
        """`call` (blocking work on these readers) in a worker thread, at most
        `limits.max_concurrency` at once across every face that shares the readers (HTTP API,
        remote protocol, MCP); beyond that, calls wait their turn."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.limits.max_concurrency)
        async with self._gate:
            return await asyncio.to_thread(call)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        home: Path | None = None,
        limits: HistoryLimits | None = None,
    ) -> HistoryReaders:
        """Readers of the folders `env` and `home` name (see `default_folders`)."""
        folders = default_folders(os.environ if env is None else env, home or Path.home())
        return cls(**folders, limits=limits)

    # -- listing ---------------------------------------------------------------------------

    def _files(self, agent: str) -> list[SessionFile]:
        store = self._stores[check_agent(agent)]
        with store._lock:
            files = store.files()
        files.sort(key=lambda file: _newest_first(file.summary))
        by_id: dict[str, SessionFile] = {}
        for file in reversed(files):  # the newest wins where an id is listed twice
            by_id[file.summary.id] = file
        self._by_id[agent] = by_id
        return files

    def _complete(self, agent: str, files: list[SessionFile]) -> list[SessionFile]:
        """Count and title, scanned to the end, for the sessions about to be shown."""
        store = self._stores[agent]
        with store._lock:
            return [store.complete(file) for file in files]

    def projects(self, agent: str = "claude") -> list[Project]:
        """Every project, most recently active first, each with its newest sessions."""
        files = self._files(agent)
        grouped: dict[str, list[SessionFile]] = {}
        for file in files:
            grouped.setdefault(file.summary.project_id, []).append(file)
        projects = []
        for project_id, sessions in grouped.items():
            path = next((s.summary.project_path for s in sessions if s.summary.project_path), None)
            recent = self._complete(agent, sessions[: self.limits.recent_sessions])
            projects.append(
                Project(
                    agent=agent,
                    id=project_id,
                    path=path,
                    session_count=len(sessions),
                    last_activity=sessions[0].summary.last_activity,
                    recent_sessions=tuple(file.summary for file in recent),
                )
            )
        for project_id, path in self._stores[agent].empty_projects().items():
            projects.append(Project(agent, project_id, path, 0, None, ()))
        projects.sort(key=lambda project: (-(project.last_activity or 0.0), project.id))
        return projects

    def working_directories(self, agent: str = "claude") -> list[str]:
        """The distinct real working directories, most recently used first."""
        directories: dict[str, None] = {}
        for file in self._files(agent):
            if file.summary.project_path:
                directories.setdefault(_normal_path(file.summary.project_path), None)
        return list(directories)

    def sessions(
        self,
        agent: str = "claude",
        *,
        project_path: str | None = None,
        project_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> SessionPage:
        """Sessions newest first, optionally of one real path or one project id, paged."""
        offset, limit = page_bounds(
            offset, limit, self.limits.default_sessions, self.limits.max_sessions
        )
        files = self._files(agent)
        if project_id is not None:
            check_id("project", project_id)
            known = {file.summary.project_id for file in files}
            known.update(self._stores[agent].empty_projects())
            if project_id not in known:
                raise HistoryNotFound(f"no {agent} project {project_id!r}")
            files = [file for file in files if file.summary.project_id == project_id]
        if project_path:
            wanted = _normal_path(project_path)
            files = [
                file
                for file in files
                if file.summary.project_path and _normal_path(file.summary.project_path) == wanted
            ]
        shown = self._complete(agent, files[offset : offset + limit])
        return SessionPage(tuple(file.summary for file in shown), len(files), offset, limit)

    def _find(self, agent: str, session_id: str) -> SessionFile:
        check_agent(agent)
        check_id("session", session_id)
        listed = self._by_id[agent].get(session_id)
        if (
            listed is not None
            and listed.stamp is not None
            and stamp_of(listed.path) == listed.stamp
        ):
            return self._complete(agent, [listed])[0]  # unchanged since listed
        for file in self._files(agent):
            if file.summary.id == session_id:
                return self._complete(agent, [file])[0]
        raise HistoryNotFound(f"no {agent} session {session_id!r}")

    def session(self, agent: str, session_id: str) -> SessionSummary:
        """One session's summary."""
        return self._find(agent, session_id).summary

    # -- reading -----------------------------------------------------------------------------

    def messages(
        self, agent: str, session_id: str, *, offset: int = 0, limit: int | None = None
    ) -> MessagePage:
        """One session's messages in order, paged (`total` says how many there are)."""
        offset, limit = page_bounds(
            offset, limit, self.limits.default_messages, self.limits.max_messages
        )
        file = self._find(agent, session_id)
        store = self._stores[agent]
        items, total, complete = self._transcripts.page(
            file.path,
            lambda: store.new_parser(file),
            jsonl=file.jsonl,
            offset=offset,
            limit=limit,
        )
        return MessagePage(file.summary, items, total, offset, limit, complete)

    def all_messages(self, agent: str, session_id: str) -> tuple[HistoryMessage, ...]:
        """Every message of a session (for exports; pages are kinder to long sessions)."""
        items: list[HistoryMessage] = []
        while True:
            page = self.messages(
                agent, session_id, offset=len(items), limit=self.limits.max_messages
            )
            items.extend(page.items)
            if not page.items or (page.complete and len(items) >= page.total):
                return tuple(items)

    # -- deleting ----------------------------------------------------------------------------

    def delete_session(self, agent: str, session_id: str) -> DeletedSession:
        """Remove exactly that session's file and its side folder; nothing else."""
        file = self._find(agent, session_id)
        removed = []
        try:
            file.path.unlink()
        except FileNotFoundError:
            raise HistoryNotFound(f"no {agent} session {session_id!r}") from None
        removed.append(str(file.path))
        self._transcripts.forget(file.path)
        for older in file.older_files:
            with contextlib.suppress(FileNotFoundError):
                older.unlink()
                removed.append(str(older))
        side = file.side_folder
        if side is not None and side.is_dir() and not side.is_symlink():
            shutil.rmtree(side)
            removed.append(str(side))
        return DeletedSession(file.summary, tuple(removed))
