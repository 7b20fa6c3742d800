"""HistoryReaders over generated trees shaped like the agents' own (no event loop needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.agents.history.trees import (
    CLAUDE_ENTRIES_PER_TURN,
    CLAUDE_MESSAGES_PER_TURN,
    CODEX_MESSAGES_PER_TURN,
    GEMINI_MESSAGES_PER_TURN,
    claude_lines,
    encode,
    sid,
    write_claude_session,
    write_codex_session,
    write_gemini_json,
    write_gemini_jsonl,
)

from arp.agents.history import (
    HistoryLimits,
    HistoryNotFound,
    HistoryReaders,
    HistoryRequestError,
)

PROJECTS = ["/home/u/alpha", "/home/u/beta.app", "/srv/gamma svc", "/home/u/delta"]
SESSIONS_PER_PROJECT = 60


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several projects, hundreds of sessions, a long one, sub-agents, a half-written line."""
    home = tmp_path_factory.mktemp("home")
    claude = home / ".claude"
    n = 0
    for p, cwd in enumerate(PROJECTS):
        for s in range(SESSIONS_PER_PROJECT):
            write_claude_session(
                claude,
                cwd,
                sid(n),
                turns=2 + s % 3,
                start=n * 100.0,
                subagent=(s == 0),
                half_line=(s == 1),
                prompt=f"task {p}-{s}",
            )
            n += 1
    write_claude_session(claude, "/home/u/long", sid(10_000), turns=800, start=10.0)
    # A folder whose files say nothing of their cwd: the path comes from .claude.json's keys.
    mute = claude / "projects" / encode("/opt/mute")
    mute.mkdir(parents=True)
    (mute / f"{sid(20_000)}.jsonl").write_text(
        '{"type":"summary","summary":"Mute summary","leafUuid":"l1"}\n'
    )
    os.utime(mute / f"{sid(20_000)}.jsonl", (1e9, 1e9))  # no timestamps inside: mtime counts
    (home / ".claude.json").write_text(
        json.dumps(
            {
                "oauthAccount": {"accessToken": "SECRET-TOKEN"},
                "projects": {"/opt/mute": {"allowedTools": ["SECRET-TOOL"]}},
            }
        )
    )
    codex = home / ".codex"
    for c in range(30):
        write_codex_session(codex, PROJECTS[c % 2], sid(30_000 + c), turns=3, start=c * 1000.0)
    gemini = home / ".gemini"
    write_gemini_json(gemini, "proj-one", "/home/u/one", sid(40_000), turns=3, start=100.0)
    write_gemini_jsonl(gemini, "proj-one", "/home/u/one", sid(40_001), turns=4, start=200.0)
    (gemini / "tmp" / "proj-one" / "chats" / sid(40_001)).mkdir()
    return home


def readers_for(home: Path, **limits: float) -> HistoryReaders:
    """Readers of `home`; sessions parse to the end on first read unless a budget is given."""
    limits.setdefault("parse_budget", float("inf"))
    return HistoryReaders(
        claude_dir=home / ".claude",
        claude_json=home / ".claude.json",
        codex_dir=home / ".codex",
        gemini_dir=home / ".gemini",
        limits=HistoryLimits(**limits),  # type: ignore[arg-type]
    )


def test_projects_have_real_paths_counts_and_recent_sessions(tree: Path) -> None:
    readers = readers_for(tree)
    projects = {project.id: project for project in readers.projects("claude")}
    for cwd in PROJECTS:
        project = projects[encode(cwd)]
        assert project.path == cwd
        assert project.session_count == SESSIONS_PER_PROJECT
        recent = project.recent_sessions
        assert len(recent) == 5
        assert [s.last_activity for s in recent] == sorted(
            (s.last_activity for s in recent), reverse=True
        )
        assert all(s.title.startswith("task ") for s in recent)
    assert projects[encode("/opt/mute")].path == "/opt/mute"
    listed = [project.last_activity or 0 for project in readers.projects("claude")]
    assert listed == sorted(listed, reverse=True)


