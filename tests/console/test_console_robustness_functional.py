"""The console against hostile or very long input, in Chromium through the relay on loopback."""

from __future__ import annotations

from playwright.async_api import expect

from tests.console.conftest import TOKEN, ConsoleStack, PageFactory, write_claude_answer

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
