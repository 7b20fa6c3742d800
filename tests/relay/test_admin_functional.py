"""`arps --admin-port`: metrics that follow real traffic, its token, and the dashboard in Chromium.

A relay, a client and a local service in-process on loopback (`tests/relay/conftest.py`); the
admin port is scraped over a real socket and its text parsed with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from arp.client.control import Client
from arp.relay.admin import CSP, AdminServer
from arp.relay.settings import AdminSettings
from tests.conftest import units
from tests.relay.conftest import Stack, StackFactory, wait_until

TOKEN = "admin-s3cret"
AdminFactory = Callable[..., Awaitable[AdminServer]]


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[AdminServer]:
    server = AdminServer(stack.relay, AdminSettings(port=0))
    await server.start()
    yield server
    await server.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(http: aiohttp.ClientSession, admin: AdminServer, **kwargs: object) -> str:
    async with http.get(f"http://127.0.0.1:{admin.port}/metrics", **kwargs) as reply:  # type: ignore[arg-type]
        assert reply.status == 200, await reply.text()
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await reply.text()


async def test_metrics_follow_real_traffic(stack: Stack, admin: AdminServer) -> None:
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        before = samples(await scrape(http, admin))
        assert before[("arps_clients", (("state", "online"),))] == 1
        assert before[("arps_client_online", (("client", "tester"),))] == 1
        assert before[("arps_client_connections_total", (("client", "tester"),))] == 0

        body = b"x" * 5000
        # One connection per request, so each ends (and is counted) before the scrape.
        closing = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=closing) as traffic:
            for _ in range(3):
                async with traffic.post(f"{stack.base}/echo?token=tester", data=body) as reply:
                    assert reply.status == 200
                    answer = await reply.read()
            async with traffic.get(f"{stack.base}/anything?token=nobody") as reply:
                assert reply.status == 404  # the relay's own answer
        await wait_until(
            lambda: stack.relay.clients["tester"].stats.open == 0, units(5), "connections end"
        )
        after = samples(await scrape(http, admin))

    client = (("client", "tester"),)
    assert after[("arps_client_connections_total", client)] == 3
    assert after[("arps_tunnels_busy", client)] == 0
    assert after[("arps_tunnels_pooled", client)] >= 1
    # Three requests of 5000 bytes of body went in, three echoes of it came out.
    assert after[("arps_client_bytes_in_total", client)] >= 3 * len(body)
    assert after[("arps_client_bytes_out_total", client)] >= 3 * len(answer)
    assert after[("arps_requests_total", (("source", "relay"), ("status_class", "4xx")))] == 1
    assert after[("arps_requests_total", (("source", "service"), ("status_class", "2xx")))] == 3
    assert after[("arps_public_connections", ())] == 0
    assert after[("arps_tunnel_wait_seconds_count", ())] >= 0


async def test_slow_path_waits_and_refused_registrations_are_counted(
    make_stack: StackFactory, admin_for: AdminFactory
) -> None:
    stack = await make_stack(pool_size=0)
    admin = await admin_for(stack)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http:
        async with http.get(f"{stack.base}/echo?token=tester") as reply:
            assert reply.status == 200
        # A second client under a name already live is refused ("in use").
        second = Client(stack.client_config("tester"))
        await second.start()
        try:
            await wait_until(
                lambda: stack.relay.public.stats.refused.get("in_use", 0) >= 1,
                units(5),
                "the refusal is counted",
            )
        finally:
            await second.close()
        got = samples(await scrape(http, admin))
    assert got[("arps_tunnel_wait_seconds_count", ())] >= 1
    assert got[("arps_registrations_refused_total", (("reason", "in_use"),))] >= 1


@pytest.fixture
async def admin_for() -> AsyncIterator[AdminFactory]:
    servers: list[AdminServer] = []

    async def make(stack: Stack, token: str | None = None) -> AdminServer:
        server = AdminServer(stack.relay, AdminSettings(port=0, token=token))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


async def test_the_token_is_wanted_when_set(stack: Stack, admin_for: AdminFactory) -> None:
    admin = await admin_for(stack, TOKEN)
    base = f"http://127.0.0.1:{admin.port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(10))) as http:
        for path in ("/metrics", "/api/clients", "/"):
            async with http.get(base + path) as reply:
                assert reply.status == 401, path
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await reply.json())["error"]["status"] == 401
            async with http.get(base + path, headers={"Authorization": "Bearer wrong"}) as reply:
                assert reply.status == 401, path
        async with http.get(
            base + "/api/clients", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as reply:
            assert reply.status == 200
            data = await reply.json()
        assert [c["client_id"] for c in data["clients"]] == ["tester"]
        assert data["clients"][0]["online"] is True
        async with http.get(f"{base}/metrics?token={TOKEN}") as reply:
            assert reply.status == 200
        # The page's own script and style carry no data: no token needed to load them.
        async with http.get(base + "/static/dashboard.js") as reply:
            assert reply.status == 200
        async with http.post(f"{base}/metrics?token={TOKEN}") as reply:
            assert reply.status == 405


def test_off_loopback_without_a_token_is_refused_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arp.relay", "--admin-port", "0", "--admin-bind", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=units(30),
        check=False,
    )
    assert result.returncode == 2, result
    assert "--admin-token" in result.stderr and "not loopback" in result.stderr
    with pytest.raises(ValueError, match="admin-token"):
        AdminSettings(port=0, bind="::")
    AdminSettings(port=0, bind="0.0.0.0", token=TOKEN)  # with a token it may


async def test_dashboard_shows_the_client_and_breaks_no_csp(
    stack: Stack, admin_for: AdminFactory
) -> None:
    from playwright.async_api import ConsoleMessage, async_playwright

    from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, PHONE

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/setup.sh --dev)")
    admin = await admin_for(stack, TOKEN)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=units(30) * 1000
        )
        try:
            context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            context.set_default_timeout(units(10) * 1000)
            page = await context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            response = await page.goto(f"http://127.0.0.1:{admin.port}/?token={TOKEN}")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CSP
            card = page.locator('li.client[data-client="tester"]')
            await card.wait_for()
            assert "online" in await card.locator(".status").inner_text()
            assert "idle tunnel" in await card.inner_text()
            assert "1 online" in await page.locator("#summary").inner_text()
            # It refreshes itself: a client that leaves shows as offline without a reload.
            for client in stack.clients:
                await client.close()
            await card.locator(".status.offline").wait_for(timeout=units(10) * 1000)
            # Nothing overflows a phone's width.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"]
        finally:
            await browser.close()
    assert not problems, problems


async def test_api_clients_is_the_dashboard_data(stack: Stack, admin: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    writer.write(b"GET /api/clients HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(units(5)):
        raw = await reader.read(-1)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    (client,) = json.loads(body)["clients"]
    assert set(client) >= {
        "client_id", "online", "last_seen", "pool", "open", "bytes_in", "bytes_out", "tcp_ports"
    }  # fmt: skip
