"""Issue 16 in Chromium at 390×844 through the relay: attach a screenshot to a prompt (thumbnail,
remove before sending), see it in the run, then read what the agent changed in the Changes tab."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

from playwright.async_api import FilePayload, Page, expect

from tests.console.conftest import ConsoleStack, PageFactory, publish, screenshot
from tests.console.test_console_functional import open_console, wait_status


def png(width: int, height: int) -> bytes:
    """A small picture as a PNG (a bug's screenshot: a header bar, a red box on grey)."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            if y < height // 5:
                pixel = (59, 91, 219)
            elif width // 4 < x < 3 * width // 4 and height // 3 < y < 2 * height // 3:
                pixel = (224, 49, 49)
            else:
                pixel = (236, 238, 242)
            row += bytes(pixel)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(repo: Path) -> None:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@localhost")
    git(repo, "config", "user.name", "t")
    (repo / "checkout.py").write_text(
        "def set_cookie(response, token):\n"
        '    response.set_cookie("session", token, samesite="None")\n'
        "    return response\n"
    )
    (repo / "old_notes.txt").write_text("nothing here any more\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "shop")


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0, f"the page scrolls sideways by {width}px"


async def test_attach_a_screenshot_then_read_the_changes_on_a_phone(
    stack: ConsoleStack, new_page: PageFactory, tmp_path: Path
) -> None:
    make_repo(stack.project)
    page = await new_page(phone=True)
    await open_console(page, stack)
    await page.get_by_role("link", name="New").click()
    await page.get_by_label("Project folder").fill(str(stack.project))
    await page.get_by_label("Permission mode").select_option("acceptEdits")
    target = stack.project / "checkout.py"
    await page.get_by_label("Prompt").fill(
        "Checkout fails on Safari, see the screenshot. "
        f"events=1 writefile={target} rmfile={stack.project}/old_notes.txt"
    )
    picker = page.locator("#new-attachments-input")
    image = png(240, 160)
    payload: list[FilePayload] = [
        {"name": "safari.png", "mimeType": "image/png", "buffer": image},
        {"name": "oops.txt", "mimeType": "text/plain", "buffer": b"remove me\n"},
    ]
    await picker.set_input_files(payload)
    items = page.locator("#new-attachments .attach-item")
    await expect(items).to_have_count(2)
    # Removed before sending: only the screenshot goes.
    await page.get_by_role("button", name="Remove oops.txt").click()
    await expect(items).to_have_count(1)
    thumb = items.first.locator("img.thumb")
    await expect(thumb).to_be_visible()
    assert await thumb.evaluate("img => img.naturalWidth") == 240
    await no_sideways_scroll(page)
    await page.evaluate("document.getElementById('prompt').scrollIntoView()")
    publish(await screenshot(page, "phone-attach"), "console-attach.png")

    await page.get_by_label("Prompt").press("Control+Enter")
    await expect(page).to_have_url(re.compile(r"#/run/"))
    session_id = page.url.rsplit("/", 1)[1]
    sent = page.locator(".ev.prompt img.thumb")
    await expect(sent).to_have_count(1)
    await expect(sent).to_be_visible()
    await page.wait_for_function(
        "() => document.querySelector('.ev.prompt img.thumb').naturalWidth === 240"
    )
    final = await wait_status(stack, session_id, "completed")
    assert [(a["name"], a["size"]) for a in final["attachments"]] == [("safari.png", len(image))]

    await page.get_by_role("tab", name="Changes").click()
    files = page.locator("#changes-files .change")
    await expect(files).to_have_count(2)
    await expect(page.locator("#changes-summary")).to_contain_text("2 files changed")
    edited = files.filter(has_text="checkout.py")
    await expect(edited.locator(".change-mark")).to_have_text("M")
    await expect(edited.locator(".counts")).to_have_text("+1−3")
    await expect(edited.locator(".dl.del").first).to_contain_text("def set_cookie")
    await expect(edited.locator(".dl.add")).to_contain_text(["+written by the fake"])
    removed = files.filter(has_text="old_notes.txt")
    await expect(removed.locator(".change-mark")).to_have_text("D")
    await no_sideways_scroll(page)
    await page.evaluate("document.querySelector('.run-tabs').scrollIntoView(); scrollBy(0, -64)")
    publish(await screenshot(page, "phone-changes"), "console-changes.png")

    # Back to the output: the run's events are there as they were.
    await page.get_by_role("tab", name="Output").click()
    await expect(page.locator("#events")).to_be_visible()
    await expect(page.locator("#changes")).to_be_hidden()
