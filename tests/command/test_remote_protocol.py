"""The remote protocol's pure core: framing, request parsing, executor mapping, answers."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arp import argtypes
from arp.agents.events import Event, Usage
from arp.agents.lines import Abandoned, LineFramer, Oversize
from arp.command.api_history import READERS_KEY
from arp.command.config import CommandConfig
from arp.command.remote import RemoteServer, add_remote_arguments, config_from_args, remote_service
from arp.command.remote_protocol import (
    TOOLS_OFF_NOTE,
    Answer,
    Attachment,
    Defaults,
    Instruction,
    MemoryBudget,
    RequestError,
    TextInput,
    error_line,
    parse_request,
    plan_run,
    request_size,
    response_line,
    token_matches,
    token_usage,
)
from arp.command.server import CommandServer
from arp.errors import ArpError


def parse(obj: Any, *, limit: int = 1 << 20) -> Any:
    return parse_request(json.dumps(obj).encode(), max_attachment_bytes=limit)


# --------------------------------------------------------------------------------- framing


def test_framer_splits_lines_across_chunks_and_strips_cr() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a"') == []
    assert framer.feed(b':1}\r\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert framer.buffered == 4
    assert framer.feed(b":3}\n") == [b'{"c":3}']


def test_framer_drops_an_over_long_line_once_and_resyncs() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 8) == []
    assert framer.feed(b"y" * 8) == []  # past the limit: dropped, buffer freed
    assert framer.buffered == 0
    assert framer.feed(b"z" * 100) == []
    assert framer.feed(b"end\nok\n") == [Oversize(8 + 8 + 100 + 3), b"ok"]
    assert framer.feed(b"0123456789\n") == [b"0123456789"]  # exactly the limit is fine


@given(st.lists(st.binary(max_size=30), max_size=20), st.integers(min_value=1, max_value=50))
def test_framer_is_independent_of_chunking(chunks: list[bytes], cut: int) -> None:
    data = b"".join(chunks)
    whole = LineFramer(20).feed(data)
    framer = LineFramer(20)
    pieces: list[bytes | Oversize] = []
    for start in range(0, len(data), cut):
        pieces.extend(framer.feed(data[start : start + cut]))
    assert pieces == whole
    assert all(isinstance(p, Oversize) or len(p) <= 20 for p in whole)


def test_framer_abandons_a_partial_line_on_request() -> None:
    framer = LineFramer(100)
    framer.abandon()  # nothing held: nothing to abandon
    assert framer.feed(b"ok\nhalf") == [b"ok"]
    framer.abandon()
    assert framer.buffered == 0
    assert framer.feed(b" more") == []
    assert framer.buffered == 0
    assert framer.feed(b" end\nnext\n") == [Abandoned(4 + 5 + 4), b"next"]
    # Oversize stays Oversize after an abandoned line.
    assert framer.feed(b"x" * 101 + b"\n") == [Oversize(101)]


def test_memory_budget_and_request_size() -> None:
    budget = MemoryBudget(100)
    assert budget.take(60) and not budget.take(41) and budget.take(40)
    assert budget.used == 100 and not budget.take(1)
    budget.give(70)
    assert budget.used == 30 and budget.take(70)
    budget.give(1000)
    assert budget.used == 0
    request = parse(
        {
            "request_id": "a",
            "input": {
                "Multi": [
                    {"Text": "hello"},
                    {"Image": {"data": base64.b64encode(b"x" * 30).decode()}},
                    {"File": {"filename": "f", "data": base64.b64encode(b"y" * 7).decode()}},
                ]
            },
        }
    )
    assert request_size(request) == 5 + 30 + 7


# --------------------------------------------------------------------------------- requests


def test_every_input_type_flattens_in_order() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    request = parse(
        {
            "request_id": "r",
            "input": {
                "Multi": [
                    {"Text": "a"},
                    {"Image": {"data": png}},
                    {
                        "Multi": [
                            {
                                "File": {
                                    "filename": "n.txt",
                                    "content_type": "text/plain",
                                    "data": png,
                                }
                            }
                        ]
                    },
                    {"Text": "b"},
                ]
            },
            "stream": True,
            "use_tools": False,
        }
    )
    assert request.inputs == (
        TextInput("a"),
        Attachment("image", "", "image/png", b"\x89PNG"),
        Attachment("file", "n.txt", "text/plain", b"\x89PNG"),
        TextInput("b"),
    )
    assert request.stream and not request.use_tools and request.stream_mode == "collect"
    instruction = parse({"request_id": "i", "input": {"Instruction": {"command": "help"}}})
    assert instruction.instructions == [Instruction("help", {})]


@pytest.mark.parametrize(
    ("obj", "request_id", "needle"),
    [
        ([1], None, "JSON object"),
        ({"request_id": 5, "input": {"Text": "x"}}, None, "request_id"),
        ({"request_id": "x" * 300, "input": {"Text": "x"}}, None, "request_id"),
        ({"request_id": "a"}, "a", "'input' is required"),
        ({"request_id": "a", "input": {"Text": 1}}, "a", "'Text' must be a string"),
        ({"request_id": "a", "input": {"Text": "x", "Image": {}}}, "a", "one key"),
        (
            {"request_id": "a", "input": {"File": {"filename": "../etc/passwd", "data": ""}}},
            "a",
            "plain file name",
        ),
        (
            {
                "request_id": "a",
                "input": {"Multi": [{"Text": "x"}, {"Instruction": {"command": "help"}}]},
            },
            "a",
            "cannot be combined",
        ),
        ({"request_id": "a", "input": {"Multi": [{"Text": "x"}] * 65}}, "a", "at most 64"),
        (
            {"request_id": "a", "input": {"Text": "x"}, "config": {"max_tokens": -1}},
            "a",
            "max_tokens",
        ),
        ({"request_id": "a", "input": {"Text": "x"}, "config": {"timeout": 0}}, "a", "timeout"),
        ({"request_id": "a", "input": {"Text": "x"}, "stream_mode": "fast"}, "a", "stream_mode"),
        ({"request_id": "a", "input": {"Text": "x"}, "use_tools": "no"}, "a", "use_tools"),
    ],
)
def test_bad_requests_are_parse_errors(obj: Any, request_id: str | None, needle: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse(obj)
    assert caught.value.kind == "parse_error"
    assert caught.value.request_id == request_id
    assert needle in caught.value.message


def test_nesting_and_attachment_size_are_bounded() -> None:
    deep: Any = {"Text": "x"}
    for _ in range(9):
        deep = {"Multi": [deep]}
    with pytest.raises(RequestError, match="nest at most"):
        parse({"request_id": "a", "input": deep})
    data = base64.b64encode(b"x" * 2000).decode()
    with pytest.raises(RequestError, match="attachments exceed 1000 bytes"):
        parse({"request_id": "a", "input": {"Image": {"data": data}}}, limit=1000)


def test_bad_json_and_bad_utf8() -> None:
    with pytest.raises(RequestError, match="Failed to parse request"):
        parse_request(b"{nope", max_attachment_bytes=10)
    with pytest.raises(RequestError, match="UTF-8"):
        parse_request(b'{"request_id": "\xff"}', max_attachment_bytes=10)


def test_a_server_token_is_checked_before_the_input() -> None:
    good = {"request_id": "t", "input": {"Text": "x"}, "token": "s3cret"}
    request = parse_request(json.dumps(good).encode(), max_attachment_bytes=10, token="s3cret")
    assert request.request_id == "t" and request.inputs == (TextInput("x"),)
    # Without a server token the field is ignored.
    assert parse(good).request_id == "t"
    # Bad base64 and a bad field would be parse_errors: the token is looked at first.
    bad_input = {"Image": {"data": "@@@"}}
    for token in (None, "", "s3cre", "s3cret ", 7, ["s3cret"]):
        obj: dict[str, Any] = {"request_id": "t", "input": bad_input, "stream": "x"}
        if token is not None:
            obj["token"] = token
        with pytest.raises(RequestError) as caught:
            parse_request(json.dumps(obj).encode(), max_attachment_bytes=10, token="s3cret")
        assert caught.value.kind == "auth_error" and caught.value.request_id == "t", token
        assert "token" in caught.value.message and "not run" in caught.value.message
    line = error_line("auth_error", "no", "t")
    assert json.loads(line)["error"] == "auth_error: no"
    assert token_matches("ключ", "ключ") and not token_matches("ключ", "ключи")
    assert not token_matches(None, "x")


def test_deeply_nested_json_is_a_parse_error() -> None:
    # The decoder gives up on deep nesting with a RecursionError, not a ValueError.
    for line in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(RequestError, match="nested too deeply") as caught:
            parse_request(line, max_attachment_bytes=10)
        assert caught.value.kind == "parse_error" and caught.value.request_id is None


# --------------------------------------------------------------------------------- mapping


def test_plan_run_maps_config_onto_claude() -> None:
    request = parse(
        {
            "request_id": "a",
            "input": {"Text": "x"},
            "config": {
                "max_tool_try": 2,
                "max_tokens": 9,
                "max_context_num": 3,
                "ask_before_tool_execution": True,
                "prompt": "sys",
            },
            "use_tools": False,
        }
    )
    start = plan_run(request, "hello", Defaults(model="m", project_path="/p"))
    assert (start.executor, start.prompt, start.model, start.project_path) == (
        "claude",
        "hello",
        "m",
        "/p",
    )
    assert start.max_turns == 3 and start.permission_mode == "ask"
    assert start.append_system_prompt == "sys" and start.no_tools


def test_plan_run_for_executors_without_the_options() -> None:
    request = parse(
        {
            "request_id": "a",
            "input": {"Text": "x"},
            "config": {
                "executor": "Gemini",
                "max_tool_try": 2,
                "prompt": "sys",
                "ask_before_tool_execution": False,
                "model": "g",
            },
        }
    )
    start = plan_run(request, "hello", Defaults(permission_mode="plan"))
    assert start.executor == "gemini" and start.model == "g"
    assert start.prompt == "sys\n\nhello" and start.append_system_prompt is None
    assert start.max_turns is None and start.permission_mode == "acceptEdits"
    no_tools = parse(
        {
            "request_id": "b",
            "input": {"Text": "x"},
            "use_tools": False,
            "config": {"executor": "codex", "permission_mode": "bypassPermissions"},
        }
    )
    start = plan_run(no_tools, "hello", Defaults())
    assert start.permission_mode == "plan" and not start.no_tools
    assert start.prompt == f"{TOOLS_OFF_NOTE}\n\nhello"
    # The server default applies when the request says nothing.
    plain = parse({"request_id": "c", "input": {"Text": "x"}})
    assert (
        plan_run(plain, "p", Defaults(executor="codex", permission_mode="plan")).permission_mode
        == "plan"
    )
    with pytest.raises(RequestError) as caught:
        plan_run(
            parse({"request_id": "d", "input": {"Text": "x"}, "config": {"executor": "x"}}),
            "p",
            Defaults(),
        )
    assert caught.value.kind == "processing_error" and caught.value.request_id == "d"


# --------------------------------------------------------------------------------- answers


def event(kind: Any, **fields: Any) -> Event:
    return Event(seq=1, ts=0.0, run=0, kind=kind, **fields)


def test_answer_joins_messages_and_gemini_deltas() -> None:
    claude = Answer("claude", stream=False)
    for text in ("a", "b"):
        claude.feed(event("text", text=text))
    claude.feed(event("result", text="b", usage=Usage(1, 2)))
    assert claude.content() == {"Text": "a\n\nb"}
    gemini = Answer("gemini", stream=True)
    gemini.feed(event("text", text="Hel"))
    gemini.feed(event("text", text="lo"))
    call = gemini.feed(event("tool_call", tool_name="ls", tool_input=None))
    assert call == [{"ToolCall": {"name": "ls", "arguments": {}}}]
    gemini.feed(event("tool_result", tool_name="ls", text="a.txt"))
    gemini.feed(event("text", text="Done"))
    assert gemini.content() == {
        "Multi": [
            {"ToolCall": {"name": "ls", "arguments": {}}},
            {"ToolResult": {"name": "ls", "result": "a.txt"}},
            {"Stream": ["Hel", "lo", "\n\nDone"]},
        ]
    }


def test_answer_falls_back_to_the_result_text() -> None:
    answer = Answer("codex", stream=False)
    answer.feed(event("result", text="only this"))
    assert answer.content() == {"Text": "only this"}
    failed = Answer("codex", stream=False)
    failed.feed(event("result", text="boom", is_error=True))
    assert failed.content() == {"Text": ""}


def test_response_lines_and_token_usage() -> None:
    assert token_usage(None) is None and token_usage(Usage()) is None
    assert token_usage(Usage(input_tokens=5)) == {
        "prompt_tokens": 5,
        "completion_tokens": 0,
        "total_tokens": 5,
    }
    line = response_line("r", {"Text": "你好"}, usage=Usage(1, 2))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "request_id": "r",
        "response": {"Text": "你好"},
        "error": None,
        "token_usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    assert json.loads(error_line("timeout_error", "late", "r"))["error"] == "timeout_error: late"


# --------------------------------------------------------------------------------- wiring


def test_flags_build_the_service(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    assert config_from_args(parser.parse_args([])) is None
    server = CommandServer(CommandConfig())
    assert remote_service(parser.parse_args([]), server) is None
    args = parser.parse_args(
        [
            "--remote",
            "8080",
            "--remote-executor",
            "codex",
            "--remote-model",
            "m",
            "--remote-project",
            str(tmp_path),
            "--remote-timeout",
            "30",
            "--remote-max-concurrent",
            "2",
        ]
    )
    service = remote_service(args, server)
    assert isinstance(service, RemoteServer) and service.manager is server.manager
    config = service.config
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.defaults == Defaults("codex", "m", str(tmp_path), None)
    assert config.request_timeout == 30.0 and config.max_concurrent == 2
    assert config.max_memory == 256 * 1024 * 1024
    small = config_from_args(parser.parse_args(["--remote", "0", "--remote-max-memory", "9"]))
    assert small is not None and small.max_memory == 9
    assert config_from_args(parser.parse_args(["--remote", "[::1]:9"])).host == "::1"  # type: ignore[union-attr]
    with pytest.raises(SystemExit):
        parser.parse_args(["--remote", "host:port"])


async def test_the_service_shares_the_http_apis_history_readers(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    args = parser.parse_args(["--remote", "0"])
    config = CommandConfig(data_dir=tmp_path / "data")
    async with CommandServer(config) as server:
        assert server.history is None and server.app is not None
        service = remote_service(args, server)
        assert service is not None
        assert service.history is server.app[READERS_KEY]


def test_project_folder_follows_the_session_managers_rules(tmp_path: Path) -> None:
    # An attachment goes where the agent runs: the manager's folder, or its message, for every
    # kind of path.
    from arp.agents.sessions import SessionConfig, SessionManager
    from arp.command.remote_run import project_folder as _project_folder

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_text("x")
    for allowed_root in (root, None):
        manager = SessionManager(SessionConfig(allowed_root=allowed_root))
        for requested in (
            None,
            "  ",
            "sub",
            str(root / "sub"),
            "missing",
            "file",
            "../elsewhere",
            str(tmp_path),
            "sub\x00x",
            "sub\ud800",
        ):
            try:
                expected: Path | str = manager.resolve_project(requested)
            except ArpError as exc:
                expected = exc.message
            try:
                got: Path | str = _project_folder(manager, requested)
            except RequestError as exc:
                assert exc.kind == "processing_error"
                got = exc.message
            assert got == expected, (allowed_root, requested)


def test_flags_use_the_shared_argument_types(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    actions = parser._option_string_actions
    assert actions["--remote-timeout"].type is argtypes.positive_float
    for flag in (
        "--remote-max-line",
        "--remote-max-concurrent",
        "--remote-max-connections",
        "--remote-max-memory",
    ):
        assert actions[flag].type is argtypes.positive_int
    for argv, message in [
        (["--remote", "70000"], "a port is 0..65535"),
        (["--remote", "h:-1"], "expected HOST:PORT or PORT"),
        (["--remote-max-line", "0"], "must be at least 1"),
        (["--remote-timeout", "0"], "must be more than 0"),
    ]:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err, argv


def test_the_token_flag_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    def token_of(argv: list[str]) -> str | None:
        parser = argparse.ArgumentParser()
        add_remote_arguments(parser)
        config = config_from_args(parser.parse_args(["--remote", "0", *argv]))
        assert config is not None
        return config.token

    monkeypatch.delenv("ARPC_REMOTE_TOKEN", raising=False)
    assert token_of([]) is None
    assert token_of(["--remote-token", "flag"]) == "flag"
    monkeypatch.setenv("ARPC_REMOTE_TOKEN", "from-env")
    assert token_of([]) == "from-env"
    assert token_of(["--remote-token", "flag"]) == "flag"
    monkeypatch.setenv("ARPC_REMOTE_TOKEN", "")
    assert token_of([]) is None
