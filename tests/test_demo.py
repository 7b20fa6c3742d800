"""The README's main job runs: relay, client and demo service on loopback, URL works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_a_working_public_url() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "🌐 Public URL (works; open it in a browser): http://127.0.0.1:" in done.stdout
    assert "/?token=" in done.stdout
