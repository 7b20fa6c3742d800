"""A fake `gemini -p <prompt> --output-format stream-json [--resume <session_id>] …`."""

from __future__ import annotations

import os
import sys

import fakecli as f


def main() -> None:
    argv = sys.argv[1:]
    f.answer_version(argv, "0.61.0")
    prompt = f.flag_value(argv, "-p") or ""
    d = f.Directives(prompt)
    f.setup(d)
    if d.get("nologin"):
        # Gemini CLI 0.61 with no auth method: one line on stderr, nothing on stdout, exit 41.
        print(
            f"Please set an Auth method in your {os.path.expanduser('~')}/.gemini/settings.json "
            "or specify one of the following environment variables before running: "
            "GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(41)
    sid = f.flag_value(argv, "--resume") or f.new_id()
    ts = "2026-01-01T00:00:00.000Z"
    if not d.get("noid"):
        f.emit(
            {
                "type": "init",
                "timestamp": ts,
                "session_id": sid,
                "model": f.flag_value(argv, "-m") or "gemini-2.5-pro",
                "argv": argv,
                "cwd": os.getcwd(),
            }
        )
    f.emit({"type": "message", "timestamp": ts, "role": "user", "content": prompt})
    for text in f.pieces(d):
        f.pause(d)
        f.emit(
            {
                "type": "message",
                "timestamp": ts,
                "role": "assistant",
                "content": text,
                "delta": True,
            }
        )
    f.emit(
        {
            "type": "tool_use",
            "timestamp": ts,
            "tool_name": "list_directory",
            "tool_id": "tool_1",
            "parameters": {"dir_path": "."},
        }
    )
    f.emit(
        {
            "type": "tool_result",
            "timestamp": ts,
            "tool_id": "tool_1",
            "status": "success",
            "output": "a.txt",
        }
    )
    failed = bool(d.get("error"))
    result: dict[str, object] = {
        "type": "result",
        "timestamp": ts,
        "status": "error" if failed else "success",
        "stats": {
            "total_tokens": 70,
            "input_tokens": 50,
            "output_tokens": 20,
            "duration_ms": 5,
            "tool_calls": 1,
        },
    }
    if failed:
        result["error"] = {"type": "FatalError", "message": "the fake failed"}
    f.emit(result)
    f.finish(d)


if __name__ == "__main__":
    main()
