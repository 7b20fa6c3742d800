"""Issue 16 over real HTTP on loopback with the fake CLIs: attachments (JSON and multipart, each
agent's way, stored 0600, listed, deleted) and what a session changed (git and outside git)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from arp.command.server import CommandServer
from arp.config import AttachmentBounds, ChangesBounds
from tests.command.sessions_support import fake_config, run_to_end, start

# A real 1×1 PNG (red), as a phone's screenshot would be, only smaller.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TEXT = b"the bug is on line 3\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CommandServer]:
    overrides = {
        "attachments": AttachmentBounds(max_count=3, max_bytes=64 * 1024),
        "changes": ChangesBounds(max_diff_bytes=400),
    }
    config = fake_config(tmp_path, session_overrides=overrides)
    async with CommandServer(config) as srv:
        yield srv


@pytest.fixture
async def http(server: CommandServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url) as client:
        yield client


def attachments_json() -> list[dict[str, Any]]:
    return [
        {"name": "screen shot.png", "content_type": "image/png", "data": b64(PNG)},
        {"name": "notes.txt", "content_type": "text/plain", "data": b64(TEXT)},
    ]


async def test_json_attachments_reach_claude_as_image_blocks_and_are_stored_privately(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = await start(
        http, executor="claude", prompt="look events=1", attachments=attachments_json()
    )
    sid = data["session_id"]
    listed = data["attachments"]
    assert [(a["name"], a["kind"], a["content_type"], a["size"]) for a in listed] == [
        ("screen_shot.png", "image", "image/png", len(PNG)),
        ("notes.txt", "file", "text/plain", len(TEXT)),
    ]
    events, final = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    prompt = next(e for e in events if e["kind"] == "prompt")
    assert prompt["text"] == "look events=1"
    assert [a["id"] for a in prompt["attachments"]] == ["0-1", "0-2"]
    texts = " ".join(e.get("text", "") for e in events if e["kind"] == "text")
    folder = Path(listed[0]["path"]).parent
    # The image came as a content block holding the same bytes; the folder with --add-dir.
    assert f"IMAGES image/png:{hashlib.sha256(PNG).hexdigest()}" in texts
    assert f"ADD-DIR {folder}" in texts
    for item, content in zip(listed, (PNG, TEXT), strict=True):
        path = Path(item["path"])
        assert path.read_bytes() == content
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.is_relative_to(tmp_path / "data" / "sessions" / sid)
    async with http.get(f"/api/sessions/{sid}/attachments/0-1") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == PNG
    async with http.get(f"/api/sessions/{sid}/attachments/0-2") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
    async with http.get(f"/api/sessions/{sid}/attachments/9-9") as resp:
        assert resp.status == 404
    async with http.delete(f"/api/sessions/{sid}") as resp:
        assert resp.status == 204
    assert not folder.exists()


async def test_multipart_start_and_follow_up(http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("executor", "claude")
    form.add_field("prompt", "first events=1")
    form.add_field("noTools", "false")
    form.add_field("attachments", PNG, filename="a.png", content_type="image/png")
    async with http.post("/api/sessions", data=form) as resp:
        data = await resp.json()
        assert resp.status == 201, data
    sid = data["session_id"]
    assert [a["name"] for a in data["attachments"]] == ["a.png"]
    await run_to_end(http, sid)
    form = aiohttp.FormData()
    form.add_field("prompt", "second events=1")
    form.add_field("file", TEXT, filename="log.txt", content_type="text/plain")
    async with http.post(f"/api/sessions/{sid}/messages", data=form) as resp:
        data = await resp.json()
        assert resp.status == 200, data
    assert [(a["id"], a["name"]) for a in data["attachments"]] == [
        ("0-1", "a.png"),
        ("1-1", "log.txt"),
    ]
    events, final = await run_to_end(http, sid, after=0)
    assert final["status"] == "completed"
    prompts = [e for e in events if e["kind"] == "prompt"]
    assert [[a["name"] for a in p["attachments"]] for p in prompts] == [["a.png"], ["log.txt"]]
    init = [e for e in events if e["kind"] == "system" and e.get("raw", {}).get("argv")][-1]
    argv = init["raw"]["argv"]
    assert argv[argv.index("--add-dir") + 1] == str(Path(data["attachments"][1]["path"]).parent)


async def test_codex_gets_images_with_i_and_gemini_with_at_includes(
    http: aiohttp.ClientSession,
) -> None:
    codex = await start(http, executor="codex", prompt="hi", attachments=attachments_json())
    events, _ = await run_to_end(http, codex["session_id"])
    argv = next(e["raw"]["argv"] for e in events if e["kind"] == "system" and "raw" in e)
    image, text = (a["path"] for a in codex["attachments"])
    assert argv[argv.index("-i") + 1] == image
    assert argv[argv.index("-i") + 2] == "--skip-git-repo-check"  # ends the variadic list
    assert f"[File attached: {text} (text/plain, {len(TEXT)} bytes)" in argv[-1]
    gemini = await start(http, executor="gemini", prompt="hi", attachments=attachments_json())
    events, _ = await run_to_end(http, gemini["session_id"])
    argv = next(e["raw"]["argv"] for e in events if e["kind"] == "system" and "raw" in e)
    image, text = (a["path"] for a in gemini["attachments"])
    prompt = argv[argv.index("-p") + 1]
    assert prompt.endswith(f"@{image} @{text}")
    assert argv[argv.index("--include-directories") + 1] == str(Path(image).parent)


async def test_attachment_bounds_and_bad_attachments(http: aiohttp.ClientSession) -> None:
    async def status_of(attachments: Any) -> tuple[int, str]:
        async with http.post(
            "/api/sessions", json={"executor": "claude", "prompt": "x", "attachments": attachments}
        ) as resp:
            return resp.status, (await resp.json())["error"]["message"]

    one = {"name": "n.txt", "content_type": "text/plain", "data": b64(b"x")}
    assert (await status_of([one] * 4))[0] == 413
    big = {"name": "b.txt", "content_type": "text/plain", "data": b64(b"x" * 70_000)}
    assert (await status_of([big]))[0] == 413
    status, message = await status_of(
        [{"name": "x.png", "content_type": "image/png", "data": b64(b"GIF89a...")}]
    )
    assert status == 400 and "not a image/png image" in message
    status, message = await status_of([{"name": "x.bin", "data": b64(b"\xff\xfe\x00")}])
    assert status == 400 and "UTF-8 text" in message
    status, _ = await status_of([{"name": "x", "data": "not base64!"}])
    assert status == 400
    form = aiohttp.FormData()
    form.add_field("executor", "claude")
    form.add_field("prompt", "x")
    form.add_field("attachments", b"y" * 70_000, filename="big.txt", content_type="text/plain")
    async with http.post("/api/sessions", data=form) as resp:
        assert resp.status == 413
    async with http.get("/api/sessions") as resp:
        assert (await resp.json())["total"] == 0  # nothing half-made stayed


# ------------------------------------------------------------------------------ changes


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def make_repo(repo: Path) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@localhost")
    git(repo, "config", "user.name", "t")
    for name in ("edit.txt", "gone.txt", "dirty.txt", "staged.txt"):
        (repo / name).write_text(f"{name} line 1\nline 2\nline 3\n")
    (repo / "stashed.txt").write_text("before stash\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    (repo / "stashed.txt").write_text("stashed change\n")
    git(repo, "stash", "-q")
    git(repo, "branch", "feature")
    # The person's own uncommitted work, present before the run: never the agent's.
    (repo / "dirty.txt").write_text("dirty.txt changed by the person\nline 2\nline 3\n")
    (repo / "staged.txt").write_text("staged by the person\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("the person's untracked file\n")


def repo_state(repo: Path) -> dict[str, Any]:
    return {
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "stash": git(repo, "stash", "list"),
        "stash_ref": git(repo, "rev-parse", "refs/stash"),
        "branches": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "head": git(repo, "rev-parse", "HEAD"),
        "symbolic": git(repo, "symbolic-ref", "HEAD"),
        "staged": git(repo, "diff", "--cached", "--name-status"),
    }


async def test_changes_in_git_show_only_the_agents_edits_and_leave_index_stash_branches(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    before = repo_state(repo)
    data = await start(
        http,
        executor="claude",
        prompt=f"edit events=0 writefile={repo}/edit.txt rmfile={repo}/gone.txt",
        projectPath=str(repo),
    )
    sid = data["session_id"]
    _, final = await run_to_end(http, sid)
    assert final["status"] == "completed", final
    async with http.get(f"/api/sessions/{sid}/changes") as resp:
        assert resp.status == 200
        changes = await resp.json()
    assert changes["base"]["kind"] == "git"
    assert changes["base"]["commit"] == before["head"].strip()
    files = {f["path"]: f for f in changes["files"]}
    assert sorted(files) == ["edit.txt", "gone.txt"]
    edit, gone = files["edit.txt"], files["gone.txt"]
    assert (edit["status"], edit["additions"], edit["deletions"]) == ("modified", 1, 3)
    assert "-edit.txt line 1\n" in edit["diff"] and "+written by the fake\n" in edit["diff"]
    assert (gone["status"], gone["additions"], gone["deletions"]) == ("deleted", 0, 3)
    assert "-gone.txt line 1\n" in gone["diff"]
    # The person's index, stash and branches are as they were.
    after = repo_state(repo)
    assert after == before
    assert "stashed" not in git(repo, "status", "--porcelain")
    async with http.get(f"/api/sessions/{sid}/changes", params={"path": "gone.txt"}) as resp:
        one = await resp.json()
    assert [f["path"] for f in one["files"]] == ["gone.txt"]
    async with http.get(f"/api/sessions/{sid}/changes", params={"path": "dirty.txt"}) as resp:
        assert resp.status == 404


async def test_changes_cut_long_diffs_and_list_binaries_without_one(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    data = await start(http, executor="claude", prompt="events=1 gate=x", projectPath=str(repo))
    sid = data["session_id"]
    for _ in range(500):  # the base is taken before the child starts: wait for the child
        async with http.get(f"/api/sessions/{sid}") as resp:
            if (await resp.json())["pid"]:
                break
        await asyncio.sleep(0.02)
    (repo / "long.txt").write_text("".join(f"line {i}\n" for i in range(200)))
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (repo / "x").write_text("go")
    await run_to_end(http, sid)
    async with http.get(f"/api/sessions/{sid}/changes") as resp:
        files = {f["path"]: f for f in (await resp.json())["files"]}
    assert files["blob.bin"]["binary"] is True and files["blob.bin"]["diff"] is None
    long = files["long.txt"]
    assert long["additions"] == 200
    assert "[diff cut by arp: " in long["diff"] and len(long["diff"]) < 600
    async with http.get(f"/api/sessions/{sid}/changes", params={"path": "long.txt"}) as resp:
        whole = (await resp.json())["files"][0]["diff"]
    assert "diff cut" not in whole and "+line 199\n" in whole


async def test_changes_outside_git_through_the_snapshot_and_tool_calls(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    (project / "edit.txt").write_text("old 1\nold 2\n")
    (project / "gone.txt").write_text("bye\n")
    (project / "same.txt").write_text("same\n")
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    assert subprocess.run(
        ["git", "rev-parse"], cwd=project, env=env, capture_output=True
    ).returncode
    data = await start(
        http,
        executor="claude",
        prompt=f"events=0 writefile={project}/edit.txt rmfile={project}/gone.txt",
        projectPath=str(project),
    )
    sid = data["session_id"]
    await run_to_end(http, sid)
    async with http.get(f"/api/sessions/{sid}/changes") as resp:
        changes = await resp.json()
    if changes["base"]["kind"] == "git":  # pragma: no cover - tmp is inside a repository
        pytest.skip("the temporary folder lies inside a git work tree here")
    assert changes["base"]["kind"] == "files" and changes["base"]["complete"]
    files = {f["path"]: f for f in changes["files"]}
    assert sorted(files) == ["edit.txt", "gone.txt"]
    assert files["edit.txt"]["status"] == "modified"
    assert "-old 1\n" in files["edit.txt"]["diff"]
    assert "+written by the fake\n" in files["edit.txt"]["diff"]
    assert (files["gone.txt"]["status"], files["gone.txt"]["deletions"]) == ("deleted", 1)


async def test_changes_documented_in_openapi(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert "/api/sessions/{session_id}/changes" in doc["paths"]
    assert "/api/sessions/{session_id}/attachments/{attachment_id}" in doc["paths"]
    post = doc["paths"]["/api/sessions"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "413" in post["responses"]
    assert "FileChange" in doc["components"]["schemas"]
