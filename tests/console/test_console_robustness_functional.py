"""The console against hostile or very long input, in Chromium through the relay on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from playwright.async_api import Page, Route, expect

from arp.command.console import token_page, token_page_headers
from tests.console.conftest import (
    RICH_ID,
    RICH_TITLE,
    TOKEN,
    ConsoleStack,
    PageFactory,
    console_stack,
    write_claude_answer,
)
from tests.console.test_console_functional import open_console, seqs, start_run, wait_status

HOSTILE_ID = "0b1c2d3e-4f50-4617-8899-aabbccddeeff"
N = 4000
HOSTILE_LINES = [
    # Each of these froze the tab for seconds to minutes with the old regular expressions.
    "# a" + " " * N + "x",  # heading: cubic in the spaces
    "a" + "`" * N + "a",  # inline code: an unmatched run of backticks
    "x " + "`" * N,  # (a line of backticks alone would open a code block)
    "**a" * (N // 3),  # bold openers without a closer
    "[" * N + "]",  # link openers
    "- " + " " * N + "a\u2028b",  # list item with a line separator
    "a" + " " * N + "b",  # trailing-spaces check
    "> " * (N // 2) + "deep",  # nested quotes
    "a|b",
    " " * N + "x",  # table separator check
    "http://" + "." * N,
    "all rendered",
]


async def test_hostile_markdown_renders_without_freezing_the_page(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    write_claude_answer(
        stack.home / ".claude",
        "/home/dev/hostile",
        HOSTILE_ID,
        "render this",
        "\n\n".join(HOSTILE_LINES),
        12000.0,
    )
    page = await new_page()
    await page.goto(f"{stack.base}/?token={TOKEN}#/history/claude/{HOSTILE_ID}")
    # A functional check that the render finishes, not a timing: a page stuck in a regular
    # expression never gets here (the old parser needed minutes for this message).
    answer = page.locator("#messages .msg.assistant .md")
    await expect(answer.get_by_text("all rendered")).to_be_visible(timeout=10_000)
    await expect(answer.locator("h1")).to_have_text("a" + " " * N + "x", use_inner_text=False)
    await expect(answer.locator("blockquote")).to_have_count(8)  # nesting stops there
    await expect(answer.locator("blockquote").first).to_contain_text("deep")
    await expect(answer.locator("p").first).to_have_text("a" + "`" * N + "a")
    # The page still answers.
    assert await page.evaluate("1 + 1") == 2


KEEP_EVENTS = 2000
"""What console.js keeps of a run (KEEP_EVENTS there); EARLIER_PAGE (500) more per click."""


async def items(page: Page) -> list[int]:
    """The seq of each top-level item of the run's list (a call holds its result inside)."""
    values = await page.locator("#events > li").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))"
    )
    return [int(v) for v in values]


