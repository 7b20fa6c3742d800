"""A private nginx with deploy/nginx/arp.conf in front of a relay, on free loopback ports.

The file is used as shipped, with only its ports, names and certificate paths replaced; the
certificate is a self-signed one made here with the openssl CLI. nginx runs in the foreground as
one process (no daemon, no master), with every path in the test's folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, units

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx" / "arp.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Front:
    """nginx listening on 127.0.0.1:`https_port` (TLS) and `http_port`, for `upstream_port`."""

    https_port: int
    http_port: int
    upstream_port: int
    cafile: Path
    folder: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies nginx's certificate against the one made for it."""
        return ssl.create_default_context(cafile=str(self.cafile))

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=units(60),
    )  # fmt: skip
    return cert, key


def templated(conf: str, *, https: int, http: int, upstream: int, cert: Path, key: Path) -> str:
    """deploy/nginx/arp.conf with this test's ports, name and certificate, nothing else."""
    replacements = {
        "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen [::]:80;": "",
        "server 127.0.0.1:17003;": f"server 127.0.0.1:{upstream};",
        "/etc/letsencrypt/live/relay.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/relay.example.com/privkey.pem": str(key),
    }
    for old, new in replacements.items():
        assert old in conf, f"deploy/nginx/arp.conf no longer holds {old!r}: update the test"
        conf = conf.replace(old, new)
    return conf


def main_conf(folder: Path) -> str:
    """The top level around arp.conf: every file nginx writes is in `folder`."""
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_shutdown_timeout 5s;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {folder}/arp.conf;
}}
"""


async def wait_listening(port: int, process: asyncio.subprocess.Process, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"nginx exited with {process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


FrontFactory = Callable[[int], Awaitable[Front]]


@pytest.fixture
async def nginx_front(tmp_path: Path) -> AsyncIterator[FrontFactory]:
    """Starts nginx in front of a relay's public port: `await nginx_front(port)`."""
    if not os.path.exists(NGINX):
        pytest.fail(f"{NGINX} is missing: apt-get install -y nginx (scripts/setup.sh --dev)")
    processes: list[asyncio.subprocess.Process] = []
    fronts: list[Front] = []

    async def start(upstream_port: int) -> Front:
        folder = tmp_path / f"nginx{len(fronts)}"
        folder.mkdir()
        cert, key = make_certificate(folder)
        https, http = free_port(), free_port()
        (folder / "arp.conf").write_text(
            templated(CONF.read_text(), https=https, http=http, upstream=upstream_port,
                      cert=cert, key=key)
        )  # fmt: skip
        (folder / "nginx.conf").write_text(main_conf(folder))
        test = subprocess.run(
            [NGINX, "-t", "-q", "-p", str(folder), "-e", str(folder / "error.log"),
             "-c", str(folder / "nginx.conf")],
            capture_output=True, text=True, timeout=units(30),
        )  # fmt: skip
        assert test.returncode == 0, f"nginx -t: {test.stderr}"
        process = await asyncio.create_subprocess_exec(
            NGINX, "-p", str(folder), "-e", str(folder / "error.log"),
            "-c", str(folder / "nginx.conf"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(process)
        front = Front(https, http, upstream_port, cert, folder)
        fronts.append(front)
        try:
            await wait_listening(https, process, units(15))
        except (AssertionError, TimeoutError) as exc:
            raise AssertionError(f"nginx did not start: {front.error_log()}") from exc
        return front

    yield start
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish, then exit
            try:
                async with asyncio.timeout(units(10)):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
