"""The session manager against hostile or odd input: bad output lines, bad requests, races."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from arp.agents.sessions import SessionConfig, SessionManager, StartRequest
from tests.conftest import units
from tests.fakes.install import install_fakes


def config(tmp_path: Path, **changes: object) -> SessionConfig:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "binaries": install_fakes(tmp_path / "bin"),
        "sigint_grace": units(1),
        "sigterm_grace": units(1),
        "kill_wait": units(3),
        "idle_tick": units(0.2),
    }
    values.update(changes)
    return SessionConfig(**values)  # type: ignore[arg-type]


def printing_cli(tmp_path: Path, name: str, output: str) -> str:
    """An executable that ignores its arguments, prints ``output`` and exits 0."""
    data = tmp_path / f"{name}.out"
    data.write_text(output, encoding="utf-8")
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\ncat "{data}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def claude_text(text_json: str) -> str:
    """A Claude stream-json assistant line whose text is the JSON string ``text_json``."""
    return '{"type":"assistant","message":{"content":[{"type":"text","text":' + text_json + "}]}}\n"


RESULT = '{"type":"result","subtype":"success","result":"done","session_id":"s-1"}\n'


async def test_lone_surrogate_in_output_neither_kills_the_pump_nor_hangs_the_run(
    tmp_path: Path,
) -> None:
    # An emoji cut in half, as Node's JSON.stringify writes it; then more than a pipe holds, so
    # a pump that stopped reading would leave the child blocked for good.
    filler = claude_text(json.dumps("x" * 1000)) * 200
    output = claude_text('"half \\ud83d"') + filler + RESULT
    binary = printing_cli(tmp_path, "claude", output)
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        session = await manager.start_session(StartRequest("claude", "hi"))
        final = await manager.wait(session.session_id, units(10))
        assert final.status == "completed", final
        lines = manager.lines_after(session.session_id, 0, limit=10_000)
        assert [seq for seq, _ in lines] == list(range(1, final.last_seq + 1))
        for _, line in lines:
            line.encode("utf-8")
            json.loads(line)
        texts = [e.text for e in manager.events_after(session.session_id, 0, 10_000)]
        assert "half \ud83d" in texts
        assert len(lines) == 1 + 1 + 200 + 1 + 1  # prompt, half, filler, result, status
    # Stored and read back after a restart too.
    async with SessionManager(config(tmp_path, binaries={"claude": binary})) as manager:
        again = manager.lines_after(session.session_id, 0, limit=10_000)
        assert again == lines