async def test_a_long_run_keeps_its_newest_events_and_shows_earlier_ones_on_request(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page()
    await open_console(page, stack)
    pieces = KEEP_EVENTS + 700
    # The fake prints nothing until the page follows the run. Without the gate, a busy machine
    # let it print everything before the run page first asked for the run's state: the page
    # then fetched only the newest KEEP_EVENTS events (as a reload does), and as the Bash call's
    # result joins its call's item, that made KEEP_EVENTS - 1 items, not the KEEP_EVENTS a page
    # that watched live keeps (1999 of 2000).
    gate = stack.home / "gate"
    session_id = await start_run(page, stack, f"fast={pieces} gate={gate}")
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")
    gate.touch()
    await expect(page.locator("#run-status .badge")).to_have_text("completed", timeout=20_000)
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    final = await wait_status(stack, session_id, "completed")
    last = final["last_seq"]
    assert last > KEEP_EVENTS + 700

    # Watched live from the start: the oldest items left as the newest arrived.
    await expect(page.locator("#events > li")).to_have_count(KEEP_EVENTS)
    shown = await seqs(page)
    assert shown == list(range(shown[0], last + 1))  # the newest, no gap, no duplicate
    earlier = page.get_by_role("button", name="Show earlier")
    await expect(earlier).to_be_visible()

    # A reload fetches only the newest ones.
    await page.reload()
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    await expect(page.locator("#events [data-seq]")).to_have_count(KEEP_EVENTS)
    assert await seqs(page) == list(range(last - KEEP_EVENTS + 1, last + 1))
    assert (await items(page))[0] == last - KEEP_EVENTS + 1

    # Earlier pages come back above, joined without gap or duplicate, until the start.
    await earlier.click()
    await expect(page.locator("#events [data-seq]")).to_have_count(KEEP_EVENTS + 500)
    assert await seqs(page) == list(range(last - KEEP_EVENTS - 499, last + 1))
    await earlier.click()
    await expect(earlier).to_be_hidden()
    await expect(page.get_by_text("are not shown")).to_be_hidden()
    assert await seqs(page) == list(range(1, last + 1))
    await expect(page.locator("#events .ev.text").first).to_have_text("fast piece 0")
    # The tool call near the end holds its result.
    tool = page.locator("#events details.fold").filter(has_text="Bash")
    await expect(tool.locator(".state")).to_have_text("✓")


async def test_a_history_link_naming_no_agent_sends_no_request(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    """`#/history/<agent>/<id>` once put <agent> into the API path unchecked, so a crafted link
    could aim the page's GET and its Delete button at any other path of this origin."""
    code, run = await stack.api(
        "POST",
        "/api/sessions",
        {"executor": "claude", "prompt": "events=1", "projectPath": str(stack.project)},
    )
    assert code == 201, run
    target = run["session_id"]
    page = await new_page()
    await open_console(page, stack)
    paths: list[str] = []
    page.on("request", lambda request: paths.append(request.url.split("://", 1)[1]))
    crafted = f"..%2Fsessions%2F{target}%3F"
    await page.goto(f"{stack.base}/#/history/{crafted}/x")
    await expect(page.get_by_text("There is no agent called")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await page.goto(f"{stack.base}/#/history/{crafted}")
    await expect(page.get_by_text("There is no agent called")).to_be_visible()
    assert not [p for p in paths if target in p], paths
    code, _ = await stack.api("GET", f"/api/sessions/{target}?limit=1")
    assert code == 200
    # The real agents' links still work, ids encoded.
    await page.goto(f"{stack.base}/#/history/claude/{RICH_ID}")
    await expect(page.get_by_role("heading", name=RICH_TITLE)).to_be_visible()


async def test_token_page_on_https_asks_before_sending_the_token_over_http(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page()
    secure = f"https://127.0.0.1:{stack.relay.public_port}/"

    async def fulfill(route: Route) -> None:  # the page as an https relay would serve it
        await route.fulfill(status=200, headers=token_page_headers(), body=token_page())

    await page.route(secure, fulfill)

    async def plain_relay(request: web.Request) -> web.Response:
        return web.Response(text=f"plain relay got {request.query.get('token')}")

    app = web.Application()
    app.router.add_get("/", plain_relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await page.goto(secure)
        await page.get_by_label("Token").fill("secret")
        await page.get_by_label("Server address").fill(f"http://127.0.0.1:{port}")
        await page.get_by_role("button", name="Open console").click()
        alert = page.get_by_role("alert")
        await expect(alert).to_contain_text("plain http")
        assert page.url == secure  # nothing sent yet
        # Another address asks again.
        await page.get_by_label("Server address").fill(f"http://localhost:{port}")
        await expect(page.get_by_role("button", name="Open console")).to_be_visible()
        await page.get_by_role("button", name="Open console").click()
        await expect(alert).to_contain_text("http://localhost")
        assert page.url == secure
        await page.get_by_label("Server address").fill(f"http://127.0.0.1:{port}")
        await page.get_by_role("button", name="Open console").click()
        await page.get_by_role("button", name="Send over http anyway").click()
        await expect(page).to_have_url(f"http://127.0.0.1:{port}/?token=secret")
        await expect(page.locator("body")).to_have_text("plain relay got secret")
    finally:
        await runner.cleanup()


async def test_console_works_with_the_command_api_token_check_on(
    tmp_path: Path, new_page: PageFactory
) -> None:
    """arpc runs the command API with the client's token required; the console, opened with
    ?token= through the relay, carries it in the relay's cookie on every fetch and stream."""
    async with console_stack(tmp_path, token=TOKEN) as stack:
        async with aiohttp.ClientSession() as http:  # the check is on: no token, no answer
            url = f"http://127.0.0.1:{stack.server.port}/api/sessions"
            async with http.get(url) as resp:
                assert resp.status == 401, await resp.text()
        page = await new_page(phone=True)
        await open_console(page, stack)
        await expect(page.get_by_text("No agent runs yet")).to_be_visible()
        await page.goto(f"{stack.base}/#/history/claude/{RICH_ID}")
        await expect(page.get_by_role("heading", name=RICH_TITLE)).to_be_visible()
        session_id = await start_run(page, stack, "events=3")
        await expect(page.locator("#run-status .badge")).to_have_text("completed")
        await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
        final = await wait_status(stack, session_id, "completed")
        assert await seqs(page) == list(range(1, final["last_seq"] + 1))
        composer = page.get_by_label("Follow-up prompt")
        await composer.fill("events=1")
        await composer.press("Control+Enter")
        await expect(page.locator(".ev.prompt").nth(1)).to_contain_text("events=1")
        await expect(page.locator("#live")).to_have_attribute("data-state", "ended")
        await page.get_by_role("button", name="Delete").click()
        await page.locator("dialog#confirm").get_by_role("button", name="Delete").click()
        await expect(page.get_by_text("No agent runs yet")).to_be_visible()


def fake_event(seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "ts": 1_750_000_000 + seq, **fields}


async def test_earlier_events_join_a_result_shown_alone_and_hostile_output_streams(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    """A run served by the test itself (routes in the browser): its call sits just before the
    newest 2,000 events and its result just inside them, and its output is hostile Markdown."""
    run_id = "run-served-by-the-test"
    last = KEEP_EVENTS + 5
    events = [fake_event(seq, "text", text=f"early {seq}") for seq in range(1, 5)]
    events.append(
        fake_event(5, "tool_call", tool_id="T1", tool_name="Grep", tool_input={"pattern": "x"})
    )
    events.append(fake_event(6, "tool_result", tool_id="T1", tool_name="Grep", text="found it"))
    hostile = HOSTILE_LINES * (last // len(HOSTILE_LINES) + 1)
    events += [fake_event(seq, "text", text=hostile[seq]) for seq in range(7, last + 1)]
    state = {
        "session_id": run_id,
        "status": "completed",
        "executor": "claude",
        "prompt": "served by the test",
        "project_path": str(stack.project),
        "created_at": 1_750_000_000,
        "runs": 1,
        "last_seq": last,
    }
    asked: list[str] = []

    async def serve(route: Route) -> None:
        url = route.request.url
        asked.append(url)
        query = parse_qs(urlsplit(url).query)
        after = int(query.get("after", ["0"])[0])
        if "/events" in url:
            body = "".join(
                f"id: {e['seq']}\ndata: {json.dumps(e)}\n\n" for e in events if e["seq"] > after
            )
            body += f"event: end\ndata: {json.dumps(state)}\n\n"
            await route.fulfill(status=200, content_type="text/event-stream", body=body)
            return
        limit = int(query.get("limit", ["1000"])[0])
        page_events = [e for e in events if e["seq"] > after][:limit]
        await route.fulfill(status=200, json={**state, "events": page_events})

    page = await new_page()
    await open_console(page, stack)
    await page.route(re.compile(rf"/api/sessions/{run_id}"), serve)
    await page.goto(f"{stack.base}/#/run/{run_id}")
    await expect(page.locator("#live")).to_have_attribute("data-state", "ended", timeout=10_000)
    streams = [u for u in asked if "/events" in u]
    assert streams[0].endswith(f"/events?after={last - KEEP_EVENTS}"), streams
    await expect(page.locator("#events [data-seq]")).to_have_count(KEEP_EVENTS)
    alone = page.locator("#events > li[data-kind=tool_result]")
    await expect(alone).to_have_count(1)  # its call is not on the page yet
    await expect(page.locator("#events h1").first).to_have_text("a" + " " * N + "x")

    await page.get_by_role("button", name="Show earlier").click()
    await expect(page.get_by_role("button", name="Show earlier")).to_be_hidden()
    assert await seqs(page) == list(range(1, last + 1))
    await expect(alone).to_have_count(0)
    call = page.locator("#events > li[data-kind=tool_call]")
    await expect(call.locator(".state")).to_have_text("✓")
    await call.locator("summary").click()
    await expect(call.locator(".tool-result")).to_contain_text("found it")