def test_claude_json_content_never_leaves(tree: Path) -> None:
    readers = readers_for(tree)
    text = json.dumps([p.to_json() for p in readers.projects("claude")])
    text += json.dumps(readers.sessions("claude", limit=1000).to_json())
    text += json.dumps(readers.working_directories("claude"))
    assert "SECRET" not in text
    mute = readers.sessions("claude", project_path="/opt/mute").items
    assert [s.title for s in mute] == ["Mute summary"]


def test_subagents_are_not_sessions_and_counts_skip_nested_lines(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.sessions("claude", project_path=PROJECTS[0], limit=1000)
    assert page.total == SESSIONS_PER_PROJECT
    ids = {s.id for s in page.items}
    assert "agent-old1" not in ids and "agent-a1" not in ids
    first = readers.session("claude", sid(0))
    assert first.message_count == 2 * CLAUDE_ENTRIES_PER_TURN


def test_counts_do_not_depend_on_where_reads_cut_lines(tree: Path) -> None:
    """Chunks that cut lines (and titles) anywhere give the same summaries as big chunks."""
    whole = readers_for(tree).sessions("claude", limit=1000).items
    cut = readers_for(tree, read_chunk=97).sessions("claude", limit=1000).items
    assert [s.to_json() for s in cut] == [s.to_json() for s in whole]
    assert sum(s.message_count for s in whole) > 0


def test_sessions_paging_is_newest_first_and_complete(tree: Path) -> None:
    readers = readers_for(tree)
    total = readers.sessions("claude", limit=0).total
    assert total == len(PROJECTS) * SESSIONS_PER_PROJECT + 2
    seen: list[str] = []
    stamps: list[float] = []
    for offset in range(0, total, 37):
        page = readers.sessions("claude", limit=37, offset=offset)
        seen.extend(s.id for s in page.items)
        stamps.extend(s.last_activity for s in page.items)
    assert len(seen) == total == len(set(seen))
    assert stamps == sorted(stamps, reverse=True)
    assert readers.sessions("claude", offset=total + 5).items == ()
    with pytest.raises(HistoryRequestError):
        readers.sessions("claude", offset=-1)
    capped = readers.sessions("claude", limit=10**6)
    assert capped.limit == HistoryLimits().max_sessions


def test_project_sessions_and_unknown_project(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.sessions("claude", project_id=encode(PROJECTS[2]), limit=10, offset=5)
    assert page.total == SESSIONS_PER_PROJECT and len(page.items) == 10
    assert {s.project_path for s in page.items} == {PROJECTS[2]}
    for bad in ("nope", "../projects", "a/b"):
        with pytest.raises(HistoryNotFound):
            readers.sessions("claude", project_id=bad)


def test_working_directories_newest_first(tree: Path) -> None:
    directories = readers_for(tree).working_directories("claude")
    assert directories[0] == PROJECTS[-1]
    assert set(directories) == {*PROJECTS, "/home/u/long", "/opt/mute"}
    assert len(directories) == len(set(directories))


def test_messages_are_normalised_merged_and_paged(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.messages("claude", sid(10_000), limit=5)
    assert page.total == 800 * CLAUDE_MESSAGES_PER_TURN
    kinds = [(m.role, m.kind) for m in page.items]
    assert kinds == [
        ("user", "text"),
        ("assistant", "thinking"),
        ("assistant", "text"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
    ]
    tool_use, result = page.items[3], page.items[4]
    assert tool_use.tool_name == "Bash" and tool_use.tool_input == {"command": "ls 0"}
    assert result.tool_use_id == tool_use.tool_use_id == "toolu_0"
    assert {m.message_id for m in page.items[1:4]} == {f"msg_{sid(10_000)[-8:]}_10_0"}
    collected = []
    offset = 0
    while True:
        chunk = readers.messages("claude", sid(10_000), offset=offset, limit=333)
        collected.extend(chunk.items)
        offset += len(chunk.items)
        if not chunk.items:
            break
    assert len(collected) == page.total
    assert collected[-1].text.endswith("output 799")
    assert [m.text for m in collected if m.role == "user" and m.kind == "text"] == [
        f"please fix the bug #{turn}" for turn in range(800)
    ]


def test_a_long_session_is_parsed_progressively(tree: Path) -> None:
    readers = readers_for(tree, parse_budget=0.0)
    full = 800 * CLAUDE_MESSAGES_PER_TURN
    first = readers.messages("claude", sid(10_000), limit=10)
    assert not first.complete and 10 < first.total < full
    assert first.to_json()["hasMore"] and first.to_json()["complete"] is False
    assert [m.text for m in first.items[:1]] == ["please fix the bug #0"]
    far = readers.messages("claude", sid(10_000), offset=2000, limit=10)
    assert far.items[0].text == "please fix the bug #400" and far.total > 2000
    assert all_texts(readers, sid(10_000)) == all_texts(readers_for(tree), sid(10_000))
    last = readers.messages("claude", sid(10_000), offset=full - 1)
    assert last.complete and last.total == full and len(last.items) == 1


def all_texts(readers: HistoryReaders, session_id: str) -> list[str]:
    return [m.text for m in readers.all_messages("claude", session_id)]


def test_unknown_types_and_half_written_line_are_skipped(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.messages("claude", sid(1))
    assert page.total == 3 * CLAUDE_MESSAGES_PER_TURN
    assert all("half wr" not in m.text for m in page.items)
    assert all(m.kind in ("text", "thinking", "tool_use", "tool_result") for m in page.items)


def test_streaming_snapshots_of_one_message_merge(tmp_path: Path) -> None:
    folder = tmp_path / "projects" / "-p"
    folder.mkdir(parents=True)
    base = {"cwd": "/p", "sessionId": "s", "timestamp": "2025-01-01T00:00:00Z"}
    lines = [
        {**base, "type": "user", "uuid": "1", "message": {"role": "user", "content": "go"}},
        {
            **base,
            "type": "assistant",
            "uuid": "2",
            "message": {"id": "m", "content": [{"type": "text", "text": "Hel"}]},
        },
        {
            **base,
            "type": "assistant",
            "uuid": "3",
            "message": {"id": "m", "content": [{"type": "text", "text": "Hello"}]},
        },
        {
            **base,
            "type": "assistant",
            "uuid": "4",
            "message": {
                "id": "m",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "t", "name": "Read", "input": {}},
                ],
            },
        },
        {**base, "type": "mystery-type", "data": 1},
        {
            **base,
            "type": "system",
            "subtype": "compact_boundary",
            "content": "Conversation compacted",
        },
        {
            **base,
            "type": "user",
            "uuid": "c",
            "isCompactSummary": True,
            "message": {"role": "user", "content": "This session is being continued..."},
        },
        "not json at all",
        {
            **base,
            "type": "assistant",
            "uuid": "5",
            "message": {
                "id": "m",
                "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}],
            },
        },
    ]
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    (folder / "s.jsonl").write_text(text)
    page = HistoryReaders(claude_dir=tmp_path).messages("claude", "s")
    assert [(m.role, m.kind, m.text) for m in page.items] == [
        ("user", "text", "go"),
        ("assistant", "text", "Hello"),
        ("assistant", "tool_use", ""),
        ("system", "text", "Conversation compacted"),
        ("user", "summary", "This session is being continued..."),
    ]


def test_a_growing_file_is_re_read_from_where_it_stopped(tmp_path: Path) -> None:
    claude = tmp_path / ".claude"
    path = write_claude_session(claude, "/w", sid(1), turns=2, start=0.0, half_line=True)
    readers = readers_for(tmp_path)
    assert readers.session("claude", sid(1)).message_count == 2 * CLAUDE_ENTRIES_PER_TURN
    assert readers.messages("claude", sid(1)).total == 2 * CLAUDE_MESSAGES_PER_TURN
    first_activity = readers.session("claude", sid(1)).last_activity
    again = readers.messages("claude", sid(1))
    assert again.total == 2 * CLAUDE_MESSAGES_PER_TURN
    with path.open("a") as handle:  # the agent finishes the half line and adds a turn
        handle.write('ITTEN"},"uuid":"h","timestamp":"2025-06-02T00:00:00.000Z"}\n')
        handle.writelines(claude_lines(sid(1), "/w", 3, 90_000.0)[1:-1])
        handle.write('{"type":"assistant","message":{"id":"half"')
    grown = readers.messages("claude", sid(1), limit=2000)
    assert grown.total == 2 * CLAUDE_MESSAGES_PER_TURN + 1 + 3 * CLAUDE_MESSAGES_PER_TURN
    assert grown.items[2 * CLAUDE_MESSAGES_PER_TURN].text == "half wrITTEN"
    summary = readers.session("claude", sid(1))
    assert summary.message_count == 5 * CLAUDE_ENTRIES_PER_TURN + 1
    assert summary.last_activity > first_activity  # moved on
    # A rewrite (smaller file) is parsed afresh, not appended to.
    path.write_text("".join(claude_lines(sid(1), "/w", 1, 0.0)))
    assert readers.messages("claude", sid(1)).total == CLAUDE_MESSAGES_PER_TURN
    assert readers.session("claude", sid(1)).message_count == CLAUDE_ENTRIES_PER_TURN


def test_unchanged_files_are_not_scanned_again(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readers = readers_for(tree)
    readers.projects("claude")
    readers.sessions("claude")
    before = readers.session("claude", sid(200)).message_count
    from arp.agents.history import scan

    calls: list[Path] = []
    original = scan.Scanner._advance

    def counting(self: scan.Scanner, path: Path, state: scan.ScanState) -> None:
        calls.append(path)
        original(self, path, state)

    monkeypatch.setattr(scan.Scanner, "_advance", counting)
    readers.projects("claude")
    readers.sessions("claude")
    assert readers.session("claude", sid(200)).message_count == before
    assert calls == []
    target = tree / ".claude" / "projects" / encode(PROJECTS[3]) / f"{sid(200)}.jsonl"
    with target.open("a") as handle:
        handle.write(claude_lines(sid(200), PROJECTS[3], 1, 99_999.0)[1])
    after = readers.session("claude", sid(200))
    assert calls == [target]
    assert after.message_count == before + 1


def test_a_listing_reads_whole_files_only_for_the_sessions_it_shows(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arp.agents.history import scan

    calls: list[Path] = []
    original = scan.Scanner._advance

    def counting(self: scan.Scanner, path: Path, state: scan.ScanState) -> None:
        calls.append(path)
        original(self, path, state)

    monkeypatch.setattr(scan.Scanner, "_advance", counting)
    readers = readers_for(tree)
    page = readers.sessions("claude", limit=7, offset=3)
    assert sorted(calls) == sorted(
        tree / ".claude" / "projects" / encode(s.project_path or "") / f"{s.id}.jsonl"
        for s in page.items
    )
    calls.clear()
    projects = readers.projects("claude")
    assert len(calls) <= sum(len(p.recent_sessions) for p in projects)


def test_delete_removes_exactly_the_session(tmp_path: Path) -> None:
    claude = tmp_path / ".claude"
    keep = write_claude_session(claude, "/d", sid(1), turns=1, start=0.0, subagent=True)
    gone = write_claude_session(claude, "/d", sid(2), turns=1, start=10.0, subagent=False)
    side = gone.with_suffix("")
    (side / "tool-results").mkdir(parents=True)
    (side / "tool-results" / "r.txt").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    before = {p for p in tmp_path.rglob("*")}
    readers = HistoryReaders(claude_dir=claude)
    deleted = readers.delete_session("claude", sid(2))
    assert set(deleted.removed) == {str(gone), str(side)}
    after = {p for p in tmp_path.rglob("*")}
    assert before - after == {gone, side, side / "tool-results", side / "tool-results" / "r.txt"}
    assert keep.exists() and (keep.with_suffix("") / "subagents").is_dir()
    with pytest.raises(HistoryNotFound):
        readers.delete_session("claude", sid(2))
    assert [s.id for s in readers.sessions("claude").items] == [sid(1)]


@pytest.mark.parametrize(
    "bad",
    [
        "..",
        ".",
        "../x",
        "a/b",
        "/etc/passwd",
        "..%2F..%2Fetc",
        "x\x00y",
        "",
        "nope",
        "agent-old1",
        f"{sid(0)}/subagents/agent-a1",
        f"{sid(0)}.jsonl",
    ],
)
def test_ids_that_name_no_listed_session_are_not_found(tree: Path, bad: str) -> None:
    readers = readers_for(tree)
    for agent in ("claude", "codex", "gemini"):
        with pytest.raises(HistoryNotFound):
            readers.messages(agent, bad)
        with pytest.raises(HistoryNotFound):
            readers.delete_session(agent, bad)
    assert readers.sessions("claude", limit=0).total == len(PROJECTS) * SESSIONS_PER_PROJECT + 2


def test_symlinked_files_are_not_listed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text("".join(claude_lines(sid(5), "/s", 1, 0.0)))
    folder = tmp_path / ".claude" / "projects" / "-s"
    folder.mkdir(parents=True)
    os.symlink(secret, folder / f"{sid(5)}.jsonl")
    os.symlink(tmp_path, tmp_path / ".claude" / "projects" / "-loop")
    readers = HistoryReaders(claude_dir=tmp_path / ".claude")
    assert readers.sessions("claude").total == 0
    with pytest.raises(HistoryNotFound):
        readers.delete_session("claude", sid(5))
    assert secret.exists()


def test_missing_folders_are_empty_not_errors(tmp_path: Path) -> None:
    readers = readers_for(tmp_path / "nobody")
    for agent in ("claude", "codex", "gemini"):
        assert readers.projects(agent) == []
        assert readers.working_directories(agent) == []
        assert readers.sessions(agent).total == 0
    with pytest.raises(HistoryNotFound):
        readers.projects("cursor")


def test_codex_sessions_and_messages(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.sessions("codex", limit=100)
    assert page.total == 30
    assert page.items[0].id == sid(30_029)
    assert {s.project_path for s in page.items} == {PROJECTS[0], PROJECTS[1]}
    filtered = readers.sessions("codex", project_path=PROJECTS[1] + "/")
    assert filtered.total == 15
    first = readers.session("codex", sid(30_000))
    assert first.title == "codex task 0" and first.version == "0.46.0"
    messages = readers.messages("codex", sid(30_000)).items
    assert len(messages) == 3 * CODEX_MESSAGES_PER_TURN
    assert [(m.role, m.kind) for m in messages[:5]] == [
        ("user", "text"),
        ("assistant", "thinking"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
        ("assistant", "text"),
    ]
    assert messages[2].tool_input == {"command": ["ls", "0"]}
    assert messages[3].tool_use_id == messages[2].tool_use_id == "call_0"
    assert all("environment_context" not in m.text for m in messages)
    projects = readers.projects("codex")
    assert {p.path for p in projects} == {PROJECTS[0], PROJECTS[1]}


def test_gemini_both_formats(tree: Path) -> None:
    readers = readers_for(tree)
    page = readers.sessions("gemini")
    assert [s.id for s in page.items] == [sid(40_001), sid(40_000)]
    assert {s.project_path for s in page.items} == {"/home/u/one"}
    newer, older = page.items
    assert newer.title == f"gemini title {sid(40_001)[:4]}"
    assert older.title == "gemini ask 0"
    assert newer.message_count == 8 and older.message_count == 6
    old_messages = readers.messages("gemini", sid(40_000)).items
    new_messages = readers.messages("gemini", sid(40_001)).items
    assert len(old_messages) == 3 * GEMINI_MESSAGES_PER_TURN
    assert len(new_messages) == 4 * GEMINI_MESSAGES_PER_TURN
    assert [(m.role, m.kind) for m in new_messages[:5]] == [
        ("user", "text"),
        ("assistant", "thinking"),
        ("assistant", "text"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
    ]
    assert new_messages[4].text == "content 0"
    assert all("rewound" not in m.text for m in new_messages)
    assert readers.working_directories("gemini") == ["/home/u/one"]


def test_gemini_delete_takes_its_side_folder(tmp_path: Path) -> None:
    gemini = tmp_path / ".gemini"
    keep = write_gemini_json(gemini, "p", "/p", sid(1), turns=1, start=0.0)
    gone = write_gemini_jsonl(gemini, "p", "/p", sid(2), turns=1, start=10.0)
    (gone.parent / sid(2)).mkdir()
    (gone.parent / sid(2) / "sub.jsonl").write_text("{}\n")
    readers = HistoryReaders(gemini_dir=gemini)
    readers.delete_session("gemini", sid(2))
    assert not gone.exists() and not (gone.parent / sid(2)).exists()
    assert keep.exists() and (gemini / "projects.json").exists()


def test_from_env_honours_the_agents_variables(tmp_path: Path) -> None:
    write_claude_session(tmp_path / "cc", "/e", sid(1), turns=1, start=0.0)
    write_codex_session(tmp_path / "cx", "/e", sid(2), turns=1, start=0.0)
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "cc"), "CODEX_HOME": str(tmp_path / "cx")}
    readers = HistoryReaders.from_env(env, home=tmp_path / "home")
    assert readers.claude_json == tmp_path / "cc" / ".claude.json"
    assert [s.id for s in readers.sessions("claude").items] == [sid(1)]
    assert [s.id for s in readers.sessions("codex").items] == [sid(2)]
    plain = HistoryReaders.from_env({}, home=tmp_path / "home")
    assert plain.claude_json == tmp_path / "home" / ".claude.json"
    assert plain.sessions("claude").total == 0
    gemini = HistoryReaders.from_env({"GEMINI_CLI_HOME": str(tmp_path / "g")}, home=tmp_path)
    assert gemini.gemini_dir == tmp_path / "g" / ".gemini"


def test_the_plain_constructor_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_claude_session(tmp_path / "cc", "/e", sid(1), turns=1, start=0.0)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "cx"))
    readers = HistoryReaders()
    assert readers.claude_json == tmp_path / "cc" / ".claude.json"
    assert readers.codex_dir == tmp_path / "cx"
    assert [s.id for s in readers.sessions("claude").items] == [sid(1)]
    assert HistoryReaders(claude_dir=tmp_path / "cc").claude_json is None


def gemini_resumed_lines(session_id: str, *, new_ids: bool = False) -> list[str]:
    """What Gemini CLI 0.61 writes for a tool turn, then a resume and one more turn: on resume
    it rewrites every turn from the model's history in a `$set` of all `messages`, the tool
    call as a functionCall part and its result as a `<id>_response` user turn."""
    header = {
        "sessionId": session_id,
        "projectHash": "p",
        "startTime": "2025-06-01T00:00:00Z",
        "lastUpdated": "2025-06-01T00:00:00Z",
        "kind": "main",
    }
    call = {
        "id": "c1",
        "name": "read_file",
        "args": {"file_path": "/n.txt"},
        "status": "success",
        "result": [
            {
                "functionResponse": {
                    "id": "c1",
                    "name": "read_file",
                    "response": {"output": "notes body"},
                }
            }
        ],
        "resultDisplay": "",
        "displayName": "ReadFile",
        "description": "Reads a file",
    }
    ask = {
        "id": "u1",
        "timestamp": "2025-06-01T00:00:01Z",
        "type": "user",
        "content": [{"text": "ASK-h read it"}],
    }
    tool_turn = {
        "id": "g1",
        "timestamp": "2025-06-01T00:00:02Z",
        "type": "gemini",
        "content": "",
        "toolCalls": [call],
        "thoughts": [{"subject": "Reading", "description": "the file"}],
        "model": "gemini-x",
    }
    answer = {
        "id": "g2",
        "timestamp": "2025-06-01T00:00:03Z",
        "type": "gemini",
        "content": "TOOL-RESULT-SEEN",
        "thoughts": [],
        "model": "gemini-x",
    }
    again = {
        "id": "u2",
        "timestamp": "2025-06-01T00:01:00Z",
        "type": "user",
        "content": [{"text": "ASK-again"}],
    }
    reply = {
        "id": "g3",
        "timestamp": "2025-06-01T00:01:01Z",
        "type": "gemini",
        "content": "second reply",
        "thoughts": [],
        "model": "gemini-x",
    }
    rewritten = [
        {**ask, "content": [{"text": "ASK-h read it"}]},
        {
            **tool_turn,
            "content": [
                {
                    "functionCall": {
                        "id": "c1",
                        "name": "read_file",
                        "args": {"file_path": "/n.txt"},
                    }
                },
                {"text": "the file", "thought": True},
            ],
        },
        {
            "id": "g1_response",
            "timestamp": "2025-06-01T00:01:00Z",
            "type": "user",
            "content": [
                {
                    "functionResponse": {
                        "id": "c1",
                        "name": "read_file",
                        "response": {"output": "notes body"},
                    }
                }
            ],
        },
        {**answer, "content": [{"text": "TOOL-RESULT-SEEN"}]},
        again,
        {**reply, "content": [{"text": "second reply"}]},
    ]
    records = [
        header,
        ask,
        {**tool_turn, "toolCalls": [{**call, "result": None}]},
        tool_turn,
        answer,
        {"$set": {"lastUpdated": "2025-06-01T00:00:03Z"}},
        {"$set": {"sessionId": session_id}},
        again,
        reply,
        {"$set": {"messages": rewritten, "lastUpdated": "2025-06-01T00:01:01Z"}},
    ]
    return [json.dumps(record) + "\n" for record in records]


@pytest.mark.parametrize("new_ids", [False, True])
def test_gemini_resume_rewrites_do_not_change_what_is_shown(tmp_path: Path, new_ids: bool) -> None:
    gemini = tmp_path / ".gemini"
    chats = gemini / "tmp" / "p" / "chats"
    chats.mkdir(parents=True)
    lines = gemini_resumed_lines(sid(7), new_ids=new_ids)
    path = chats / f"session-2025-06-01T00-00-{sid(7)[:8]}.jsonl"
    path.write_text("".join(lines[:6]))
    readers = HistoryReaders(gemini_dir=gemini)

    def shown() -> list[tuple[str, str, str | None, str]]:
        return [
            (m.role, m.kind, m.tool_name, m.text) for m in readers.all_messages("gemini", sid(7))
        ]

    before = shown()
    assert before == [
        ("user", "text", None, "ASK-h read it"),
        ("assistant", "thinking", None, "Reading\nthe file"),
        ("assistant", "tool_use", "read_file", "Reads a file"),
        ("user", "tool_result", "read_file", "notes body"),
        ("assistant", "text", None, "TOOL-RESULT-SEEN"),
    ]
    path.write_text("".join(lines))
    assert shown() == [
        *before,
        ("user", "text", None, "ASK-again"),
        ("assistant", "text", None, "second reply"),
    ]


def test_a_gemini_json_session_resumed_into_jsonl_is_one_session(tmp_path: Path) -> None:
    gemini = tmp_path / ".gemini"
    old = write_gemini_json(gemini, "p", "/p", sid(3), turns=1, start=0.0)
    resumed = old.with_suffix(".jsonl")
    resumed.write_text("".join(gemini_resumed_lines(sid(3))))
    readers = HistoryReaders(gemini_dir=gemini)
    page = readers.sessions("gemini")
    assert [s.id for s in page.items] == [sid(3)] and page.total == 1
    assert readers.messages("gemini", sid(3)).items[-1].text == "second reply"
    deleted = readers.delete_session("gemini", sid(3))
    assert set(deleted.removed) == {str(resumed), str(old)}
    assert readers.sessions("gemini").total == 0


def test_a_session_removed_behind_our_back_is_not_found(tmp_path: Path) -> None:
    path = write_claude_session(tmp_path / ".claude", "/g", sid(1), turns=2, start=0.0)
    readers = readers_for(tmp_path, parse_budget=0.0)
    assert readers.messages("claude", sid(1), limit=1).items
    path.unlink()
    with pytest.raises(HistoryNotFound):
        readers.messages("claude", sid(1), offset=5)
    with pytest.raises(HistoryNotFound):
        readers.delete_session("claude", sid(1))
    assert readers.projects("claude")[0].session_count == 0
