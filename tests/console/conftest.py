"""The console's browser tests: a real relay and arpc (command mode) on loopback, a fixture history,
the fake agent CLIs, and Debian's Chromium driven by Playwright.

Every page opened here fails its test on an uncaught script error or a Content-Security-Policy
violation (both reach the browser console), so a console that breaks its own CSP cannot pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from arp.agents.history import HistoryReaders
from arp.client.config import ClientConfig, Target
from arp.client.control import Client
from arp.command.server import CommandServer
from arp.config import Limits
from arp.relay.server import Relay, RelayConfig
from tests.agents.history import trees
from tests.command.sessions_support import fake_config
from tests.conftest import units
from tests.relay.conftest import fast_timeouts

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
TOKEN = "phone-test"

LONG_TURNS = 50
"""Turns of the older Claude session: more messages than the console's first page (200)."""
RICH_ID = "5f0c6a52-1c1e-4f3e-9d55-7c7a3e1a2b01"
RICH_TITLE = "Why does checkout fail on Safari?"
RICH_ANSWER = """## What goes wrong

Safari rejects the **`SameSite=None`** cookie because it is not marked `Secure`, so the
checkout request arrives *without* a session:

1. the cart page sets the cookie over plain HTTP;
2. Safari drops it;
3. `POST /checkout` answers 401.

```python
response.set_cookie("session", token, samesite="None", secure=True)
```

| Browser | Cookie kept |
|---------|-------------|
| Chrome  | yes         |
| Safari  | no          |

See https://example.com/samesite for the details. Never paste <img src=x onerror="alert(1)">
or [this link](javascript:alert(1)) into the shop's admin page."""


def write_rich_claude_session(claude_dir: Path, cwd: str, start: float) -> None:
    """A Claude conversation with Markdown, a thought and a tool call with its result."""
    common = {
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": RICH_ID,
        "version": "2.0.14",
        "gitBranch": "fix/safari",
    }

    def assistant(uuid: str, parent: str, t: float, block: dict[str, Any]) -> dict[str, Any]:
        return {
            "parentUuid": parent,
            **common,
            "type": "assistant",
            "uuid": uuid,
            "timestamp": trees.iso(t),
            "message": {
                "id": f"msg_{uuid}",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [block],
            },
        }

    records = [
        {
            "parentUuid": None,
            **common,
            "type": "user",
            "uuid": "u1",
            "timestamp": trees.iso(start),
            "message": {"role": "user", "content": RICH_TITLE},
        },
        assistant("a1", "u1", start + 2, {"type": "thinking", "thinking": "Check the cookie."}),
        assistant(
            "a2",
            "a1",
            start + 3,
            {
                "type": "tool_use",
                "id": "toolu_rich",
                "name": "Read",
                "input": {"file_path": "shop/session.py"},
            },
        ),
        {
            "parentUuid": "a2",
            **common,
            "type": "user",
            "uuid": "r1",
            "timestamp": trees.iso(start + 4),
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_rich",
                        "content": 'response.set_cookie("session", token, samesite="None")',
                    }
                ],
            },
        },
        assistant("a3", "r1", start + 9, {"type": "text", "text": RICH_ANSWER}),
    ]
    folder = claude_dir / "projects" / trees.encode(cwd)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{RICH_ID}.jsonl"
    path.write_text("".join(trees.line(record) for record in records))
    mtime = trees.BASE.timestamp() + start + 10
    os.utime(path, (mtime, mtime))


def write_claude_answer(
    claude_dir: Path, cwd: str, session_id: str, question: str, answer: str, start: float
) -> None:
    """A Claude conversation of one question and one text answer (the answer is Markdown)."""
    common = {
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session_id,
        "version": "2.0.14",
        "gitBranch": "main",
    }
    records = [
        {
            "parentUuid": None,
            **common,
            "type": "user",
            "uuid": "q1",
            "timestamp": trees.iso(start),
            "message": {"role": "user", "content": question},
        },
        {
            "parentUuid": "q1",
            **common,
            "type": "assistant",
            "uuid": "a1",
            "timestamp": trees.iso(start + 1),
            "message": {
                "id": "msg_a1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": answer}],
            },
        },
    ]
    folder = claude_dir / "projects" / trees.encode(cwd)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{session_id}.jsonl").write_text("".join(trees.line(r) for r in records))


