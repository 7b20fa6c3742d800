"""The web console in Chromium, through a real relay and arpc in command mode, on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Locator, Page, Route, expect

from arp.command.console import token_page, token_page_headers
from tests.agents.history import trees
from tests.conftest import units
from tests.console.conftest import (
    LONG_TURNS,
    PHONE,
    RICH_ID,
    RICH_TITLE,
    TOKEN,
    ConsoleStack,
    PageFactory,
    publish,
    screenshot,
)


async def open_console(page: Page, stack: ConsoleStack, hash_: str = "") -> None:
    await page.goto(f"{stack.base}/?token={TOKEN}{hash_}")
    await expect(page.locator("header.bar")).to_be_visible()


def sections(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Sections")


async def seqs(page: Page) -> list[int]:
    """The seq of every event the page rendered, in page order (tool results inside calls)."""
    values = await page.locator("#events [data-seq]").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))"
    )
    return [int(v) for v in values]


async def start_run(page: Page, stack: ConsoleStack, prompt: str) -> str:
    """Fills the new-session form and starts it; returns the new session's id."""
    await page.get_by_role("link", name="New").click()
    await page.get_by_label("Project folder").fill(str(stack.project))
    await page.get_by_label("Prompt").fill(prompt)
    await page.get_by_label("Prompt").press("Control+Enter")
    await expect(page).to_have_url(re.compile(r"#/run/"))
    return page.url.rsplit("/", 1)[1]


