"""The remote TCP protocol over real sockets on loopback, driving fake agent CLIs.

The client is written like the seed's example: a blocking socket that sends one JSON line and
reads one line back (run in a worker thread, so the server shares the test's loop).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from arp.agents.history import HistoryReaders
from arp.command.remote import RemoteConfig, RemoteServer
from arp.command.remote_protocol import TOOLS_OFF_NOTE, Defaults
from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config, pid_alive, wait_for_file
from tests.conftest import units

# A small fake `claude` that honours what the remote protocol maps onto: it reads the files the
# prompt names (and says what it found), uses a tool only when asked and not given `--tools ""`.
MINI_CLAUDE = r"""
import hashlib, json, os, re, stat, sys, time
argv = sys.argv[1:]
def flag(name):
    if name in argv and argv.index(name) + 1 < len(argv):
        return argv[argv.index(name) + 1]
    return None
def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
def say(text):
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})
prompt = flag("-p") or ""
if flag("--input-format") == "stream-json":  # attachments: the prompt comes over stdin
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("type") == "user":
            blocks = message["message"]["content"]
            prompt = next(b["text"] for b in blocks if b["type"] == "text")
            break
words = dict(w.split("=", 1) for w in prompt.split() if re.fullmatch(r"[a-z]+=\S+", w))
if "pidfile" in words:
    with open(words["pidfile"], "w") as f:
        f.write(str(os.getpid()))
emit({"type": "system", "subtype": "init", "session_id": "mini-1", "argv": argv})
for path in re.findall(r"\[(?:Image|File) attached: (\S+) \(", prompt):
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    mode = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
    say(f"saw {os.path.basename(path)} {digest} {mode:o}")
for i in range(int(words.get("pieces", "2"))):
    time.sleep(float(words.get("sleep", "0")))
    say(f"piece {i}")
tools_off = "--tools" in argv and flag("--tools") == ""
if words.get("tool") and not tools_off:
    emit({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]}})
    emit({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]}})
    say("after the tool")
failed = bool(words.get("error"))
emit({"type": "result", "subtype": "error_during_execution" if failed else "success",
      "is_error": failed, "result": "the fake failed" if failed else "done",
      "session_id": "mini-1", "usage": {"input_tokens": 11, "output_tokens": 22}})
