"""What a newcomer's mistakes look like on arps and arpc: one line naming the flag, exit 2.

Each case ran into a traceback, a silent no-op or exit 1 before (issue 17). Real processes, as a
user runs them; the session's private XDG folders keep their files out of the home folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, units

PY = sys.executable


def run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=units(30),
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def refused(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The output of a run that must have ended with exit 2, one clear line, no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output
    return output


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_arpc_command_port_taken(taken_port: int) -> None:
    done = run(
        "arp.client", "--command-mode", "--client-id", "x", "--control-port", str(free_port()),
        "--command-port", str(taken_port),
    )  # fmt: skip
    refused(done, f"--command-port {taken_port}: cannot listen")


def test_arpc_remote_protocol_port_taken(taken_port: int, tmp_path: Path) -> None:
    done = run(
        "arp.client", "--command-mode", "--client-id", "x", "--control-port", str(free_port()),
        "--data-dir", str(tmp_path), "--remote", f"127.0.0.1:{taken_port}",
    )  # fmt: skip
    refused(done, f"--remote 127.0.0.1:{taken_port}: cannot listen")


def test_arps_port_taken(taken_port: int) -> None:
    done = run(
        "arp.relay", "--bind", "127.0.0.1", "--control-port", str(taken_port),
        "--proxy-port", "0", "--public-port", "0",
    )  # fmt: skip
    output = refused(done, "cannot start", str(taken_port))
    assert len(output.strip().splitlines()) == 1, output


def test_local_port_with_command_mode_is_refused() -> None:
    done = run("arp.client", "--command-mode", "--client-id", "x", "--local-port", "3000")
    refused(done, "--local-port", "--command-mode")


@pytest.mark.parametrize("pool", ["65", "-1"])
def test_out_of_range_pool_size_exits_2(pool: str) -> None:
    refused(run("arp.relay", "--pool-size", pool), f"--pool-size {pool} is outside 0..64")
    refused(run("arp.relay", env={"POOL_SIZE": pool}), f"--pool-size {pool} is outside 0..64")


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=units(60),
    )  # fmt: skip
    missing = tmp_path / "nope.pem"
    ports = [
        "--bind",
        "127.0.0.1",
        "--control-port",
        "0",
        "--proxy-port",
        "0",
        "--public-port",
        "0",
    ]
    done = run("arp.relay", *ports, "--tls-cert", str(missing), "--tls-key", str(key))
    refused(done, f"--tls-cert {missing}: no such file")
    done = run("arp.relay", *ports, "--tls-cert", str(cert), "--tls-key", str(missing))
    refused(done, f"--tls-key {missing}: no such file")
    done = run("arp.relay", *ports, "--tls-cert", str(key), "--tls-key", str(key))
    refused(done, "not a PEM certificate and its key")
    done = run("arp.client", "--client-id", "x", "--local-port", "9", "--tls-ca", str(missing))
    refused(done, f"--tls-ca {missing}: no such file")
    done = run("arp.client", "--client-id", "x", "--local-port", "9", "--tls-ca", str(tmp_path))
    refused(done, f"--tls-ca {tmp_path}: not a file")


def test_help_shows_every_default() -> None:
    relay = " ".join(run("arp.relay", "--help").stdout.split())
    for text in ("ARP_LOG; default info", "ARPS_AUTH_TOKEN; default none", "TLS on the control"):
        assert text in relay, relay
    client = " ".join(run("arp.client", "--help").stdout.split())
    for text in (
        "ARP_LOG; default info",
        "default: off",
        "default: the system's CAs",
        "names none (default: the CLI's own)",
    ):
        assert text in client, client
