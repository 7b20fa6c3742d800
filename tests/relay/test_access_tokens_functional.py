"""Access tokens (issue 14 item 4): secrets separate from the client_id, kept as hashes.

With tokens, only they route to the client (query, header, cookie); the bare client_id and a
subdomain without a token get the 404 of an unknown token; the relay holds hashes only and a
relay that would not honour them is refused by arpc.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from arp import logs
from arp.client.control import Client
from arp.client.identity import load_access_token, save_new_access_token
from arp.protocol.access_tokens import token_hash
from tests.conftest import units
from tests.relay.conftest import Stack, StackFactory, wait_until

ALICE, BOB = "alice-0123456789abcdef", "bob-fedcba9876543210"


async def _status(stack: Stack, path: str, headers: dict[str, str] | None = None) -> int:
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{stack.base}{path}", headers=headers or {}, allow_redirects=False) as reply,
    ):
        await reply.read()
        return reply.status


@pytest.fixture
async def guarded(make_stack: StackFactory) -> Stack:
    stack = await make_stack(client_id=None, domain="relay.test")
    await stack.start_client("Box-1", access_tokens=(ALICE, BOB))
    return stack


async def test_only_access_tokens_route_and_the_client_id_opens_nothing(
    guarded: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = guarded
    caplog.set_level(logging.DEBUG)
    assert await _status(stack, f"/echo?token={ALICE}") == 200
    assert await _status(stack, "/echo", {"X-ARP-Token": BOB}) == 200
    assert await _status(stack, "/echo", {"Cookie": f"arp_token={ALICE}"}) == 200
    assert await _status(stack, "/echo?token=Box-1") == 404  # the bare client_id
    assert await _status(stack, "/echo", {"Host": "box-1.relay.test"}) == 404  # subdomain alone
    assert await _status(stack, "/echo", {"Host": "box-1.relay.test", "X-ARP-Token": BOB}) == 200
    assert await _status(stack, "/echo?token=carol") == 404
    assert not [r for r in caplog.records if ALICE in r.getMessage() or BOB in r.getMessage()]


async def test_a_keep_alive_connection_cannot_switch_to_the_client_id(guarded: Stack) -> None:
    """Per-request routing: a second request on the same connection naming the bare client_id
    gets the same 404, never the client."""
    timeout = aiohttp.ClientTimeout(total=units(10))
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        async with http.get(f"{guarded.base}/echo?token={ALICE}") as reply:
            assert reply.status == 200
        async with http.get(f"{guarded.base}/echo?token=Box-1") as reply:
            assert reply.status == 404


async def test_the_relay_keeps_hashes_only(guarded: Stack) -> None:
    state = guarded.relay.clients["Box-1"]
    assert state.access_hashes == {token_hash(ALICE), token_hash(BOB)}
    assert ALICE not in repr(list(guarded.relay.public.access._by_hash)) + repr(state)


async def test_a_token_of_another_client_is_refused_at_registration(guarded: Stack) -> None:
    other = Client(guarded.client_config("Box-2", access_tokens=(BOB,)))
    await other.start()
    try:
        await wait_until(lambda: other.fatal_error is not None, units(5), "refused for good")
    finally:
        await other.close()
    assert "Box-2" not in guarded.relay.clients


async def test_a_client_without_tokens_still_routes_by_its_id(make_stack: StackFactory) -> None:
    stack = await make_stack()
    assert await _status(stack, "/echo?token=tester") == 200


def test_a_generated_token_is_long_random_private_and_used_next_start(tmp_path: Path) -> None:
    token, path = save_new_access_token(tmp_path / "arpc")
    assert len(token) >= 22 and token.replace("-", "").replace("_", "").isalnum()  # ≥128 bits
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_access_token(tmp_path / "arpc") == token
    again, _ = save_new_access_token(tmp_path / "arpc")  # rotation replaces it
    assert again != token and load_access_token(tmp_path / "arpc") == again


def test_log_files_and_their_folder_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platformdirs  # logs imports it where the folder is chosen

    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "d"))
    old = os.umask(0o022)
    try:
        folder = logs.log_folder("arpc")
        handler = logs.DailyFileHandler(folder, "arpc.log")
        handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None))
        handler.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(handler.current_path.stat().st_mode) == 0o600


async def test_arpc_stops_rather_than_run_on_a_relay_that_ignores_its_tokens(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that keeps no hashes (an older arps ignores the field) would route the bare
    client_id: arpc refuses to be reachable so and stops with why."""
    from arp.relay.access import AccessIndex

    monkeypatch.setattr(AccessIndex, "claim", lambda self, state, hashes: None)
    stack = await make_stack(client_id=None)
    client = Client(stack.client_config("Box-1", access_tokens=(ALICE,)))
    await client.start()
    try:
        await wait_until(lambda: client.fatal_error is not None, units(5), "arpc stops")
    finally:
        await client.close()
    assert "access tokens" in str(client.fatal_error)
