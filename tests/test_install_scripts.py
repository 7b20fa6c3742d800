"""scripts/install-server.sh and install-client.sh, run as a user runs them, into a temporary
prefix and unit folder: the files they make, a second run that changes nothing, units that
systemd accepts, and --uninstall that leaves nothing behind.

pip installs the checkout with --no-deps (ARP_PIP_ARGS), so a run takes seconds; the units are
checked by `systemd-analyze verify` where that program exists. systemctl is never called here
(the unit folder is not systemd's, and ARP_NO_SYSTEMCTL=1).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arp.config import Limits
from tests.conftest import units

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "arps": (ROOT / "scripts" / "install-server.sh", ["--bind", "127.0.0.1", "--public-port",
                                                      "18003", "--domain", 'odd "name" 100%']),
    "arpc": (ROOT / "scripts" / "install-client.sh", ["--server-addr", "relay.example.com",
                                                      "--command-mode"]),
}  # fmt: skip


@dataclass
class Installed:
    program: str
    script: Path
    flags: list[str]
    prefix: Path
    unit_dir: Path
    first_output: str

    @property
    def unit(self) -> Path:
        return self.unit_dir / f"{self.program}.service"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ARP_PIP_ARGS": "--no-deps", "ARP_NO_SYSTEMCTL": "1"}
        done = subprocess.run(
            ["bash", str(self.script), "--prefix", str(self.prefix),
             "--unit-dir", str(self.unit_dir), *args],
            capture_output=True, text=True, timeout=units(300), env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done


def snapshot(*folders: Path) -> dict[str, tuple[int, str]]:
    """Every file under the folders: its mtime and a hash of its content."""
    files = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                files[str(path)] = (path.stat().st_mtime_ns, digest)
    return files


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def installed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    program = request.param
    script, flags = SCRIPTS[program]
    root = tmp_path_factory.mktemp(f"install-{program}")
    setup = Installed(program, script, flags, root / "prefix", root / "units", "")
    setup.first_output = setup.run("--", *flags).stdout
    yield setup
    shutil.rmtree(root, ignore_errors=True)


def test_install_makes_a_venv_and_a_unit_with_the_flags(installed: Installed) -> None:
    venv = installed.prefix / "venv"
    assert (venv / "bin" / installed.program).exists()
    text = installed.unit.read_text()
    exec_line = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert exec_line is not None
    expected = " ".join(
        [str(venv / "bin" / installed.program)]
        + ['"' + f.replace('"', '\\"').replace("%", "%%") + '"' for f in installed.flags]
    )
    assert exec_line.group(1) == expected
    out = installed.first_output
    for needle in ("public URL", "logs", "uninstall", "--uninstall", "not enabling"):
        assert needle in out, out
    if installed.program == "arpc":  # the agents' CLIs are found on the installer's PATH
        assert f'Environment="PATH={os.environ["PATH"]}"' in text


def test_a_second_run_changes_nothing(installed: Installed) -> None:
    before = snapshot(installed.prefix, installed.unit_dir)
    again = installed.run("--", *installed.flags).stdout
    assert "up to date" in again
    assert snapshot(installed.prefix, installed.unit_dir) == before


def test_systemd_accepts_the_installed_unit(installed: Installed) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were not verified by systemd")
    done = subprocess.run(
        [analyze, "verify", str(installed.unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unbalanced" not in done.stderr and "Unknown" not in done.stderr, done.stderr


def test_uninstall_leaves_nothing(installed: Installed) -> None:
    out = installed.run("--uninstall").stdout
    assert "uninstalled" in out
    assert not installed.prefix.exists()
    assert list(installed.unit_dir.iterdir()) == []
    installed.run("--uninstall")  # again: nothing to do, no error


def test_the_units_are_hardened_and_allow_enough_descriptors() -> None:
    server = (ROOT / "deploy" / "systemd" / "arps.service").read_text()
    for setting in (
        "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
        "PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "StateDirectory=arps", "RestartPreventExitStatus=2",
    ):  # fmt: skip
        assert f"\n{setting}\n" in server, setting
    limits = Limits()
    # A public connection holds two sockets (public, tunnel); a client a control link and
    # at least one pooled tunnel.
    needed = 2 * limits.max_public_connections + 2 * limits.max_clients
    nofile = int(re.findall(r"^LimitNOFILE=(\d+)$", server, re.M)[0])
    assert nofile >= needed
    client = (ROOT / "deploy" / "systemd" / "arpc.service").read_text()
    assert "ProtectHome" not in client  # it must reach the agents' home folders
    assert "WantedBy=default.target" in client and "NoNewPrivileges=yes" in client


def test_bad_options_are_refused(tmp_path: Path) -> None:
    for script in ("install-server.sh", "install-client.sh"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / script), "--frobnicate"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and "unknown option --frobnicate" in done.stderr
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-client.sh"), "--prefix", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "give arpc's flags after --" in done.stderr
    assert list(tmp_path.iterdir()) == []
