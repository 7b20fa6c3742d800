"""Web Push in Chromium (issue 15): "Notify me" registers the console's service worker and hands
arpc the browser's subscription, and the worker shows a pushed note as a notification.

The push is delivered through the DevTools protocol (``ServiceWorker.deliverPushMessage``), and
``PushManager.subscribe`` is replaced in the page by one that answers a subscription to a
loopback endpoint: Chromium's own would register with its vendor's push service, and nothing in
these tests may leave 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from playwright.async_api import Page, expect

from arp.command.push import PUSH_KEY
from tests.conftest import units
from tests.console.conftest import TOKEN, ConsoleStack, PageFactory

ENDPOINT = "http://127.0.0.1:9/push/browser-1"
"""Where the stubbed subscription says pushes go (nothing is sent there in this test)."""
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"

STUB_SUBSCRIBE = """
(() => {
  const subscription = (key) => ({
    endpoint: ENDPOINT,
    options: { applicationServerKey: key, userVisibleOnly: true },
    toJSON() {
      return { endpoint: this.endpoint, expirationTime: null, keys: KEYS };
    },
    unsubscribe: async () => true,
  });
  PushManager.prototype.getSubscription = async function () { return null; };
  PushManager.prototype.subscribe = async function (options) {
    window.__pushKey = Array.from(new Uint8Array(options.applicationServerKey));
    return subscription(options.applicationServerKey.buffer);
  };
})();
""".replace("ENDPOINT", json.dumps(ENDPOINT)).replace(
    "KEYS", json.dumps({"p256dh": P256DH, "auth": AUTH})
)

NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, data: n.data, tag: n.tag }));
}"""


async def _registration_id(page: Page, origin: str) -> tuple[Any, str]:
    """A DevTools session on ``page`` and the id of the service worker registered for it."""
    cdp = await page.context.new_cdp_session(page)
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_update(event: dict[str, Any]) -> None:
        for registration in event.get("registrations", []):
            mine = registration["scopeURL"].startswith(origin) and not registration["isDeleted"]
            if mine and not found.done():
                found.set_result(registration["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", on_update)
    await cdp.send("ServiceWorker.enable")
    async with asyncio.timeout(units(10)):
        return cdp, await found


async def _push_until_shown(
    page: Page, cdp: Any, origin: str, registration_id: str, note: dict[str, str]
) -> list[dict[str, Any]]:
    """Push `note` to the worker through DevTools and return the notifications once one with
    its tag is shown. With both cores busy, Chromium now and then drops a push delivered this
    way (about 1 in 15 runs: the worker fetches the icon, yet no notification is listed, while
    a push event dispatched inside the worker at that moment shows at once), so an unanswered
    push is delivered again; the tag makes a repeat replace, never add, a notification."""
    tag = f"{note['event']}:{note['session_id']}"
    for _ in range(3):
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": origin, "registrationId": registration_id, "data": json.dumps(note)},
        )
        deadline = asyncio.get_running_loop().time() + units(4)
        while asyncio.get_running_loop().time() < deadline:
            shown: list[dict[str, Any]] = await page.evaluate(NOTIFICATIONS)
            if any(n["tag"] == tag for n in shown):
                return shown
            await asyncio.sleep(0.05)
    raise AssertionError(f"no notification tagged {tag!r} after three pushes")


async def test_notify_me_subscribes_and_the_worker_shows_a_pushed_note(
    stack: ConsoleStack, new_page: PageFactory
) -> None:
    page = await new_page(phone=True)
    await page.add_init_script(STUB_SUBSCRIBE)
    await page.goto(f"{stack.base}/?token={TOKEN}#/runs")
    button = page.locator("#notify")
    await expect(button).to_be_visible()
    await page.context.grant_permissions(["notifications"], origin=stack.base)
    await button.click()
    await expect(button).to_be_hidden()

    # arpc keeps the browser's subscription, made with the key it serves.
    assert stack.server.app is not None
    push = stack.server.app[PUSH_KEY]
    async with asyncio.timeout(units(10)):
        while not push.subscriptions:
            await asyncio.sleep(0.05)
    [kept] = push.subscriptions
    assert (kept.endpoint, kept.p256dh, kept.auth) == (ENDPOINT, P256DH, AUTH)
    _, key = await stack.api("GET", "/api/push/key")
    padded = key["public_key"] + "=" * (-len(key["public_key"]) % 4)
    assert await page.evaluate("window.__pushKey") == list(base64.urlsafe_b64decode(padded))

    # The worker controls the console's scope and shows what is pushed to it.
    scope = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == f"{stack.base}/"
    cdp, registration_id = await _registration_id(page, stack.base)
    note = {
        "event": "approval_requested",
        "session_id": "s-42",
        "title": "Claude asks: Bash: rm -rf build/",
        "message": "Allow or deny before 12:00. Task: clean up",
        "url": f"{stack.base}/#/run/s-42",
    }
    shown = await _push_until_shown(page, cdp, stack.base, registration_id, note)
    [notification] = shown
    assert notification["title"] == note["title"]
    assert notification["body"] == note["message"]
    assert notification["tag"] == "approval_requested:s-42"
    assert notification["data"]["url"] == note["url"]

    # A note whose url names another origin opens the run in the worker's own scope instead.
    elsewhere = {**note, "event": "completed", "url": "https://elsewhere.example/#/run/s-42"}
    shown = await _push_until_shown(page, cdp, stack.base, registration_id, elsewhere)
    assert len(shown) == 2
    completed = next(n for n in shown if n["tag"] == "completed:s-42")
    assert completed["data"]["url"] == f"{stack.base}/#/run/s-42"
