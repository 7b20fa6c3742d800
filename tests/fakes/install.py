"""Puts the fake agent CLIs where a test can point the executors at them."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent
NAMES = ("claude", "codex", "gemini")


def install_fakes(folder: Path) -> dict[str, str]:
    """Executables ``claude``, ``codex`` and ``gemini`` in ``folder``; name → path.

    Each is a two-line shell script that execs this interpreter on the fake, so the fake's pid
    is the child's pid (signals reach it directly).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        path = folder / name
        script = FAKES / f"fake_{name}.py"
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        paths[name] = str(path)
    return paths
