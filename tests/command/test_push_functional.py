"""Web Push (issue 15): what arpc pushes reaches a loopback push service, decrypts per RFC 8291
and carries a VAPID token (RFC 8292) that verifies against ``/api/push/key``.

The decryption here is written from the RFCs with `cryptography`'s primitives (ECDH P-256,
HKDF-SHA256, AES-128-GCM), not with the library arpc encrypts with. Nothing leaves 127.0.0.1:
the subscriptions' endpoints are the local test service's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from multidict import CIMultiDict

from arp.agents.session_types import StartRequest
from arp.command.push import PUSH_KEY, PushService
from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config
from tests.conftest import units


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """What a browser holds for one subscription: its ECDH key pair and auth secret."""

    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription(self, endpoint: str) -> dict[str, Any]:
        keys = {"p256dh": b64url(self.public), "auth": b64url(self.auth)}
        return {"endpoint": endpoint, "expirationTime": None, "keys": keys}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 §3.4 and RFC 8188 §2: the aes128gcm content coding, read back."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender = body[21 : 21 + idlen]  # the application server's ephemeral public key
        records = body[21 + idlen :]
        assert idlen == 65 and rs >= 18
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender)
        shared = self.private.exchange(ec.ECDH(), peer)
        key_info = b"WebPush: info\x00" + self.public + sender
        ikm = HKDF(hashes.SHA256(), 32, salt=self.auth, info=key_info).derive(shared)
        cek = HKDF(hashes.SHA256(), 16, salt=salt, info=b"Content-Encoding: aes128gcm\x00")
        nonce = HKDF(hashes.SHA256(), 12, salt=salt, info=b"Content-Encoding: nonce\x00")
        key, base_nonce = cek.derive(ikm), nonce.derive(ikm)
        plain = b""
        for index, start in enumerate(range(0, len(records), rs)):
            record = records[start : start + rs]
            iv = (int.from_bytes(base_nonce, "big") ^ index).to_bytes(12, "big")
            padded = AESGCM(key).decrypt(iv, record, None)
            content = padded.rstrip(b"\x00")
            last = start + rs >= len(records)
            assert content[-1:] == (b"\x02" if last else b"\x01"), "the padding delimiter"
            plain += content[:-1]
        return plain


def verify_vapid(authorization: str, public_key: str, audience: str) -> dict[str, Any]:
    """RFC 8292: ``vapid t=<JWT>, k=<key>``; the ES256 JWT verifies against the key."""
    scheme, _, params = authorization.partition(" ")
    assert scheme.lower() == "vapid"
    parts = dict(item.strip().split("=", 1) for item in params.split(","))
    assert parts["k"] == public_key, "the header names the key /api/push/key gives"
    head, claims, signature = parts["t"].split(".")
    assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": "ES256"}
    raw = unb64url(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises when bad
    decoded: dict[str, Any] = json.loads(unb64url(claims))
    assert decoded["aud"] == audience
    assert time.time() < decoded["exp"] <= time.time() + 24 * 3600
    assert decoded["sub"].startswith(("mailto:", "https:"))
    return decoded


class PushEndpoint:
    """A loopback push service: keeps each post; ``/gone/…`` answers 410 as for an expired one."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Mapping[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, CIMultiDict(request.headers), await request.read()))
        self.arrived.set()
        if request.path.startswith("/odd/"):  # not the UTF-8 it says it is
            return web.Response(status=201, body=b"\xff\xfe\xfa", content_type="text/plain")
        return web.Response(status=410 if request.path.startswith("/gone/") else 201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])

    async def wait_for(self, count: int) -> list[tuple[str, Mapping[str, str], bytes]]:
        async with asyncio.timeout(units(10)):
            while len(self.posts) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.posts


@pytest.fixture
async def endpoint() -> AsyncIterator[PushEndpoint]:
    service = PushEndpoint()
    await service.start()
    yield service
    assert service.runner is not None
    await service.runner.cleanup()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CommandServer]:
    async with CommandServer(fake_config(tmp_path)) as command:
        yield command


def push_service(server: CommandServer) -> PushService:
    assert server.app is not None
    return server.app[PUSH_KEY]


async def call(
    server: CommandServer, method: str, path: str, body: Any = None, **headers: str
) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_a_push_decrypts_to_the_note_and_its_vapid_token_verifies(
    server: CommandServer, endpoint: PushEndpoint, tmp_path: Path
) -> None:
    status, key = await call(server, "GET", "/api/push/key")
    assert status == 200 and len(unb64url(key["public_key"])) == 65
    browser = Browser()
    subscription = browser.subscription(endpoint.origin + "/p/1")
    status, kept = await call(
        server, "POST", "/api/push/subscriptions", subscription, Origin=server.url
    )
    assert status == 201 and kept["subscriptions"] == 1
    target = tmp_path / "pushed.txt"
    session = await server.manager.start_session(
        StartRequest("claude", f"touch={target}\nplease", permission_mode="ask")
    )
    [(path, headers, body)] = await endpoint.wait_for(1)
    assert path == "/p/1"
    assert headers["Content-Encoding"] == "aes128gcm" and int(headers["TTL"]) > 0
    assert headers["Urgency"] == "high"
    verify_vapid(headers["Authorization"], key["public_key"], endpoint.origin)
    note = json.loads(browser.decrypt(body))
    assert set(note) == {"event", "session_id", "title", "message", "url"}
    assert note["event"] == "approval_requested" and note["session_id"] == session.session_id
    assert note["title"] == f"Claude asks: Bash: touch {target}"
    # No public URL known: the run in the console the browser subscribed from.
    assert note["url"] == f"{server.url}/#/run/{session.session_id}"
    [pending] = server.manager.approvals()
    server.manager.decide(session.session_id, pending.approval_id, "allow")
    _, headers, body = (await endpoint.wait_for(2))[1]
    assert headers["Urgency"] == "normal"
    done = json.loads(browser.decrypt(body))
    assert (done["event"], done["title"]) == ("completed", "Claude finished")


