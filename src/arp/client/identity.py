"""A stable client id for machines that were not given one (`arpc` without `--client-id`).

As the original: a UUID v5 over the host name, the machine id (`/etc/machine-id`, macOS
`/etc/hostid`), the user name, the OS and architecture and, on Linux, the distribution; shown as
32 upper-case hex digits. Once made, it is kept in the user's config folder, so it stays the
same even if one of those facts changes later.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
import re
import socket
import uuid
from pathlib import Path

import platformdirs

from arp.protocol.access_tokens import new_token

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("9f1c3a52-5b7e-4c1d-8a2f-6e0d4b3c2a10")
ID_FILE = "client_id"


def _read_first(*paths: str) -> str:
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text
    return ""


def _distro() -> str:
    try:
        info = platform.freedesktop_os_release()
    except OSError:
        return ""
    return f"{info.get('ID', '')} {info.get('VERSION_ID', '')}".strip()


def machine_facts() -> list[str]:
    """The facts the id is derived from, in a fixed order."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    system = platform.system()
    return [
        socket.gethostname(),
        _read_first("/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/hostid"),
        user,
        system,
        platform.machine(),
        _distro() if system == "Linux" else "",
    ]


def derive_client_id(facts: list[str]) -> str:
    """The id for these facts: UUID v5, 32 upper-case hex digits."""
    return uuid.uuid5(NAMESPACE, "\n".join(facts)).hex.upper()


def config_folder() -> Path:
    return Path(platformdirs.user_config_dir("arpc", appauthor=False))


def load_or_create_client_id(folder: Path | None = None) -> str:
    """The persisted id, made and saved on first use (kept unsaved if the folder is read-only)."""
    folder = folder or config_folder()
    path = folder / ID_FILE
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except OSError:
        saved = ""
    if saved:
        return saved
    client_id = derive_client_id(machine_facts())
    try:
        # The id is the token of the relay and of the local API: only this user reads it.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(client_id + "\n")
    except OSError as exc:
        log.warning("could not save client id to %s: %s", path, exc)
    return client_id


ACCESS_TOKEN_FILE = "access_token"
"""Where `arpc --generate-access-token` keeps the token it made (0600), read at each start."""
ACCESS_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def check_access_token(token: str) -> str:
    """`token` if it can travel in a URL, a header and a cookie as it is (ValueError if not)."""
    if not ACCESS_TOKEN_PATTERN.fullmatch(token):
        raise ValueError(
            "an access token is 1 to 256 characters from A-Z a-z 0-9 . _ ~ - "
            "(arpc --generate-access-token makes one)"
        )
    return token


def load_access_token(folder: Path | None = None) -> str | None:
    """The generated access token saved before, or None."""
    path = (folder or config_folder()) / ACCESS_TOKEN_FILE
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return saved if saved and ACCESS_TOKEN_PATTERN.fullmatch(saved) else None


def save_new_access_token(folder: Path | None = None) -> tuple[str, Path]:
    """Make a new random access token and save it (0600, replacing the last one: rotation);
    the token and where it went. OSError when it cannot be saved."""
    folder = folder or config_folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / ACCESS_TOKEN_FILE
    token = new_token()
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(temporary, path)
    return token, path
