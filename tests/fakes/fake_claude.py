"""A fake `claude -p <prompt> --output-format stream-json --verbose [--resume ID] …`."""

from __future__ import annotations

import os
import sys

import fakecli as f


def main() -> None:
    argv = sys.argv[1:]
    f.answer_version(argv, "2.1.197 (Claude Code)")
    prompt = f.flag_value(argv, "-p") or ""
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
    f.finish(d)


if __name__ == "__main__":
    main()