async def test_a_gone_subscription_is_removed_and_the_rest_kept(
    server: CommandServer, endpoint: PushEndpoint, tmp_path: Path
) -> None:
    for path in ("/gone/a", "/live/b"):
        status, _ = await call(
            server,
            "POST",
            "/api/push/subscriptions",
            Browser().subscription(endpoint.origin + path),
        )
        assert status == 201
    stored = tmp_path / "data" / "push" / "subscriptions.json"
    assert len(json.loads(stored.read_text())) == 2
    await server.manager.start_session(StartRequest("claude", "hello"))
    await endpoint.wait_for(2)
    async with asyncio.timeout(units(5)):
        while len(push_service(server).subscriptions) != 1:
            await asyncio.sleep(0.01)
    assert [s.endpoint for s in push_service(server).subscriptions] == [endpoint.origin + "/live/b"]
    assert [s["endpoint"] for s in json.loads(stored.read_text())] == [endpoint.origin + "/live/b"]
    # Only once: a 410 is never retried.
    await asyncio.sleep(units(0.3))
    assert [p for p, _, _ in endpoint.posts].count("/gone/a") == 1


async def test_keys_and_subscriptions_persist_privately_and_bad_ones_are_refused(
    tmp_path: Path, endpoint: PushEndpoint
) -> None:
    subscription = Browser().subscription(endpoint.origin + "/p/kept")
    async with CommandServer(fake_config(tmp_path)) as first:
        _, key = await call(first, "GET", "/api/push/key")
        assert (await call(first, "POST", "/api/push/subscriptions", subscription))[0] == 201
        bad = [
            {"endpoint": "http://push.example/x", "keys": subscription["keys"]},  # not https
            {"endpoint": "ftp://127.0.0.1/x", "keys": subscription["keys"]},
            {"endpoint": subscription["endpoint"], "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
            {"endpoint": subscription["endpoint"]},
            ["not", "an", "object"],
        ]
        for body in bad:
            status, error = await call(first, "POST", "/api/push/subscriptions", body)
            assert status == 400, body
            assert error["error"]["message"]
    folder = tmp_path / "data" / "push"
    for name in ("vapid.pem", "subscriptions.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    async with CommandServer(fake_config(tmp_path)) as second:
        assert (await call(second, "GET", "/api/push/key"))[1] == key  # the same key
        assert [s.endpoint for s in push_service(second).subscriptions] == [
            subscription["endpoint"]
        ]
        gone = {"endpoint": subscription["endpoint"]}
        assert await call(second, "DELETE", "/api/push/subscriptions", gone) == (
            200,
            {"removed": True},
        )
        assert await call(second, "DELETE", "/api/push/subscriptions", gone) == (
            200,
            {"removed": False},
        )
        assert push_service(second).subscriptions == []
        _, document = await call(second, "GET", "/api/openapi.json")
        assert {"/api/push/key", "/api/push/subscriptions"} <= set(document["paths"])


async def test_subscriptions_are_bounded(server: CommandServer, endpoint: PushEndpoint) -> None:
    bound = push_service(server).config.max_subscriptions
    for index in range(bound + 3):
        sub = Browser().subscription(f"{endpoint.origin}/p/{index}")
        assert (await call(server, "POST", "/api/push/subscriptions", sub))[0] == 201
    kept = [s.endpoint for s in push_service(server).subscriptions]
    assert len(kept) == bound and kept[-1] == f"{endpoint.origin}/p/{bound + 2}"
    # The console renews its subscription on each load: the same one is kept once, not again.
    again = Browser().subscription(f"{endpoint.origin}/p/again")
    for _ in range(3):
        assert (await call(server, "POST", "/api/push/subscriptions", again))[0] == 201
    assert [s.endpoint for s in push_service(server).subscriptions].count(again["endpoint"]) == 1
    assert len(push_service(server).subscriptions) == bound


async def test_an_odd_answer_ends_no_delivery_and_a_bad_key_file_no_start(
    tmp_path: Path, endpoint: PushEndpoint
) -> None:
    folder = tmp_path / "data" / "push"
    folder.mkdir(parents=True)
    (folder / "vapid.pem").write_text("not a key")
    async with CommandServer(fake_config(tmp_path)) as server:
        status, key = await call(server, "GET", "/api/push/key")
        assert status == 200 and len(unb64url(key["public_key"])) == 65
        sub = Browser().subscription(endpoint.origin + "/odd/1")
        assert (await call(server, "POST", "/api/push/subscriptions", sub))[0] == 201
        for count in (1, 2):
            session = await server.manager.start_session(StartRequest("claude", "hello"))
            await endpoint.wait_for(count)  # the second arrives: the first's odd answer
            # (undecodable as the text it claims to be) did not end the subscription's worker
            async with asyncio.timeout(units(10)):
                while (await call(server, "GET", f"/api/sessions/{session.session_id}"))[1][
                    "status"
                ] == "running":
                    await asyncio.sleep(0.02)
