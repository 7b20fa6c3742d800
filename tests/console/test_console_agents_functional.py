"""The console marks agents whose CLI arpc did not find, says what to do, and never starts a new
run on one by default (a phone user cannot fix a missing CLI from the phone, but can read how)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.console.conftest import TOKEN, PageFactory, console_stack


async def test_a_missing_agent_is_marked_explained_and_not_the_default(
    tmp_path: Path, new_page: PageFactory
) -> None:
    # arpc was pointed at a claude that is not there: claude is missing, codex and gemini found.
    async with console_stack(tmp_path, command_path=str(tmp_path / "no-claude-here")) as stack:
        code, served = await stack.api("GET", "/api/agents")
        assert code == 200
        found = {a["name"]: a["found"] for a in served["agents"]}
        assert found == {"claude": False, "codex": True, "gemini": True}

        page = await new_page(phone=True)
        await page.goto(f"{stack.base}/?token={TOKEN}#/new")
        claude = page.locator("label", has=page.locator("input[value=claude]"))
        codex = page.locator("input[name=executor][value=codex]")
        await expect(claude).to_contain_text("not installed")
        # The first agent that can run is the default, not the missing Claude.
        await expect(codex).to_be_checked()
        note = page.locator(".missing-note")
        await expect(note).to_be_hidden()

        await claude.click()
        await expect(note).to_be_visible()
        await expect(note).to_contain_text("Claude is not installed on the computer running arpc")
        await expect(note).to_contain_text("npm install -g @anthropic-ai/claude-code")
        await page.locator("label", has=page.locator("input[value=gemini]")).click()
        await expect(note).to_be_hidden()
