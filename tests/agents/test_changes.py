"""What a session changed (`arp.agents.changes`) without a CLI: git bases and diffs (renames,
binaries, unborn branches), snapshots outside git, and the base kept across a restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

from arp.agents.attachments import Upload
from arp.agents.changes import report, take_base
from arp.agents.sessions import SessionConfig, SessionManager, StartRequest
from arp.config import ChangesBounds
from tests.conftest import units
from tests.fakes.install import install_fakes


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def init(repo: Path) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@localhost")
    git(repo, "config", "user.name", "t")


async def test_renames_binaries_and_an_unborn_branch(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init(repo)  # no commit yet: HEAD is unborn
    (repo / "moved.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    base = await take_base(str(repo), tmp_path / "s")
    assert base["kind"] == "git" and base["commit"] is None and base["tree"]
    (repo / "moved.txt").rename(repo / "renamed.txt")
    (repo / "pic.bin").write_bytes(bytes(range(256)))
    answer = await report(base, tmp_path / "s", [])
    files = {f["path"]: f for f in answer["files"]}
    assert files["renamed.txt"]["status"] == "renamed"
    assert files["renamed.txt"]["old_path"] == "moved.txt"
    assert files["pic.bin"]["binary"] is True and files["pic.bin"]["diff"] is None
    one = await report(base, tmp_path / "s", [], path="moved.txt")
    assert [f["path"] for f in one["files"]] == ["renamed.txt"]


async def test_outside_git_a_file_beyond_the_snapshot_counts_when_a_tool_named_it(
    tmp_path: Path,
) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    for i in range(5):
        (project / f"f{i}.txt").write_text(f"{i}\n")
    bounds = ChangesBounds(snapshot_files=3)
    store = tmp_path / "session"
    base = await take_base(str(project), store, bounds)
    if base["kind"] == "git":  # pragma: no cover - the temporary folder is in a work tree
        return
    assert base["complete"] is False and base["files"] == 3
    (project / "new.txt").write_text("new\n")
    (project / "named.txt").write_text("named\n")
    answer = await report(base, store, [str(project / "named.txt"), "/elsewhere/x"], bounds)
    # The snapshot was cut short: an unknown file counts only when a tool call named it.
    assert [(f["path"], f["status"]) for f in answer["files"]] == [("named.txt", "added")]


async def test_the_base_and_attachments_outlive_a_restart_and_memory_sessions_clean_up(
    tmp_path: Path,
) -> None:
    fakes = install_fakes(tmp_path / "bin")
    repo = tmp_path / "repo"
    init(repo)
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a")
    config = SessionConfig(
        data_dir=tmp_path / "data", binaries={"claude": fakes["claude"]}, kill_wait=units(3)
    )
    request = StartRequest("claude", f"events=0 writefile={repo}/a.txt", project_path=str(repo))
    async with SessionManager(config) as manager:
        session = await manager.start_session(request, [Upload("n.txt", "", b"hi\n")])
        await manager.wait(session.session_id, units(10))
    async with SessionManager(config) as manager:
        again = manager.get(session.session_id)
        assert [a["name"] for a in again.attachments] == ["n.txt"]
        changes = await manager.changes(session.session_id)
        assert [f["path"] for f in changes["files"]] == ["a.txt"]
    # Kept in memory only: a private temporary folder holds the attachments, gone on delete.
    memory = SessionConfig(binaries={"claude": fakes["claude"]}, kill_wait=units(3))
    async with SessionManager(memory) as manager:
        session = await manager.start_session(
            StartRequest("claude", "events=0", project_path=str(tmp_path)),
            [Upload("n.txt", "", b"hi\n")],
        )
        await manager.wait(session.session_id, units(10))
        folder = Path(session.attachments[0]["path"]).parent.parent
        assert Path(session.attachments[0]["path"]).read_bytes() == b"hi\n"
        await manager.delete(session.session_id)
        assert not folder.exists()
