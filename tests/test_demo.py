"""The README's main job runs: relay, client and demo service on loopback, URL works."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arp_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_prints_a_working_public_url_and_leaves_no_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "🌐 Public URL (works; open it in a browser): http://127.0.0.1:" in done.stdout
    assert "/?token=" in done.stdout
    # Its private home (client id, logs) went with it: no /tmp/arp-demo-* left behind.
    assert list(tmp_path.glob("arp-demo-*")) == []


def test_a_port_held_only_by_time_wait_sockets_counts_as_free() -> None:
    """The demo said "ports 17001-17003 are taken" right after an earlier run, when only
    TIME-WAIT sockets of that run's connections remained (arps binds with SO_REUSEADDR)."""
    demo = demo_module()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as arps listens
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the server's side closes first: its port enters TIME-WAIT
        client.recv(1)
        client.close()
    with socket.socket() as probe:  # proof the port is in TIME-WAIT: a plain bind fails
        try:
            probe.bind(("127.0.0.1", port))
            time_wait = False
        except OSError:
            time_wait = True
    assert time_wait, "the port did not stay in TIME-WAIT; the check below proves nothing"
    assert demo.port_free(port)
    with socket.socket() as holder:  # a port someone listens on is still taken
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        assert not demo.port_free(holder.getsockname()[1])
