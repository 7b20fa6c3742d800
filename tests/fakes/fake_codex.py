"""A fake `codex exec --json … <prompt>` and `codex exec --json … resume <thread_id> <prompt>`."""

from __future__ import annotations

import os
import sys

import fakecli as f


def main() -> None:
    argv = sys.argv[1:]
    f.answer_version(argv, "codex-cli 0.169.0")
    if not argv or argv[0] != "exec" or "--json" not in argv:
        sys.stderr.write("fake codex: expected `exec --json`\n")
        sys.exit(2)
    if sys.stdin.read(1) != "":
        sys.stderr.write("fake codex: stdin should be empty\n")
        sys.exit(2)
    prompt = argv[-1]
    d = f.Directives(prompt)
    f.setup(d)
    thread = argv[argv.index("resume") + 1] if "resume" in argv else f.new_id()
    if not d.get("noid"):
        f.emit({"type": "thread.started", "thread_id": thread, "argv": argv, "cwd": os.getcwd()})
    f.emit({"type": "turn.started"})
    f.emit(
        {
            "type": "item.started",
            "item": {
                "id": "item_0",
                "type": "command_execution",
                "command": "bash -lc ls",
                "aggregated_output": "",
                "status": "in_progress",
            },
        }
    )
    f.emit(
        {
            "type": "item.completed",
            "item": {
                "id": "item_0",
                "type": "command_execution",
                "command": "bash -lc ls",
                "aggregated_output": "a.txt\n",
                "exit_code": 0,
                "status": "completed",
            },
        }
    )
    for i, text in enumerate(f.pieces(d)):
        f.pause(d)
        f.emit(
            {
                "type": "item.completed",
                "item": {"id": f"item_{i + 1}", "type": "agent_message", "text": text},
            }
        )
    if d.get("error"):
        f.emit({"type": "turn.failed", "error": {"message": "the fake failed"}})
    else:
        f.emit(
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 30, "cached_input_tokens": 0, "output_tokens": 40},
            }
        )
    f.finish(d)


if __name__ == "__main__":
    main()