def write_history(home: Path) -> HistoryReaders:
    """Two Claude projects (the newer one with the rich conversation), a Codex and a Gemini one."""
    claude, codex, gemini = home / ".claude", home / ".codex", home / ".gemini"
    trees.write_claude_session(claude, "/home/dev/arp", trees.sid(1), LONG_TURNS, 100.0)
    trees.write_claude_session(
        claude, "/home/dev/webshop", trees.sid(2), 3, 5000.0, prompt="add a coupon field"
    )
    write_rich_claude_session(claude, "/home/dev/webshop", 9000.0)
    trees.write_codex_session(codex, "/home/dev/webshop", trees.sid(3), 2, 7000.0)
    trees.write_gemini_json(gemini, "proj1", "/home/dev/notes", trees.sid(4), 2, 6000.0)
    return HistoryReaders(claude_dir=claude, codex_dir=codex, gemini_dir=gemini)


@dataclass
class ConsoleStack:
    """Relay + arpc in command mode + the command server, all on loopback ports."""

    relay: Relay
    server: CommandServer
    client: Client
    project: Path
    relay_config: RelayConfig
    home: Path
    """Where the fixture history lives (`home/.claude`, …): a test may add conversations."""
    restarts: list[Relay] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.relay.public_port}"

    async def restart_relay(self) -> None:
        """Closes the relay (every browser connection drops) and starts a new one on its ports."""
        registrations = self.client.registrations
        await self.relay.close()
        self.relay = Relay(self.relay_config)
        await self.relay.start()
        self.restarts.append(self.relay)
        async with asyncio.timeout(units(10)):
            while self.client.registrations == registrations:
                await asyncio.sleep(0.02)

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request through the relay, as curl would send it (token in the URL)."""
        sep = "&" if "?" in path else "?"
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.base}{path}{sep}token={TOKEN}", json=body) as resp,
        ):
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@contextlib.asynccontextmanager
async def console_stack(tmp_path: Path, **config: Any) -> AsyncIterator[ConsoleStack]:
    """The stack, its command server built with `config` changes (e.g. ``token=TOKEN``)."""
    home = tmp_path / "home"
    history = write_history(home)
    project = tmp_path / "project"
    project.mkdir()
    server = CommandServer(fake_config(tmp_path, **config), history=history)
    await server.start()
    relay_config = RelayConfig(
        bind="127.0.0.1",
        control_port=0,
        proxy_port=0,
        public_port=0,
        pool_size=2,
        timeouts=fast_timeouts(),
        limits=Limits(),
    )
    relay = Relay(relay_config)
    try:
        await relay.start()
        fixed = dataclasses.replace(
            relay_config,
            control_port=relay.control_port,
            proxy_port=relay.proxy_port,
            public_port=relay.public_port,
        )
        client = Client(
            ClientConfig(
                client_id=TOKEN,
                http_target=Target("127.0.0.1", server.port),
                server_addr="127.0.0.1",
                control_port=relay.control_port,
                proxy_port=relay.proxy_port,
                timeouts=fast_timeouts(),
            )
        )
        stack = ConsoleStack(relay, server, client, project, fixed, home)
        try:
            await client.start()
            await client.wait_registered(units(5))
            yield stack
        finally:
            await client.close()
            await stack.relay.close()
    finally:
        await relay.close()
        await server.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ConsoleStack]:
    async with console_stack(tmp_path) as made:
        yield made


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/setup.sh --dev)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=units(30) * 1000
        )
        try:
            yield launched
        finally:
            await launched.close()


PageFactory = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[PageFactory]:
    """Opens pages (phone or desktop, light or dark) that record script errors and CSP breaks."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    async def make(*, phone: bool = False, dark: bool = False) -> Page:
        context = await browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            device_scale_factor=2 if phone else 1,
            is_mobile=phone,
            has_touch=phone,
            color_scheme="dark" if dark else "light",
        )
        context.set_default_timeout(units(10) * 1000)
        contexts.append(context)
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        return page

    yield make
    for context in contexts:
        await context.close()
    assert not problems, problems


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Saves a screenshot under artifacts/console/ (kept by CI, ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


def publish(path: Path, name: str) -> None:
    """Copies a screenshot to docs/ when ARP_UPDATE_DOCS_SCREENSHOT=1 (for the README)."""
    if os.environ.get("ARP_UPDATE_DOCS_SCREENSHOT") == "1":
        docs = Path(__file__).resolve().parents[2] / "docs"
        shutil.copyfile(path, docs / name)
