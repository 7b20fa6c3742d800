"""Shared fixtures: one scaled time unit, free ports, a loop that fails tests on stray errors,
and private XDG folders so nothing a test starts writes into the real home folder."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

# Every wait in a test is a multiple of this, so a slow machine can stretch them all at once.
TIME_UNIT = float(os.environ.get("ARP_TEST_TIME_UNIT", "1.0"))


def units(n: float) -> float:
    """`n` test time units, in seconds."""
    return n * TIME_UNIT


_HANDED_OUT: set[int] = set()
"""Ports `free_port` gave already in this run."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for child processes that take a port flag),
    and never one this run was given before: the kernel may hand a just-closed port out again,
    and a node given the same port for two of its listeners cannot start (it happened once)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no port not handed out before after 100 tries on {host}")


XDG_FOLDERS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")


@pytest.fixture(scope="session", autouse=True)
def _private_xdg_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every arpc a test starts, in-process or as a child, keeps its client id, logs and
    agent state in the session's temporary folder, never in ~/.config or ~/.local/share (a
    CLI test once appended to ~/.local/share/arpc/logs). Tests that need their own folders
    still set them, in a child's environment or with monkeypatch."""
    root = tmp_path_factory.mktemp("xdg")
    saved = {name: os.environ.get(name) for name in XDG_FOLDERS}
    for name in XDG_FOLDERS:
        os.environ[name] = str(root / name.removeprefix("XDG_").removesuffix("_HOME").lower())
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


BOTH_LOOPS = ("tests/relay/", "tests/client/", "tests/net/", "tests/cluster/")
"""The data path's tests, run on both loops the programs use: uvloop (TLS, command mode, the
gateway) and asyncio's own (plain arps and forward-mode arpc, which leave OpenSSL out)."""


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on the loops the product runs on, so the data path is tested as it runs."""
    from arp.net.selector import new_event_loop  # asyncio's own, as plain processes run it

    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return {"asyncio": new_event_loop}
    factories: dict[str, Any] = {"uvloop": uvloop.new_event_loop}
    path = item.path.as_posix()
    if any(f"/{folder}" in path for folder in BOTH_LOOPS):
        factories["asyncio"] = new_event_loop
    return factories


@pytest.fixture
async def _loop_errors() -> AsyncIterator[None]:
    """An exception that reached the loop's handler (a task nobody awaited) fails the test."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(context)
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    loop.set_exception_handler(None)
    assert not errors, f"the event loop logged unhandled errors: {errors}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.fixturenames.insert(0, "_loop_errors")  # type: ignore[attr-defined]
