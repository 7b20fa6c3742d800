"""Where sessions outlive arpc: one folder per session under ``<data_dir>/sessions/``.

Each folder holds ``session.json`` (the record's state, rewritten atomically on each change:
written to ``session.json.tmp``, then renamed over it), ``events.jsonl`` (the event log,
`arp.agents.eventlog`), and when it has them ``attachments/`` (the prompts' images and files,
0600) and ``changes/`` (the outside-git snapshot, `arp.agents.changes`). Folders are the user's
alone (mode 0700): prompts and agent output are private. `load` reads every stored session back;
one whose state cannot be read is skipped with a warning, never fatal. What becomes of a session
that was running when arpc stopped is the manager's decision (`arp.agents.sessions`), not the
store's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arp.agents.attachments import StoredAttachment
from arp.agents.eventlog import EventLog
from arp.agents.events import Usage
from arp.agents.executors import get_executor
from arp.agents.records import SessionRecord
from arp.agents.session_types import STATUSES, StartRequest

log = logging.getLogger(__name__)

VERSION = 1
"""The ``version`` of ``session.json`` written now."""


def to_meta(record: SessionRecord) -> dict[str, Any]:
    """The record's stored state (``session.json``)."""
    return {
        "version": VERSION,
        "session_id": record.session_id,
        "request": record.request.to_json(),
        "project_path": record.project_path,
        "status": record.status,
        "agent_session_id": record.agent_session_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "exit_code": record.exit_code,
        "usage": record.usage.to_json(),
        "runs": record.runs,
        "error": record.error,
        "child": record.child if record.status == "running" else None,
        "attachments": [item.to_json() for item in record.attachments],
        "changes_base": record.changes_base,
    }


class SessionStore:
    """The sessions' folders under ``data_dir`` (None: nothing is stored, all stays in memory)."""

    def __init__(self, data_dir: Path | None, new_log: Callable[[Path | None], EventLog]) -> None:
        self.base = data_dir / "sessions" if data_dir is not None else None
        self.new_log = new_log
        """Opens a session's event log (in its folder, or in memory for None)."""

    def open(self) -> None:
        if self.base is not None:
            self.base.mkdir(mode=0o700, parents=True, exist_ok=True)

    def folder(self, session_id: str) -> Path | None:
        return self.base / session_id if self.base is not None else None

    def save(self, record: SessionRecord) -> None:
        """Rewrites the record's ``session.json`` (a failure is logged: the run goes on)."""
        if record.folder is None or record.deleted:
            return
        try:
            # Prompts and agent output are private: the folders are the user's alone.
            record.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = record.folder / "session.json.tmp"
            # ASCII: an id or prompt holding a lone surrogate must not make the state unsavable.
            tmp.write_text(json.dumps(to_meta(record)), encoding="utf-8")
            os.replace(tmp, record.folder / "session.json")
        except OSError as exc:
            log.warning("session %s: could not save its state: %s", record.session_id, exc)

    def load(self, keep: int) -> list[SessionRecord]:
        """The newest ``keep`` stored sessions that can be read, oldest first; older ones
        (the bound was lowered since) are evicted, files and all."""
        if self.base is None or not self.base.is_dir():
            return []
        loaded: list[SessionRecord] = []
        for folder in self.base.iterdir():
            meta_path = folder / "session.json"
            if not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                loaded.append(self._record(folder, meta))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping stored session %s: %s", folder.name, exc)
        loaded.sort(key=lambda record: record.created_at)
        evicted, kept = loaded[:-keep], loaded[-keep:]
        for record in evicted:
            record.log.close()
            if record.folder is not None:
                shutil.rmtree(record.folder, ignore_errors=True)
        return kept

    def _record(self, folder: Path, meta: dict[str, Any]) -> SessionRecord:
        request = StartRequest.from_stored(meta["request"])
        record = SessionRecord(
            str(meta["session_id"]),
            request,
            get_executor(request.executor),
            str(meta["project_path"]),
            folder,
            self.new_log(folder),
            float(meta["created_at"]),
        )
        status = meta.get("status")
        record.status = status if status in STATUSES else "interrupted"
        record.agent_session_id = meta.get("agent_session_id")
        record.updated_at = float(meta.get("updated_at") or record.created_at)
        record.started_at = meta.get("started_at")
        record.ended_at = meta.get("ended_at")
        record.exit_code = meta.get("exit_code")
        record.usage = Usage.from_json(meta.get("usage")) or Usage()
        record.runs = int(meta.get("runs", 1))
        record.error = meta.get("error")
        child = meta.get("child")
        record.child = child if isinstance(child, dict) else None
        record.attachments = tuple(
            StoredAttachment.from_json(item) for item in meta.get("attachments") or ()
        )
        base = meta.get("changes_base")
        record.changes_base = base if isinstance(base, dict) else None
        return record


def evict_oldest(records: dict[str, SessionRecord], excess: int) -> list[Path]:
    """Forgets the ``excess`` oldest finished sessions of ``records`` (retention: they go as a
    delete would); returns their folders, for the caller to remove off the event loop."""
    if excess <= 0:
        return []
    finished = sorted(
        (r for r in records.values() if r.run is None and not r.deleting),
        key=lambda r: r.created_at,
    )
    folders = []
    for record in finished[:excess]:
        log.info("session %s: evicted (--max-kept-sessions)", record.session_id)
        record.deleted = True
        records.pop(record.session_id, None)
        record.log.close()
        record.changed()
        folders += [p for p in (record.folder, record.scratch) if p is not None]
    return folders


def remove_folders(folders: list[Path]) -> None:
    """Removes the folders of forgotten sessions (run off the event loop: it may be slow)."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