"""


class SeedClient:
    """The seed's client: connect, send a JSON line, read a line (blocking, with a deadline)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.socket = socket.create_connection((host, port), timeout=units(30))
        self.buffer = b""

    def send(self, request: dict[str, Any] | bytes) -> None:
        data = request if isinstance(request, bytes) else (json.dumps(request) + "\n").encode()
        self.socket.sendall(data)

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.socket.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed; unread: {self.buffer[:200]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line.decode("utf-8")))

    def request(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        self.send(request)
        return self.read()

    def at_eof(self) -> bool:
        return self.socket.recv(1) == b""

    def close(self) -> None:
        self.socket.close()


Call = Callable[..., Awaitable[Any]]


async def call(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
async def command(tmp_path: Path) -> AsyncIterator[CommandServer]:
    mini = tmp_path / "bin" / "mini-claude"
    mini.parent.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "bin" / "mini_claude.py"
    script.write_text(MINI_CLAUDE)
    mini.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    mini.chmod(mini.stat().st_mode | stat.S_IXUSR)
    history = HistoryReaders(
        claude_dir=tmp_path / "home" / ".claude",
        claude_json=tmp_path / "home" / ".claude.json",
        codex_dir=tmp_path / "home" / ".codex",
        gemini_dir=tmp_path / "home" / ".gemini",
    )
    config = fake_config(tmp_path, command_path=str(mini))
    async with CommandServer(config, history=history) as server:
        yield server


MakeRemote = Callable[..., Awaitable[RemoteServer]]


@pytest.fixture
async def make_remote(
    command: CommandServer, project: Path, tmp_path: Path
) -> AsyncIterator[MakeRemote]:
    servers: list[RemoteServer] = []

    async def make(**changes: Any) -> RemoteServer:
        values: dict[str, Any] = {
            "defaults": Defaults(project_path=str(project)),
            "request_timeout": units(20),
            "stop_timeout": units(6),
            "upload_dir": tmp_path / "uploads",
        }
        values.update(changes)
        (tmp_path / "uploads").mkdir(exist_ok=True)
        server = RemoteServer(RemoteConfig(**values), command.manager, command.history)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def remote(make_remote: MakeRemote) -> RemoteServer:
    return await make_remote()


@pytest.fixture
async def client(remote: RemoteServer) -> AsyncIterator[SeedClient]:
    sock = SeedClient(remote.port)
    yield sock
    sock.close()


def argv_of(command: CommandServer, session_id: str) -> list[str]:
    for event in command.manager.events_after(session_id):
        if event.kind == "system" and isinstance(event.raw, dict) and "argv" in event.raw:
            return list(event.raw["argv"])
    raise AssertionError("no init event with argv")


def prompt_of(command: CommandServer, session_id: str) -> str:
    return command.manager.get(session_id).prompt


# --------------------------------------------------------------------------------- answers


async def test_binds_loopback_and_answers_text_with_token_usage(
    remote: RemoteServer, client: SeedClient
) -> None:
    assert remote.config.host == "127.0.0.1" and remote.port > 0
    answer = await call(
        client.request,
        {"request_id": "chat_001", "input": {"Text": "你好 pieces=2"}, "stream": False},
    )
    assert answer["request_id"] == "chat_001"
    assert answer["response"] == {"Text": "piece 0\n\npiece 1"}
    assert answer["error"] is None
    assert answer["token_usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 22,
        "total_tokens": 33,
    }
    assert isinstance(answer["session_id"], str)


@pytest.mark.parametrize(
    ("executor", "tool", "arguments", "result", "text", "usage"),
    [
        ("claude", "Bash", {"command": "ls"}, "a.txt", "piece 0\n\npiece 1\n\nafter the tool", 33),
        (
            "codex",
            "command_execution",
            {"command": "bash -lc ls"},
            "a.txt\n",
            "piece 0\n\npiece 1",
            70,
        ),
        ("gemini", "list_directory", {"dir_path": "."}, "a.txt", "piece 0piece 1", 70),
    ],
)
async def test_tool_use_answers_multi_with_calls_results_then_text(
    client: SeedClient,
    executor: str,
    tool: str,
    arguments: dict[str, Any],
    result: str,
    text: str,
    usage: int,
) -> None:
    answer = await call(
        client.request,
        {
            "request_id": f"tools-{executor}",
            "input": {"Text": "list files tool=1"},
            "config": {"executor": executor},
        },
    )
    assert answer["error"] is None, answer
    assert answer["response"] == {
        "Multi": [
            {"ToolCall": {"name": tool, "arguments": arguments}},
            {"ToolResult": {"name": tool, "result": result}},
            {"Text": text},
        ]
    }
    assert answer["token_usage"]["total_tokens"] == usage


async def test_stream_collects_chunks_in_one_line(client: SeedClient) -> None:
    answer = await call(
        client.request,
        {"request_id": "stream_001", "input": {"Text": "pieces=3"}, "stream": True},
    )
    assert answer["response"] == {"Stream": ["piece 0", "\n\npiece 1", "\n\npiece 2"]}
    assert answer["token_usage"]["total_tokens"] == 33
    assert "done" not in answer


async def test_incremental_stream_sends_each_chunk_as_it_arrives(client: SeedClient) -> None:
    gap = units(0.4)
    await call(
        client.send,
        {
            "request_id": "inc",
            "input": {"Text": f"pieces=3 sleep={gap} tool=1"},
            "stream": True,
            "stream_mode": "incremental",
        },
    )
    lines: list[tuple[float, dict[str, Any]]] = []
    while True:
        line = await call(client.read)
        lines.append((time.monotonic(), line))
        if line.get("done"):
            break
    partial = [line for _, line in lines[:-1]]
    assert all(line["request_id"] == "inc" and line["done"] is False for line in partial)
    assert [line["response"] for line in partial] == [
        {"Stream": ["piece 0"]},
        {"Stream": ["\n\npiece 1"]},
        {"Stream": ["\n\npiece 2"]},
        {"ToolCall": {"name": "Bash", "arguments": {"command": "ls"}}},
        {"ToolResult": {"name": "Bash", "result": "a.txt"}},
        {"Stream": ["\n\nafter the tool"]},
    ]
    # The first chunk came while the agent was still working, not with the end.
    assert lines[-1][0] - lines[0][0] >= 1.5 * gap
    final = lines[-1][1]
    assert final["response"] == {
        "Multi": [
            partial[3]["response"],
            partial[4]["response"],
            {"Stream": ["piece 0", "\n\npiece 1", "\n\npiece 2", "\n\nafter the tool"]},
        ]
    }
    assert final["token_usage"]["total_tokens"] == 33 and final["error"] is None


# --------------------------------------------------------------------------------- inputs


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_multi_with_image_and_file_in_order(
    command: CommandServer, client: SeedClient, tmp_path: Path
) -> None:
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    notes = "名前 notes\n".encode()
    answer = await call(
        client.request,
        {
            "request_id": "multi",
            "input": {
                "Multi": [
                    {"Text": "look at these pieces=1"},
                    {"Image": {"data": b64(image), "mime_type": "image/png"}},
                    {
                        "Multi": [
                            {
                                "File": {
                                    "filename": "notes.txt",
                                    "content_type": "text/plain",
                                    "data": b64(notes),
                                }
                            }
                        ]
                    },
                    {"Text": "and answer"},
                ]
            },
        },
    )
    assert answer["error"] is None, answer
    text = answer["response"]["Text"]
    assert text.split("\n\n") == [
        f"saw 0-1-image-1.png {hashlib.sha256(image).hexdigest()} 700",
        f"saw 0-2-notes.txt {hashlib.sha256(notes).hexdigest()} 700",
        "piece 0",
    ]
    # They went as the HTTP API's attachments go: stored with the session, listed, and named
    # at the end of the prompt the agent received (Claude: in a stream-json message).
    session = command.manager.get(answer["session_id"])
    assert session.prompt == "look at these pieces=1\n\nand answer"
    assert [(a["name"], a["kind"], a["size"]) for a in session.attachments] == [
        ("image-1.png", "image", 1008),
        ("notes.txt", "file", len(notes)),
    ]
    argv = argv_of(command, answer["session_id"])
    assert argv[argv.index("--add-dir") + 1] == str(Path(session.attachments[0]["path"]).parent)
    # No private folder was needed.
    assert list((tmp_path / "uploads").iterdir()) == []


async def test_a_20_mib_image(client: SeedClient) -> None:
    image = random.Random(5).randbytes(20 * 1024 * 1024)
    request = {
        "request_id": "big",
        "input": {"Multi": [{"Text": "pieces=0"}, {"Image": {"data": b64(image)}}]},
    }
    answer = await call(client.request, request)
    assert answer["error"] is None, answer["error"]
    assert answer["response"] == {
        "Text": f"saw image-1.png {hashlib.sha256(image).hexdigest()} 700"
    }


async def test_files_go_to_the_project_when_asked(client: SeedClient, project: Path) -> None:
    answer = await call(
        client.request,
        {
            "request_id": "proj",
            "input": {
                "File": {"filename": "data.csv", "content_type": "text/csv", "data": b64(b"a,b\n")}
            },
            "config": {"save_files_to": "project"},
        },
    )
    assert answer["error"] is None, answer
    assert (project / "data.csv").read_bytes() == b"a,b\n"
    again = await call(
        client.request,
        {
            **answer,
            "request_id": "proj2",
            "input": {
                "File": {"filename": "data.csv", "content_type": "text/csv", "data": b64(b"x")}
            },
            "config": {"save_files_to": "project"},
        },
    )
    assert again["error"].startswith("processing_error: ") and "exists already" in again["error"]
    assert (project / "data.csv").read_bytes() == b"a,b\n"


async def test_project_files_go_where_the_agent_runs(
    command: CommandServer, tmp_path: Path
) -> None:
    # The project folder follows the session manager's rules: relative to --allowed-root, and
    # containment is checked before existence (nothing is learnt about folders outside it).
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    mini = tmp_path / "bin" / "mini-claude"  # written by the `command` fixture
    config = fake_config(tmp_path / "rooted", command_path=str(mini), allowed_root=root)
    async with CommandServer(config, history=command.history) as rooted:
        remote = RemoteServer(RemoteConfig(request_timeout=units(20)), rooted.manager)
        async with remote:
            sock = SeedClient(remote.port)

            async def send(request_id: str, project_path: str) -> dict[str, Any]:
                request = {
                    "request_id": request_id,
                    "input": {"File": {"filename": "f.txt", "data": b64(b"hi")}},
                    "config": {"save_files_to": "project", "project_path": project_path},
                }
                return dict(await call(sock.request, request))

            ok = await send("rel", "sub")
            assert ok["error"] is None, ok
            session = rooted.manager.get(ok["session_id"])
            assert session.project_path == str((root / "sub").resolve())
            assert (root / "sub" / "f.txt").read_bytes() == b"hi"
            for request_id, path, needle in [
                ("out", str(tmp_path / "no" / "such"), "is outside the allowed root"),
                ("up", "../rooted", "is outside the allowed root"),
                ("gone", "missing", "does not exist"),
                ("nul", "sub\x00x", "NUL"),
            ]:
                answer = await send(request_id, path)
                assert answer["request_id"] == request_id
                assert answer["error"].startswith("processing_error: "), answer
                assert needle in answer["error"], answer
            assert rooted.manager.count() == 1
            sock.close()


async def test_instructions_list_output_cancel_projects(
    command: CommandServer, remote: RemoteServer, client: SeedClient, tmp_path: Path
) -> None:
    # A Claude project in the history fixture, so list_projects has something to show.
    folder = tmp_path / "home" / ".claude" / "projects" / "-work-demo"
    folder.mkdir(parents=True)
    record = {
        "type": "user",
        "cwd": "/work/demo",
        "sessionId": "s1",
        "timestamp": "2026-01-01T00:00:00Z",
        "message": {"role": "user", "content": "hello"},
    }
    (folder / "s1.jsonl").write_text(json.dumps(record) + "\n")

    done = await call(client.request, {"request_id": "r1", "input": {"Text": "pieces=1"}})
    sid = done["session_id"]

    listed = await call(
        client.request,
        {
            "request_id": "i1",
            "input": {"Instruction": {"command": "list_sessions", "parameters": {"limit": 10}}},
        },
    )
    assert listed["error"] is None
    result = listed["response"]["ToolResult"]
    assert listed["response"]["ToolResult"]["name"] == "list_sessions"
    assert [s["session_id"] for s in result["result"]["sessions"]] == [sid]
    # The answer comes with the result event; the child exits just after it.
    await command.manager.wait(sid, units(10))
    assert command.manager.running_count() == 0

    output = await call(
        client.request,
        {
            "request_id": "i2",
            "input": {
                "Instruction": {"command": "session_output", "parameters": {"session_id": sid}}
            },
        },
    )
    assert output["response"]["ToolResult"]["result"]["text"] == "piece 0"
    assert output["response"]["ToolResult"]["result"]["session"]["status"] == "completed"

    projects = await call(
        client.request,
        {
            "request_id": "i3",
            "input": {
                "Instruction": {"command": "list_projects", "parameters": {"agent": "claude"}}
            },
        },
    )
    assert projects["error"] is None, projects
    assert [p["path"] for p in projects["response"]["ToolResult"]["result"]["projects"]] == [
        "/work/demo"
    ]

    # Cancel a run another connection started: that request answers, and its agent is gone.
    pidfile = tmp_path / "long.pid"
    other = SeedClient(remote.port)
    await call(other.send, {"request_id": "long", "input": {"Text": f"sleep=20 pidfile={pidfile}"}})
    pid = int(await wait_for_file(pidfile, units(10)))
    running = command.manager.list(limit=1)[0]
    cancelled = await call(
        client.request,
        {
            "request_id": "i4",
            "input": {
                "Instruction": {
                    "command": "cancel_session",
                    "parameters": {"session_id": running.session_id},
                }
            },
        },
    )
    assert cancelled["response"]["ToolResult"]["result"]["session"]["status"] == "cancelled"
    assert not pid_alive(pid)
    long = await call(other.read)
    assert long["request_id"] == "long" and long["error"] == (
        "processing_error: the agent run was cancelled"
    )
    other.close()

    both = await call(
        client.request,
        {
            "request_id": "i5",
            "input": {
                "Multi": [
                    {"Instruction": {"command": "help", "parameters": {}}},
                    {"Instruction": {"command": "list_sessions", "parameters": {}}},
                ]
            },
        },
    )
    assert [next(iter(item)) for item in both["response"]["Multi"]] == ["ToolResult", "ToolResult"]
    assert "cancel_session" in both["response"]["Multi"][0]["ToolResult"]["result"]["commands"]

    unknown = await call(
        client.request,
        {
            "request_id": "i6",
            "input": {"Instruction": {"command": "format_disk", "parameters": {}}},
        },
    )
    assert unknown["error"].startswith("processing_error: unknown command 'format_disk'")
    missing = await call(
        client.request,
        {
            "request_id": "i7",
            "input": {
                "Instruction": {"command": "session_output", "parameters": {"session_id": "nope"}}
            },
        },
    )
    assert missing["error"].startswith("processing_error: no session 'nope'")


async def test_session_output_pages_like_the_http_api(
    command: CommandServer, client: SeedClient
) -> None:
    done = await call(client.request, {"request_id": "r", "input": {"Text": "pieces=3"}})
    sid = done["session_id"]
    last = command.manager.get(sid).last_seq
    assert last > 2

    async def page(request_id: str, **params: Any) -> dict[str, Any]:
        answer = await call(
            client.request,
            {
                "request_id": request_id,
                "input": {
                    "Instruction": {
                        "command": "session_output",
                        "parameters": {"session_id": sid, **params},
                    }
                },
            },
        )
        assert answer["error"] is None, answer
        return dict(answer["response"]["ToolResult"]["result"])

    first = await page("o1", limit=2)
    assert [e["seq"] for e in first["events"]] == [1, 2]
    assert first["next_after_seq"] == 2 and first["has_more"] is True
    # An empty page (limit 0) says there is more, as GET /api/sessions/{id} does.
    empty = await page("o2", after_seq=1, limit=0)
    assert empty["events"] == [] and empty["next_after_seq"] == 1 and empty["has_more"] is True
    rest = await page("o3", after_seq=2)
    assert rest["next_after_seq"] == last and rest["has_more"] is False
    beyond = await page("o4", after_seq=last + 5)
    assert beyond["events"] == [] and beyond["has_more"] is False


# --------------------------------------------------------------------------------- config


async def test_config_maps_onto_claude_options(command: CommandServer, client: SeedClient) -> None:
    answer = await call(
        client.request,
        {
            "request_id": "cfg",
            "input": {"Text": "pieces=1"},
            "config": {
                "max_tool_try": 3,
                "max_context_num": 10,
                "max_tokens": 1000,
                "ask_before_tool_execution": False,
                "prompt": "你是一个代码分析专家",
                "model": "m-2",
            },
            "use_tools": True,
        },
    )
    assert answer["error"] is None, answer
    argv = argv_of(command, answer["session_id"])
    assert argv[argv.index("--max-turns") + 1] == "4"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--append-system-prompt") + 1] == "你是一个代码分析专家"
    assert argv[argv.index("--model") + 1] == "m-2"
    assert "--tools" not in argv
    asking = await call(
        client.request,
        {
            "request_id": "ask",
            "input": {"Text": "pieces=1"},
            "config": {"ask_before_tool_execution": True},
        },
    )
    argv = argv_of(command, asking["session_id"])
    assert argv[argv.index("--permission-mode") + 1] == "default"


async def test_config_maps_onto_codex_and_gemini(
    command: CommandServer, client: SeedClient, project: Path
) -> None:
    codex = await call(
        client.request,
        {
            "request_id": "codex",
            "input": {"Text": "pieces=1"},
            "config": {
                "executor": "codex",
                "prompt": "be brief",
                "max_tool_try": 2,
                "ask_before_tool_execution": False,
                "model": "gpt-x",
            },
        },
    )
    assert codex["error"] is None, codex
    argv = argv_of(command, codex["session_id"])
    assert argv[-1] == "be brief\n\npieces=1"
    assert argv[argv.index("-s") + 1] == "workspace-write"
    assert argv[argv.index("-m") + 1] == "gpt-x"
    assert argv[argv.index("-C") + 1] == str(project.resolve())
    gemini = await call(
        client.request,
        {
            "request_id": "gemini",
            "input": {"Text": "pieces=1"},
            "config": {"executor": "gemini", "ask_before_tool_execution": False},
        },
    )
    argv = argv_of(command, gemini["session_id"])
    assert argv[argv.index("--approval-mode") + 1] == "auto_edit"


async def test_use_tools_false_disables_or_denies_tools(
    command: CommandServer, client: SeedClient
) -> None:
    claude = await call(
        client.request,
        {"request_id": "nt", "input": {"Text": "tool=1 pieces=1"}, "use_tools": False},
    )
    argv = argv_of(command, claude["session_id"])
    assert argv[argv.index("--tools") + 1] == ""
    assert claude["response"] == {"Text": "piece 0"}  # the agent had no tools to call
    codex = await call(
        client.request,
        {
            "request_id": "nt2",
            "input": {"Text": "pieces=1"},
            "use_tools": False,
            "config": {"executor": "codex"},
        },
    )
    argv = argv_of(command, codex["session_id"])
    assert argv[argv.index("-s") + 1] == "read-only"
    assert argv[-1].startswith(TOOLS_OFF_NOTE)


async def test_server_defaults_pick_executor_and_model(
    command: CommandServer, make_remote: MakeRemote, project: Path
) -> None:
    remote = await make_remote(
        defaults=Defaults(executor="gemini", model="g-1", project_path=str(project))
    )
    sock = SeedClient(remote.port)
    answer = await call(sock.request, {"request_id": "d", "input": {"Text": "pieces=1"}})
    sock.close()
    session = command.manager.get(answer["session_id"])
    assert session.executor == "gemini" and session.model == "g-1"
    assert session.project_path == str(project.resolve())


# --------------------------------------------------------------------------------- errors


async def test_bad_lines_are_answered_and_the_connection_goes_on(client: SeedClient) -> None:
    garbage = await call(client.request, b"this is not json\n")
    assert garbage["request_id"] is None
    assert garbage["response"] == {"Text": ""} and garbage["token_usage"] is None
    assert garbage["error"].startswith("parse_error: Failed to parse request: ")
    for line, request_id, needle in [
        (b"[1, 2]\n", None, "JSON object"),
        (b'{"input": {"Text": "x"}}\n', None, "request_id"),
        (b'{"request_id": "u", "input": {"Nope": 1}}\n', "u", "unknown input type 'Nope'"),
        (b'{"request_id": "b", "input": {"Image": {"data": "@@@"}}}\n', "b", "not valid base64"),
        (b'{"request_id": "s", "input": {"Text": "x"}, "stream": "yes"}\n', "s", "'stream'"),
        (b'\xff\xfe{"request_id": "bin"}\n', None, "UTF-8"),
    ]:
        answer = await call(client.request, line)
        assert answer["request_id"] == request_id, line
        assert answer["error"].startswith("parse_error: ") and needle in answer["error"], answer
    ok = await call(client.request, {"request_id": "after", "input": {"Text": "pieces=1"}})
    assert ok["request_id"] == "after" and ok["response"] == {"Text": "piece 0"}


async def test_deeply_nested_json_is_answered_and_the_connection_goes_on(
    make_remote: MakeRemote,
) -> None:
    # Once parsed on the loop, once in a worker thread (lines past parse_in_thread).
    remote = await make_remote(parse_in_thread=150_000)
    sock = SeedClient(remote.port)
    for size in (100_000, 200_000):
        answer = await call(sock.request, b"[" * size + b"\n")
        assert answer["request_id"] is None
        assert answer["error"] == "parse_error: Failed to parse request: JSON nested too deeply"
    ok = await call(
        sock.request,
        {"request_id": "after", "input": {"Instruction": {"command": "help", "parameters": {}}}},
    )
    assert ok["request_id"] == "after" and ok["error"] is None
    sock.close()


async def test_a_token_server_runs_only_requests_that_carry_it(
    command: CommandServer, make_remote: MakeRemote
) -> None:
    remote = await make_remote(token="s3cret")
    sock = SeedClient(remote.port)
    help_input = {"Instruction": {"command": "help", "parameters": {}}}
    for request_id, extra in [("none", {}), ("wrong", {"token": "s3cre"}), ("num", {"token": 1})]:
        for body in ({"Text": "pieces=1"}, help_input):
            answer = await call(sock.request, {"request_id": request_id, "input": body, **extra})
            assert answer["request_id"] == request_id
            assert answer["response"] == {"Text": ""} and answer["token_usage"] is None
            assert answer["error"].startswith("auth_error: "), answer
            assert "session_id" not in answer
    assert command.manager.count() == 0  # nothing ran
    ok = await call(
        sock.request, {"request_id": "ok", "input": {"Text": "pieces=1"}, "token": "s3cret"}
    )
    assert ok["error"] is None and ok["response"] == {"Text": "piece 0"}
    assert command.manager.count() == 1
    helped = await call(sock.request, {"request_id": "h", "input": help_input, "token": "s3cret"})
    assert helped["error"] is None and "s3cret" not in json.dumps(helped)
    sock.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + units(10)
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_one_memory_budget_for_all_connections(
    command: CommandServer, make_remote: MakeRemote, tmp_path: Path
) -> None:
    limit = 200_000
    remote = await make_remote(max_memory=limit)
    # A holds an attachment and its text while its agent runs.
    first = SeedClient(remote.port)
    pidfile = tmp_path / "held.pid"
    text = f"pieces=1 sleep=30 pidfile={pidfile}"
    data = os.urandom(60_000)
    await call(
        first.send,
        {
            "request_id": "held",
            "input": {
                "Multi": [
                    {"Text": text},
                    {
                        "File": {
                            "filename": "a.bin",
                            "content_type": "application/octet-stream",
                            "data": base64.b64encode(data).decode(),
                        }
                    },
                ]
            },
        },
    )
    await wait_for_file(pidfile, units(10))
    held = len(data) + len(text)
    assert remote.memory_in_use == held
    free = limit - held

    second = SeedClient(remote.port)
    # A partial line holds its bytes; past what is free it is dropped, then answered.
    await call(second.send, b"y" * 10_000)
    await until(lambda: remote.memory_in_use == held + 10_000, "the partial line is counted")
    await call(second.send, b"y" * free)
    await until(lambda: remote.memory_in_use == held, "the partial line is let go")
    await call(second.send, b"\n")
    dropped = await call(second.read)
    assert dropped["request_id"] is None
    assert dropped["error"] == (
        f"connection_error: a request line of {10_000 + free} bytes was dropped unread: "
        f"it needs {2 * (10_000 + free)} bytes of --remote-max-memory ({limit} bytes) alone"
    )
    # A complete line takes twice its size: this one would fit alone, not beside A.
    line = (
        json.dumps({"request_id": "big", "input": {"Text": "pieces=1 " + "z" * (free // 2)}}) + "\n"
    ).encode()
    assert free < 2 * (len(line) - 1) <= limit
    refused = await call(second.request, line)
    assert refused["request_id"] is None
    assert refused["error"] == (
        f"connection_error: a request line of {len(line) - 1} bytes was dropped unread: "
        f"--remote-max-memory ({limit} bytes, shared by all connections) is in use by other "
        "requests; try again later"
    )
    huge = await call(second.request, b"w" * (limit // 2 + 1) + b"\n")
    assert huge["error"] == (
        f"connection_error: a request line of {limit // 2 + 1} bytes was dropped unread: "
        f"it needs {limit + 2} bytes of --remote-max-memory ({limit} bytes) alone"
    )
    assert remote.memory_in_use == held

    # A's run ends: its bytes go back, and the same line now runs.
    session = command.manager.list(limit=1)[0]
    await command.manager.cancel(session.session_id)
    assert (await call(first.read))["request_id"] == "held"
    await until(lambda: remote.memory_in_use == 0, "A's bytes go back")
    ok = await call(second.request, line)
    assert ok["request_id"] == "big" and ok["error"] is None, ok["error"]
    await until(lambda: remote.memory_in_use == 0, "an answered request's bytes go back")
    # A client that leaves mid-line gives its bytes back too.
    await call(second.send, b"q" * 5_000)
    await until(lambda: remote.memory_in_use == 5_000, "the partial line is counted")
    second.close()
    await until(lambda: remote.memory_in_use == 0, "a departed client's bytes go back")
    first.close()


async def test_half_lines_and_an_over_long_line(make_remote: MakeRemote) -> None:
    remote = await make_remote(max_line=4096)
    sock = SeedClient(remote.port)
    line = json.dumps({"request_id": "half", "input": {"Text": "pieces=1"}}).encode() + b"\n"
    await call(sock.send, line[:10])
    await asyncio.sleep(units(0.3))
    await call(sock.send, line[10:])
    assert (await call(sock.read))["request_id"] == "half"
    for _ in range(3):
        await call(sock.send, b"x" * 3000)  # 9000 bytes with no newline yet
    await call(sock.send, b"still the same line\n" + line.replace(b"half", b"next"))
    too_long = await call(sock.read)
    assert too_long["request_id"] is None
    assert too_long["error"].startswith("parse_error: request line longer than 4096 bytes")
    assert (await call(sock.read))["request_id"] == "next"
    sock.close()


async def test_processing_errors(client: SeedClient) -> None:
    unknown = await call(
        client.request, {"request_id": "p1", "input": {"Text": "x"}, "config": {"executor": "nope"}}
    )
    assert unknown["error"].startswith("processing_error: unknown executor 'nope'")
    failed = await call(client.request, {"request_id": "p2", "input": {"Text": "error=1 pieces=1"}})
    assert failed["error"] == "processing_error: the fake failed"
    assert failed["response"] == {"Text": "piece 0"}
    assert failed["token_usage"]["total_tokens"] == 33
    missing = await call(
        client.request,
        {"request_id": "p3", "input": {"Text": "x"}, "config": {"project_path": "/no/such/folder"}},
    )
    assert missing["error"].startswith("processing_error: project path /no/such/folder")


async def test_timeout_stops_the_agent(
    command: CommandServer, client: SeedClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "slow.pid"
    answer = await call(
        client.request,
        {
            "request_id": "slow",
            "input": {"Text": f"pieces=2 sleep={units(1)} pidfile={pidfile}"},
            "config": {"timeout": units(1.5)},
        },
    )
    assert answer["error"].startswith("timeout_error: the request took longer than")
    assert answer["response"] == {"Text": "piece 0"}  # what came before the deadline
    pid = int(pidfile.read_text())
    assert not pid_alive(pid)
    assert command.manager.get(answer["session_id"]).status == "cancelled"


async def test_connection_limit_answers_connection_error(make_remote: MakeRemote) -> None:
    remote = await make_remote(max_connections=1)
    first = SeedClient(remote.port)
    assert (
        await call(
            first.request,
            {"request_id": "a", "input": {"Instruction": {"command": "help", "parameters": {}}}},
        )
    )["error"] is None
    second = SeedClient(remote.port)
    refused = await call(second.read)
    assert refused["error"].startswith("connection_error: ") and refused["request_id"] is None
    assert await call(second.at_eof)
    second.close()
    first.close()


async def test_server_close_answers_connection_error(
    make_remote: MakeRemote, tmp_path: Path
) -> None:
    remote = await make_remote()
    sock = SeedClient(remote.port)
    pidfile = tmp_path / "c.pid"
    await call(sock.send, {"request_id": "cut", "input": {"Text": f"sleep=20 pidfile={pidfile}"}})
    pid = int(await wait_for_file(pidfile, units(10)))
    await remote.close()
    answer = await call(sock.read)
    assert answer["request_id"] == "cut" and answer["error"].startswith("connection_error: ")
    assert not pid_alive(pid)
    sock.close()


# --------------------------------------------------------------------------------- connection


async def test_pipelined_requests_run_concurrently_up_to_the_limit(
    command: CommandServer, make_remote: MakeRemote
) -> None:
    remote = await make_remote(max_concurrent=2)
    sock = SeedClient(remote.port)
    sleep = units(0.5)
    lines = b"".join(
        json.dumps(
            {"request_id": f"p{i}", "input": {"Text": f"pieces=1 sleep={sleep * n}"}}
        ).encode()
        + b"\n"
        for i, n in enumerate((5, 1, 1))
    )
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, command.manager.running_count())
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    await call(sock.send, lines)
    answers = []
    for _ in range(3):
        answers.append((await call(sock.read), time.monotonic() - started))
    watcher.cancel()
    # p1 (short) ends first; p2 waited for its slot, so it ends a sleep later; p0 is long.
    assert [a["request_id"] for a, _ in answers] == ["p1", "p2", "p0"]
    assert all(a["error"] is None and a["response"] == {"Text": "piece 0"} for a, _ in answers)
    assert most == 2
    assert answers[1][1] >= 2 * sleep
    sock.close()


async def test_disconnect_mid_request_stops_the_agent(
    command: CommandServer, remote: RemoteServer, tmp_path: Path
) -> None:
    sock = SeedClient(remote.port)
    pidfile = tmp_path / "gone.pid"
    await call(sock.send, {"request_id": "bye", "input": {"Text": f"sleep=30 pidfile={pidfile}"}})
    pid = int(await wait_for_file(pidfile, units(10)))
    sock.close()
    deadline = time.monotonic() + units(8)
    while pid_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not pid_alive(pid)
    session = command.manager.list(limit=1)[0]
    assert command.manager.get(session.session_id).status == "cancelled"
