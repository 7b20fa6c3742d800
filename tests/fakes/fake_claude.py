"""A fake `claude -p <prompt> --output-format stream-json --verbose [--resume ID] …`.

With ``--input-format stream-json --permission-prompt-tool stdio`` (ARP's ask mode) it speaks
Claude's control protocol too: it answers the ``initialize`` request, reads the prompt as a
``user`` message, prints what it prints in ``-p`` mode, and with ``touch=PATH`` asks
``can_use_tool`` for a Bash ``touch`` of it (``asks=N`` times) before its result, obeying each
answer; then it waits for stdin to close.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import fakecli as f


def read_message() -> Any:
    line = sys.stdin.readline()
    if not line:
        sys.exit(3)  # stdin closed before the protocol was done
    return json.loads(line)


def ask_mode(argv: list[str]) -> None:
    init = read_message()
    assert init["type"] == "control_request" and init["request"]["subtype"] == "initialize"
    f.emit(
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": init["request_id"], "response": {}},
        }
    )
    user = read_message()
    content = user["message"]["content"]
    prompt = next(block["text"] for block in content if block.get("type") == "text")
    images = [block for block in content if block.get("type") == "image"]
    run(argv, prompt, asking="--permission-prompt-tool" in argv, images=images)
    while sys.stdin.readline():  # the real CLI ends once its input does
        pass


def edit_files(d: f.Directives, sid: str, images: list[dict[str, Any]], argv: list[str]) -> None:
    """``writefile=PATH`` (a Write tool call that writes it), ``rmfile=PATH`` (a Bash ``rm``),
    and, when images came as content blocks, one text naming their types and sha256."""
    if images:
        names = [
            f"{b['source']['media_type']}:"
            + hashlib.sha256(base64.b64decode(b["source"]["data"])).hexdigest()
            for b in images
        ]
        text = "IMAGES " + " ".join(names) + " ADD-DIR " + (f.flag_value(argv, "--add-dir") or "")
        f.emit({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]},
                "session_id": sid})  # fmt: skip
    for key, name, make in (("writefile", "Write", True), ("rmfile", "Bash", False)):
        target = d.get(key)
        if not target:
            continue
        tool_input = {"file_path": target} if make else {"command": f"rm {target}"}
        use = {"type": "tool_use", "id": f"toolu_{key}", "name": name, "input": tool_input}
        f.emit({"type": "assistant", "message": {"content": [use]}, "session_id": sid})
        if make:
            Path(target).write_text("written by the fake\n")
        else:
            Path(target).unlink()
        f.emit({"type": "user", "message": {"content": [{"type": "tool_result",
                "tool_use_id": f"toolu_{key}", "content": "ok"}]}, "session_id": sid})  # fmt: skip


def ask(d: f.Directives, sid: str) -> None:
    """``touch=PATH`` (``asks=N`` times): a Bash tool use that waits for ARP's answer."""
    target = d.get("touch")
    if not target:
        return
    for i in range(d.int("asks", 1)):
        tool_id = f"toolu_ask_{i}"
        command = {"command": f"touch {target}"}
        f.emit(
            {
                "type": "assistant",
                "message": {"content": [{"type": "tool_use", "id": tool_id, "name": "Bash",
                                         "input": command}]},
                "session_id": sid,
            }
        )  # fmt: skip
        request_id = f"req-{i}"
        f.emit(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": command,
                            "tool_use_id": tool_id},
            }
        )  # fmt: skip
        while True:
            answer = read_message()
            if answer.get("type") == "control_response":
                break
        response = answer["response"]
        assert response["request_id"] == request_id, response
        body = response["response"]
        if body["behavior"] == "allow":
            Path(target).touch()
            result: dict[str, Any] = {"content": "", "is_error": False}
        else:
            result = {"content": body.get("message", ""), "is_error": True}
        f.emit(
            {
                "type": "user",
                "message": {"content": [{"type": "tool_result", "tool_use_id": tool_id,
                                         **result}]},
                "session_id": sid,
            }
        )  # fmt: skip


def main() -> None:
    argv = sys.argv[1:]
    f.answer_version(argv, "2.1.197 (Claude Code)")
    if f.flag_value(argv, "--input-format") == "stream-json":
        ask_mode(argv)
        return
    run(argv, f.flag_value(argv, "-p") or "", asking=False)


def run(
    argv: list[str], prompt: str, *, asking: bool, images: list[dict[str, Any]] | None = None
) -> None:
    d = f.Directives(prompt)
    f.setup(d)
    sid = f.flag_value(argv, "--resume") or f.new_id()
    if d.get("nologin"):
        # Claude Code 2.1 without credentials: a synthetic answer and an error result, exit 0.
        text = "Not logged in · Please run /login"
        f.emit({"type": "system", "subtype": "init", "session_id": sid, "cwd": os.getcwd()})
        f.emit(
            {
                "type": "assistant",
                "message": {"model": "<synthetic>", "content": [{"type": "text", "text": text}]},
                "session_id": sid,
                "error": "authentication_failed",
            }
        )
        f.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "result": text,
                "session_id": sid,
            }
        )
        return
    if not d.get("noid"):
        f.emit(
            {
                "type": "system",
                "subtype": "init",
                "session_id": sid,
                "cwd": os.getcwd(),
                "tools": ["Bash", "Read"],
                "model": f.flag_value(argv, "--model") or "claude-sonnet-4-5",
                "permissionMode": f.flag_value(argv, "--permission-mode") or "default",
                "argv": argv,
                "arp_session_id": os.environ.get("ARP_SESSION_ID"),
            }
        )
    fast = d.int("fast", 0)
    if fast:
        out = sys.stdout
        template = (
            '{"type":"assistant","message":{"id":"msg_@","role":"assistant","content":'
            '[{"type":"text","text":"fast piece @"}]},"session_id":"SID"}\n'
        ).replace("SID", sid)
        for i in range(fast):
            out.write(template.replace("@", str(i)))
        out.flush()
    else:
        for i, text in enumerate(f.pieces(d)):
            f.pause(d)
            f.emit(
                {
                    "type": "assistant",
                    "message": {
                        "id": f"msg_{i}",
                        "role": "assistant",
                        "content": [{"type": "text", "text": text}],
                    },
                    "session_id": sid,
                }
            )
    blob = f.big(d)
    if blob:
        f.emit({"type": "assistant", "message": {"content": [{"type": "text", "text": blob}]}})
    f.emit(
        {
            "type": "assistant",
            "message": {
                "id": "msg_tool",
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should list files."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Bash",
                        "input": {"command": "ls"},
                    },
                ],
            },
            "session_id": sid,
        }
    )
    f.emit(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt"}
                ],
            },
            "session_id": sid,
        }
    )
    if asking:
        ask(d, sid)
    edit_files(d, sid, images or [], argv)
    failed = bool(d.get("error"))
    f.emit(
        {
            "type": "result",
            "subtype": "error_during_execution" if failed else "success",
            "is_error": failed,
            "result": "the fake failed" if failed else "done",
            "session_id": sid,
            "num_turns": 1,
            "total_cost_usd": 0.0125,
            "usage": {"input_tokens": 10, "output_tokens": 20},
            "permission_denials": [],
        }
    )
    if not asking:
        f.finish(d)


if __name__ == "__main__":
    main()
