"""Issue 16 with the real CLIs against the mock models: attachments reach the model as each CLI
sends them, and what a session changed in a git work tree.

Opt-in like the rest of the tier (``ARP_REAL_CLI=1``). The mock records every request it gets, so
"the image reached the model" is checked on the bytes: the PNG's base64 must be in a request
body (Claude: an image block; Codex: an ``input_image`` data URL; Gemini: ``inlineData`` from the
``@path`` include). A text file is readable by the agent: its words come back to the model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from arp.agents.attachments import Upload
from arp.agents.sessions import SessionConfig, SessionManager, StartRequest
from tests.agents.real_cli.agent_home import AgentHome
from tests.agents.real_cli.mock_models import WRITTEN, MockModelApi
from tests.conftest import units

pytestmark = pytest.mark.skipif(
    os.environ.get("ARP_REAL_CLI") != "1",
    reason="real agent CLI tier is opt-in: run scripts/install-agent-clis.sh, set ARP_REAL_CLI=1",
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
MODEL_CALL = {"claude": "/v1/messages", "codex": "/v1/responses", "gemini": "Content"}
AGENTS = ("claude", "codex", "gemini")


def bodies(mock: MockModelApi, name: str) -> str:
    return "\n".join(json.dumps(r.body) for r in mock.calls(MODEL_CALL[name]))


async def run_to_end(manager: SessionManager, session_id: str) -> dict[str, Any]:
    session = await manager.wait(session_id, timeout=units(90))
    assert session.status == "completed", (session.status, session.error)
    return session.to_json()


@pytest.mark.parametrize("name", AGENTS)
async def test_an_attached_png_reaches_the_model_with_the_same_bytes(
    name: str, manager: SessionManager, mock_api: MockModelApi, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    request = StartRequest(name, "ASK-img what is in the screenshot?", project_path=str(project))
    session = await manager.start_session(request, [Upload("shot.png", "image/png", PNG)])
    await run_to_end(manager, session.session_id)
    sent = bodies(mock_api, name)
    assert base64.b64encode(PNG).decode() in sent, f"{name} did not send the image's bytes"
    stored = Path(session.attachments[0]["path"])
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(PNG).digest()
    assert stored.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", AGENTS)
async def test_an_attached_text_file_is_readable_by_the_agent(
    name: str, manager: SessionManager, mock_api: MockModelApi, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    secret = "ATTACHED-WORDS-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    request = StartRequest(name, "READ-ATTACHED please", project_path=str(project))
    upload = Upload("notes.txt", "text/plain", f"{secret}\n".encode())
    session = await manager.start_session(request, [upload])
    await run_to_end(manager, session.session_id)
    # The file's words came back to the model: a tool read them (Claude, Codex; the folder is
    # outside the project, so --add-dir / the sandbox had to allow it) or an @include did.
    requests = mock_api.calls(MODEL_CALL[name])
    later = "\n".join(json.dumps(r.body) for r in requests[1:]) if name != "gemini" else None
    assert secret in (later if later is not None else bodies(mock_api, name)), name
    events = manager.events_after(session.session_id, 0, 1000)
    assert not any(e.kind == "tool_result" and e.is_error for e in events), [
        (e.kind, e.text) for e in events if e.kind == "tool_result"
    ]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
async def bypassing(
    tmp_path: Path, cli_binaries: dict[str, str], agent_home: AgentHome
) -> AsyncIterator[SessionManager]:
    """A manager whose Claude may bypass permissions as root (``IS_SANDBOX=1``,
    docs/real-cli-notes.md), so one run can write and the next delete without asking."""
    config = SessionConfig(
        data_dir=tmp_path / "data",
        binaries=cli_binaries,
        extra_env={**agent_home.env, "IS_SANDBOX": "1"},
        sigint_grace=units(3),
        sigterm_grace=units(3),
        kill_wait=units(5),
    )
    async with SessionManager(config) as sessions:
        yield sessions


@pytest.mark.parametrize("name", AGENTS)
async def test_changes_in_git_are_the_agents_alone_and_the_index_is_untouched(
    name: str, bypassing: SessionManager, tmp_path: Path
) -> None:
    manager = bypassing
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@localhost")
    git(repo, "config", "user.name", "t")
    (repo / "kept.txt").write_text("kept\n")
    (repo / "gone.txt").write_text("gone 1\ngone 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    (repo / "kept.txt").write_text("the person's own edit\n")  # uncommitted, before the run
    git(repo, "add", "kept.txt")
    (repo / "scratch.txt").write_text("the person's untracked file\n")
    index = (repo / ".git" / "index").read_bytes()
    refs = git(repo, "for-each-ref")
    # Run 1 writes a file with the agent's edit tool, run 2 deletes one with its shell.
    target = repo / "made.txt"
    mode = "bypassPermissions"
    request = StartRequest(
        name, f"WRITE-FILE:{target}", project_path=str(repo), permission_mode=mode
    )
    session = await manager.start_session(request)
    await run_to_end(manager, session.session_id)
    assert target.read_text() == WRITTEN
    await manager.send_message(session.session_id, f"RUN_SHELL[rm {repo}/gone.txt]")
    await run_to_end(manager, session.session_id)
    assert not (repo / "gone.txt").exists()
    changes = await manager.changes(session.session_id)
    files = {f["path"]: f for f in changes["files"]}
    assert sorted(files) == ["gone.txt", "made.txt"], changes
    assert (files["made.txt"]["status"], files["made.txt"]["additions"]) == ("added", 1)
    assert f"+{WRITTEN}" in files["made.txt"]["diff"]
    assert (files["gone.txt"]["status"], files["gone.txt"]["deletions"]) == ("deleted", 2)
    assert "-gone 1\n" in files["gone.txt"]["diff"]
    assert (repo / ".git" / "index").read_bytes() == index
    assert git(repo, "for-each-ref") == refs
    assert git(repo, "stash", "list") == ""


@pytest.mark.parametrize("name", AGENTS)
async def test_an_attached_png_reaches_the_model_in_ask_mode_too(
    name: str, manager: SessionManager, mock_api: MockModelApi, tmp_path: Path
) -> None:
    """Ask mode speaks each CLI's stdio protocol: Claude image blocks, Codex ``localImage``
    turn inputs, Gemini ACP image blocks."""
    project = tmp_path / "project"
    project.mkdir()
    request = StartRequest(name, "ASK-ask look", project_path=str(project), permission_mode="ask")
    session = await manager.start_session(request, [Upload("shot.png", "image/png", PNG)])
    await run_to_end(manager, session.session_id)
    assert base64.b64encode(PNG).decode() in bodies(mock_api, name), name