async def wait_status(stack: ConsoleStack, session_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(units(15)):
        while True:
            code, body = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
            assert code == 200, body
            if body["status"] == status:
                return dict(body)
            await asyncio.sleep(0.05)


async def test_history_through_the_relay_on_a_phone(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page(phone=True)
    await open_console(page, stack)
    # The relay remembered the token in an HttpOnly cookie; the page took it out of the URL.
    assert "token=" not in page.url
    cookies = await page.context.cookies()
    assert [(c["name"], c["value"], c["httpOnly"]) for c in cookies] == [("arp_token", TOKEN, True)]
    await expect(page.get_by_role("heading", name="Agent runs")).to_be_visible()
    await expect(page.get_by_text("No agent runs yet")).to_be_visible()

    await sections(page).get_by_role("link", name="History").click()
    projects = page.locator("#projects details.project summary .name")
    await expect(projects).to_have_text(["/home/dev/webshop", "/home/dev/arp"])  # newest first
    webshop = page.locator("details.project").first
    await expect(webshop.locator("li a .card-title")).to_have_text(
        [RICH_TITLE, "add a coupon field #0"]
    )
    await screenshot(page, "phone-history-light")

    # Search ("/" goes there) narrows projects and lists matching sessions.
    await page.keyboard.press("/")
    await expect(page.get_by_label("Search projects and sessions")).to_be_focused()
    await page.keyboard.type("coupon")
    await expect(page.locator("#matches .results li")).to_have_count(1)
    await expect(projects).to_have_text(["/home/dev/webshop"])
    await page.get_by_label("Search projects and sessions").fill("")
    await expect(projects).to_have_count(2)

    # Other agents have their own tab.
    await page.get_by_role("link", name="Codex").click()
    await expect(projects).to_have_text(["/home/dev/webshop"])
    await page.get_by_role("link", name="Gemini").click()
    await expect(projects).to_have_text(["/home/dev/notes"])

    # A conversation: Markdown, code, a table, the tool call folded with its result inside.
    # The link works without the token: the cookie routes it.
    await page.goto(f"{stack.base}/#/history/claude/{RICH_ID}")
    await expect(page.get_by_role("heading", name=RICH_TITLE)).to_be_visible()
    answer = page.locator("#messages .msg.assistant .md").last
    await expect(answer.locator("h2")).to_have_text("What goes wrong")
    await expect(answer.locator("ol li")).to_have_count(3)
    await expect(answer.locator("pre code")).to_contain_text('samesite="None", secure=True')
    await expect(answer.locator("table td").nth(2)).to_have_text("Safari")
    link = answer.locator("a")
    await expect(link).to_have_attribute("href", "https://example.com/samesite")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    # Markup and script links in the text stay text.
    await expect(answer.locator("img")).to_have_count(0)
    await expect(answer).to_contain_text('<img src=x onerror="alert(1)">')
    await expect(answer).to_contain_text("this link")
    tool = page.locator("#messages details.fold").filter(has_text="Read")
    await expect(tool).not_to_have_attribute("open", "")
    await expect(tool.locator(".tool-result")).to_be_hidden()
    await expect(tool.locator(".state")).to_have_text("✓")
    await tool.locator("summary").click()
    await expect(tool.locator(".tool-result pre")).to_contain_text("set_cookie")
    thinking = page.locator("#messages details.thinking")
    await expect(thinking.locator(".fold-body")).to_be_hidden()
    await expect(page.locator("#messages time").first).to_have_attribute(
        "datetime", "2025-06-01T02:30:00.000Z"
    )
    await screenshot(page, "phone-conversation-light", full_page=True)

    dark = await new_page(phone=True, dark=True)
    await dark.goto(f"{stack.base}/?token={TOKEN}#/history/claude/{RICH_ID}")
    await expect(dark.get_by_role("heading", name=RICH_TITLE)).to_be_visible()
    background = await dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 21)"
    await screenshot(dark, "phone-conversation-dark", full_page=True)

    desktop = await new_page()
    await desktop.goto(f"{stack.base}/?token={TOKEN}#/history/claude/{RICH_ID}")
    await expect(desktop.get_by_role("heading", name=RICH_TITLE)).to_be_visible()
    await (
        desktop.locator("#messages details.fold").filter(has_text="Read").locator("summary").click()
    )
    shot = await screenshot(desktop, "desktop-conversation-light")
    publish(shot, "console.png")

    # A long conversation comes a page at a time.
    await desktop.goto(f"{stack.base}/#/history/claude/{trees.sid(1)}")
    await expect(desktop.get_by_text(f"answer {LONG_TURNS - 1}")).to_have_count(0)
    await desktop.get_by_role("button", name="Load more").click()
    await expect(desktop.get_by_text(f"answer {LONG_TURNS - 1}")).to_have_count(1)
    await expect(desktop.get_by_role("button", name="Load more")).to_be_hidden()
    await expect(desktop.locator("#messages .msg.user")).to_have_count(LONG_TURNS)
    await desktop.go_back()

    # Continue the conversation: the form knows the agent and the folder; the API's refusal of
    # a folder that is not on this machine shows in the form.
    await desktop.get_by_role("link", name="Continue conversation").click()
    await expect(desktop.locator(".notice")).to_contain_text(RICH_ID)
    await expect(desktop.get_by_label("Project folder")).to_have_value("/home/dev/webshop")
    await expect(desktop.get_by_label("Codex")).to_be_disabled()
    await desktop.get_by_label("Prompt").fill("and the cart page?")
    await desktop.get_by_role("button", name="Continue").click()
    await expect(desktop.locator(".form-error")).to_contain_text("/home/dev/webshop")
    await desktop.get_by_label("Project folder").fill(str(stack.project))
    await desktop.get_by_label("Prompt").press("Control+Enter")
    await expect(desktop.locator("#run-status .badge")).to_have_text("completed")
    session_id = desktop.url.rsplit("/", 1)[1]
    _, run = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
    assert run["agent_session_id"] == RICH_ID  # the CLI was told to resume it


async def test_start_stream_survives_a_relay_restart_then_follow_up(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page()
    await open_console(page, stack)
    # Working directories from the history are offered for the project folder.
    await page.get_by_role("link", name="New").click()
    options = page.locator("#dirs option")
    await expect(options).to_have_count(2)
    assert await options.evaluate_all("os => os.map(o => o.value)") == [
        "/home/dev/webshop",
        "/home/dev/arp",
    ]
    await page.get_by_label("Project folder").fill(str(stack.project))
    await page.get_by_label("Model").fill("sonnet")
    await page.get_by_label("Permission mode").select_option("acceptEdits")
    await page.get_by_label("Prompt").fill("Find why checkout fails on Safari and fix it.")
    await screenshot(page, "desktop-new-session-light")
    await page.goto(f"{stack.base}/#/runs")

    pieces = 30
    session_id = await start_run(page, stack, f"events={pieces} sleep={units(0.1)}")
    events = page.locator("#events")
    await expect(page.locator("#run-status .badge")).to_have_text("running")
    await expect(events.locator(".ev.text")).not_to_have_count(0)
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")
    await expect(events.locator(".ev.text").nth(2)).to_be_visible()  # output arrives live

    # The browser's connections all drop while the agent is still printing.
    code, before = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
    assert code == 200 and before["status"] == "running", before
    shown_before = len(await seqs(page))
    await stack.restart_relay()
    await expect(page.locator("#live")).not_to_have_attribute("data-reconnects", "0")

    await expect(page.locator("#run-status .badge")).to_have_text("completed", timeout=15_000)
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    final = await wait_status(stack, session_id, "completed")
    shown = await seqs(page)
    assert shown_before < pieces < len(shown)
    assert shown == list(range(1, final["last_seq"] + 1))  # no gap, no duplicate
    texts = await events.locator(".ev.text").all_inner_texts()
    assert [t for t in texts if t.startswith("piece")] == [f"piece {i}" for i in range(pieces)]
    await screenshot(page, "desktop-run-light")

    # A follow-up resumes the same conversation and streams on from where it was.
    composer = page.get_by_label("Follow-up prompt")
    await composer.fill("events=2")
    await composer.press("Control+Enter")
    await expect(page.locator(".ev.prompt").nth(1)).to_contain_text("events=2")
    await expect(page.locator(".ev.prompt").nth(1).locator(".role")).to_contain_text("run 2")
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    await expect(page.locator("#run-status .badge")).to_have_text("completed")
    final = await wait_status(stack, session_id, "completed")
    assert final["runs"] == 2
    assert await seqs(page) == list(range(1, final["last_seq"] + 1))
    await expect(page.locator("#follow-up")).to_be_enabled()

    # The list shows it at a glance.
    await page.get_by_role("link", name="Runs", exact=True).first.click()
    card = page.locator(f'a.card[data-session="{session_id}"]')
    await expect(card.locator(".badge")).to_have_text("completed")
    await expect(card).to_contain_text("2 runs")
    await screenshot(page, "desktop-runs-light")


async def test_cancel_and_delete_with_confirmation(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page(phone=True)
    await open_console(page, stack)
    session_id = await start_run(page, stack, f"events=200 sleep={units(0.1)}")
    await expect(page.locator("#events .ev.text")).not_to_have_count(0)
    await screenshot(page, "phone-run-running-light")

    # Cancel asks first; keeping it changes nothing.
    await page.get_by_role("button", name="Cancel run").click()
    dialog = page.locator("dialog#confirm")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    code, body = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
    assert body["status"] == "running"

    await page.get_by_role("button", name="Cancel run").click()
    await dialog.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#run-status .badge")).to_have_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    await wait_status(stack, session_id, "cancelled")
    await expect(page.locator("#follow-up")).to_be_enabled()  # a follow-up could resume it

    await page.get_by_role("button", name="Delete").click()
    await dialog.get_by_role("button", name="Keep it").click()
    code, _ = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
    assert code == 200
    await page.get_by_role("button", name="Delete").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page).to_have_url(re.compile(r"#/runs$"))
    await expect(page.get_by_text("No agent runs yet")).to_be_visible()
    code, body = await stack.api("GET", f"/api/sessions/{session_id}?limit=1")
    assert code == 404, body


async def serve_token_page_if_relay_does_not(page: Page, stack: ConsoleStack) -> None:
    """The relay serves `token_page()` for a request naming no client; until it does, the
    browser gets the same bytes and headers at the relay's own origin (everything else the page
    does — its fetch of /api/sessions?token=… — goes to the real relay)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/", allow_redirects=False) as resp,
    ):
        if resp.status == 200 and "text/html" in resp.headers.get("Content-Type", ""):
            return

    async def fulfill(route: Route) -> None:
        await route.fulfill(status=200, headers=token_page_headers(), body=token_page())

    await page.route(f"{stack.base}/", fulfill)


async def test_token_page_checks_the_token_then_opens_the_console(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page(phone=True)
    await serve_token_page_if_relay_does_not(page, stack)
    await page.goto(f"{stack.base}/")
    await expect(page.get_by_role("heading", name="ARP console")).to_be_visible()
    await expect(page.get_by_label("Server address")).to_have_value(
        f"127.0.0.1:{stack.relay.public_port}"
    )
    await expect(page.get_by_label("Token")).to_be_focused()
    await screenshot(page, "phone-token-page-light")

    # Empty, then a wrong token: clear messages, the relay's own words included.
    await page.get_by_role("button", name="Open console").click()
    await expect(page.get_by_role("alert")).to_have_text("Enter a token.")
    await page.get_by_label("Token").fill("nope")
    await page.get_by_label("Token").press("Enter")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("This token did not open a console")
    await expect(alert).to_contain_text("404")
    await expect(alert).to_contain_text("no client is registered with token nope")
    assert page.url == f"{stack.base}/"
    assert await page.context.cookies() == []
    await screenshot(page, "phone-token-page-wrong-token")

    # Another relay's address: the browser goes there, token in hand (no check from here).
    async def other_relay(request: web.Request) -> web.Response:
        return web.Response(text="other relay")

    other = web.Application()
    other.router.add_get("/", other_relay)
    runner = web.AppRunner(other)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await page.get_by_label("Server address").fill(f"127.0.0.1:{port}")
        await page.get_by_label("Token").fill("abc")
        await page.get_by_role("button", name="Open console").click()
        await expect(page).to_have_url(f"http://127.0.0.1:{port}/?token=abc")
        await expect(page.locator("body")).to_have_text("other relay")
    finally:
        await runner.cleanup()

    await page.goto(f"{stack.base}/")
    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_role("button", name="Open console").click()
    await expect(page.get_by_role("heading", name="Agent runs")).to_be_visible()
    assert page.url == f"{stack.base}/#/runs"
    cookies = await page.context.cookies()
    assert [(c["name"], c["value"]) for c in cookies] == [("arp_token", TOKEN)]


async def test_console_shows_the_relay_answer_when_the_client_is_gone(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page()
    await open_console(page, stack)
    await expect(page.get_by_role("heading", name="Agent runs")).to_be_visible()
    await stack.client.close()
    await sections(page).get_by_role("link", name="History").click()
    banner = page.locator("#banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text(f"client {TOKEN} is offline")
    await screenshot(page, "desktop-client-offline")


def test_token_page_escapes_its_message_and_allows_only_its_own_inline_code() -> None:
    page = token_page("no client <b>x</b> & more").decode()
    assert "no client &lt;b&gt;x&lt;/b&gt; &amp; more" in page
    assert '<p id="error" class="error" role="alert">' in page
    assert '<p id="error" class="error" role="alert" hidden>' in token_page().decode()
    csp = token_page_headers()["Content-Security-Policy"]
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    for kind, text in (("script", script), ("style", style)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp
    assert "http" not in csp and "*" not in csp
    assert "unsafe" not in csp


async def test_assets_are_cached_and_confined_to_this_origin(stack: ConsoleStack) -> None:
    async with aiohttp.ClientSession(cookies={"arp_token": TOKEN}) as http:
        async with http.get(f"{stack.base}/") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-cache"
            csp = resp.headers["Content-Security-Policy"]
            etag = resp.headers["ETag"]
            page = await resp.text()
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "connect-src 'self'" in csp and "http" not in csp and "unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        # Every asset the page names is served here, versioned and immutable.
        urls = re.findall(r'(?:src|href)="(/console/[^"]+)"', page)
        assert len(urls) >= 3 and not re.search(r'(?:src|href)="(?:https?:)?//', page)
        for url in urls:
            async with http.get(f"{stack.base}{url}") as resp:
                assert resp.status == 200, url
                assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert "Content-Security-Policy" in resp.headers
        async with http.get(f"{stack.base}/", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with http.get(f"{stack.base}/console/console.js") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-cache"  # unversioned: revalidate
            assert resp.headers["Content-Type"].startswith("text/javascript")
        async with http.get(f"{stack.base}/console/../app.py") as resp:
            assert resp.status == 404
        async with http.get(f"{stack.base}/console/token.js") as resp:
            assert resp.status == 404  # the token page's parts are inlined, not served


async def test_theme_button_cycles_and_is_remembered(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page(dark=True)
    await open_console(page, stack)
    root, theme = page.locator("html"), page.locator("#theme")
    background = "getComputedStyle(document.body).backgroundColor"
    assert await page.evaluate(background) == "rgb(15, 17, 21)"  # the system's dark
    await expect(theme).to_have_attribute("aria-label", "Theme: follow the system")
    await theme.click()
    await expect(root).to_have_attribute("data-theme", "light")
    assert await page.evaluate(background) == "rgb(244, 245, 247)"
    await theme.press("Enter")  # the keyboard works as well as the mouse
    await expect(root).to_have_attribute("data-theme", "dark")
    await page.reload()
    await expect(root).to_have_attribute("data-theme", "dark")
    await expect(theme).to_have_attribute("aria-label", "Theme: dark")
    await theme.click()
    await expect(root).not_to_have_attribute("data-theme", re.compile("."))


async def test_console_lists_the_agents_arpc_serves(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    # The list comes from GET /api/agents (the executors table), not from the script.
    code, served = await stack.api("GET", "/api/agents")
    assert code == 200 and [a["name"] for a in served["agents"]] == ["claude", "codex", "gemini"]
    page = await new_page()
    two = {
        "agents": [
            {"name": "claude", "display_name": "Claude Code"},
            {"name": "codex", "display_name": "Codex CLI"},
        ]
    }

    async def agents(route: Route) -> None:
        await route.fulfill(status=200, json=two)

    await page.route(re.compile(r"/api/agents$"), agents)
    await open_console(page, stack, "#/history/claude")
    await expect(page.get_by_role("link", name="Claude Code")).to_be_visible()
    await expect(page.get_by_role("link", name="Codex CLI")).to_be_visible()
    await expect(page.get_by_role("link", name="Gemini")).to_have_count(0)

    # When the request fails the console still opens, with the agents it knows.
    fallback = await new_page()

    async def broken(route: Route) -> None:
        await route.fulfill(status=500, body="no")

    await fallback.route(re.compile(r"/api/agents$"), broken)
    await open_console(fallback, stack, "#/history/claude")
    await expect(fallback.get_by_role("link", name="Gemini")).to_be_visible()


async def test_an_approval_card_decides_at_phone_size(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    """Ask mode is the form's default: the run's pending approval shows as a card at the top of
    its page and in the header's badge; Allow, tapped at phone size, lets the tool run."""
    target = stack.project / "approved.txt"
    page = await new_page(phone=True)
    await open_console(page, stack)
    await page.get_by_role("link", name="New").click()
    await expect(page.get_by_label("Permission mode")).to_have_value("ask")
    session_id = await start_run(page, stack, f"touch={target}")
    card = page.locator(".approval-card")
    await expect(card).to_have_count(1)
    await expect(card.locator(".what")).to_have_text(f"Bash: touch {target}")
    await expect(card.locator(".left")).to_contain_text("min")
    await expect(page.locator("#inbox")).to_be_visible()
    await expect(page.locator("#inbox-count")).to_have_text("1")
    await screenshot(page, "phone-approval-card")
    allow = card.get_by_role("button", name="Allow", exact=True)
    box = await allow.bounding_box()
    assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= PHONE["width"]
    await allow.tap()
    tapped = asyncio.get_running_loop().time()
    async with asyncio.timeout(units(5)):
        while not target.exists():
            await asyncio.sleep(0.01)
    took = asyncio.get_running_loop().time() - tapped
    assert took < units(1), f"the decision took {took:.2f}s to reach the agent"
    await expect(card).to_have_count(0)
    await wait_status(stack, session_id, "completed")
    await expect(page.locator("#events .ev.approval")).to_have_count(2)
    await expect(page.locator("#events .ev.approval.allow")).to_have_text("Allowed")
    await expect(page.locator("#inbox")).to_be_hidden(timeout=units(10) * 1000)


async def test_an_open_console_notifies_of_a_new_approval(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page()
    # The browser's Notification, recorded (headless Chromium shows none); permission granted.
    await page.add_init_script(
        """
        window.__notes = [];
        window.Notification = class {
          static permission = "granted";
          static requestPermission() { return Promise.resolve("granted"); }
          constructor(title, options) { window.__notes.push({ title, ...options }); }
          close() {}
        };
        """
    )
    await open_console(page, stack)
    await expect(page.get_by_role("heading", name="Agent runs")).to_be_visible()
    await expect(page.locator("#notify")).to_have_count(0)  # permission decided already
    target = stack.project / "noted.txt"
    code, run = await stack.api(
        "POST",
        "/api/sessions",
        {
            "executor": "claude",
            "prompt": f"touch={target}",
            "permissionMode": "ask",
            "projectPath": str(stack.project),
        },
    )
    assert code == 201, run
    await expect(page.locator("#inbox-count")).to_have_text("1", timeout=units(10) * 1000)
    notes = await page.evaluate("window.__notes")
    assert [n["title"] for n in notes] == ["Allow Bash?"]
    assert notes[0]["body"] == f"Bash: touch {target}"
    code, approvals = await stack.api("GET", "/api/approvals")
    [pending] = approvals["approvals"]
    assert notes[0]["tag"] == pending["approval_id"]
    code, _ = await stack.api(
        "POST",
        f"/api/sessions/{run['session_id']}/approvals/{pending['approval_id']}",
        {"decision": "deny"},
    )
    assert code == 200
    await expect(page.locator("#inbox")).to_be_hidden(timeout=units(10) * 1000)
