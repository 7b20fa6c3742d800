"""Web Push: the console's notifications while no tab of it is open (RFC 8030, 8291, 8292).

The browser's service worker (``/sw.js``, `arp.command.console`) subscribes with the push
service its vendor runs (FCM, Mozilla's autopush, Apple's) and gives arpc the subscription: an
endpoint URL and the browser's keys. arpc then posts each note, encrypted for that browser
(``aes128gcm``, RFC 8291) and signed with arpc's VAPID key (RFC 8292), to the endpoint; the push
service wakes the service worker, which shows the notification::

    GET    /api/push/key            {"public_key": <application server key, base64url>}
    POST   /api/push/subscriptions  a PushSubscription's JSON {endpoint, keys: {p256dh, auth}}
    DELETE /api/push/subscriptions  {"endpoint": …} (or ?endpoint=…)

- Notes: the same events and JSON as ``--notify-url`` (`arp.command.notify.note`): approval
  requests (urgency high) and runs that ended completed, failed or cancelled. ``url`` is the run
  in the console at the origin the browser subscribed from (its ``Origin``), which may differ
  from the relay's own name behind a front proxy.
- Keys: a P-256 key made on first use, kept in ``<data dir>/push/vapid.pem`` (0600, its folder
  0700); without a data dir (tests) it lives in memory for the process.
- Subscriptions: kept per browser (its endpoint) in ``<data dir>/push/subscriptions.json``
  (0600), at most `PushConfig.max_subscriptions` (a new one beyond replaces the oldest); one
  the push service answers 404 or 410 for is gone and removed. An endpoint must be ``https``
  (``http`` only on a loopback host, for local test services).
- Delivery: each subscription has its own `Outbox` (the notify module's bounded queue, deadline
  and retries with backoff), so a dead push service delays no run and no other browser.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPusher, WebPushException

from arp.agents.session_types import Notice
from arp.agents.sessions import SessionManager
from arp.command import openapi
from arp.command.notify import Delivered, NotifyConfig, Outbox, note, stop_outboxes
from arp.command.web import CONTEXT_KEY, json_response
from arp.errors import BadRequest
from arp.lifecycle import Service

log = logging.getLogger(__name__)

GONE: Final = (404, 410)
"""The push service's answers for a subscription that no longer exists (RFC 8030 §7.3)."""
ENDPOINT_CHARS: Final = 2048
BODY_BYTES: Final = 8 * 1024
"""The largest subscription request body (a real one is about 500 bytes)."""


@dataclass(frozen=True, slots=True)
class PushConfig:
    """Web Push's bounds; delivery itself is bounded by a `NotifyConfig` (deadline, retries,
    backoff, queue per subscription)."""

    max_subscriptions: int = 20
    """Browsers kept; a new one beyond replaces the oldest."""
    ttl: int = 12 * 3600
    """Seconds a push service keeps a note for a browser that is offline."""
    subject: str = "mailto:arpc@localhost"
    """The VAPID ``sub`` claim: a contact for the push service's operator (RFC 8292 §2.1)."""
    token_lifetime: int = 12 * 3600
    """The VAPID JWT's ``exp``, seconds from now (at most 24 hours, RFC 8292 §2)."""
    delivery: NotifyConfig = field(default_factory=NotifyConfig)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (browsers send it without); ValueError when bad."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Subscription:
    """One browser's push subscription, as `PushManager.subscribe` gave it."""

    endpoint: str
    p256dh: str
    auth: str
    created_at: float
    console: str | None = None
    """The console's origin as the browser saw it (its request's ``Origin``): a note's url
    when arpc knows no public URL, so a click opens the run where the person subscribed."""

    def info(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def to_json(self) -> dict[str, Any]:
        return {**self.info(), "created_at": self.created_at, "console": self.console}

    def note(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with its url filled from this browser's console when it has none."""
        if body.get("url") or not self.console:
            return body
        return {**body, "url": f"{self.console}/#/run/{body['session_id']}"}

    @classmethod
    def parse(cls, data: Any, now: float, console: Any = None) -> Subscription:
        """A PushSubscription's JSON; a `BadRequest` says what is wrong with it."""
        if not isinstance(data, dict):
            raise BadRequest("send a PushSubscription's JSON: {endpoint, keys: {p256dh, auth}}")
        endpoint = check_endpoint(data.get("endpoint"))
        keys = data.get("keys")
        if not isinstance(keys, dict):
            raise BadRequest("the subscription has no keys {p256dh, auth}")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        try:
            point = b64url_decode(p256dh) if isinstance(p256dh, str) else b""
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            secret = b64url_decode(auth) if isinstance(auth, str) else b""
        except ValueError:
            point = secret = b""
        if len(point) != 65 or len(secret) != 16:
            raise BadRequest(
                "keys.p256dh must be a P-256 public key (65 bytes) and keys.auth 16 bytes, "
                "both base64url"
            )
        return cls(endpoint, b64url(point), b64url(secret), now, _origin(console))


def _origin(value: Any) -> str | None:
    """An ``http(s)://host[:port]`` origin, or None for anything else (absent, "null")."""
    if not isinstance(value, str) or len(value) > ENDPOINT_CHARS:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def check_endpoint(value: Any) -> str:
    """A push endpoint: an https URL, or http on a loopback host (a local test service)."""
    if not isinstance(value, str) or not value or len(value) > ENDPOINT_CHARS:
        raise BadRequest(f"endpoint must be a URL of at most {ENDPOINT_CHARS} characters")
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return value
    if parts.scheme == "http" and _loopback(host):
        return value
    raise BadRequest("endpoint must be an https URL (http only on a loopback host)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (a temporary file, renamed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def load_or_create_key(folder: Path | None) -> ec.EllipticCurvePrivateKey:
    """arpc's VAPID key: read from ``folder/vapid.pem``, made (and stored 0600) when missing."""
    path = folder / "vapid.pem" if folder is not None else None
    if path is not None and path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            key = None
            log.warning("push: %s is unreadable (%s)", path, exc)
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        log.warning("push: %s is not a P-256 key; browsers subscribe again with a new one", path)
    key = ec.generate_private_key(ec.SECP256R1())
    if path is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            _write_private(path, pem)
        except OSError as exc:
            # Command mode serves on; subscriptions last until arpc restarts.
            log.warning("push: cannot keep the VAPID key in %s: %s", path, exc)
    return key


def application_server_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as ``pushManager.subscribe`` wants it: the uncompressed point, base64url."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


class PushService(Service):
    """Keeps the subscriptions and pushes the manager's notices to each; see the module doc."""

    def __init__(
        self, config: PushConfig, manager: SessionManager, data_dir: Path | None = None
    ) -> None:
        self.config = config
        self.manager = manager
        self.folder = data_dir / "push" if data_dir is not None else None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._vapid: Vapid | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._http: aiohttp.ClientSession | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def public_key(self) -> str:
        if self._key is None:
            raise RuntimeError("the push service is not started")
        return application_server_key(self._key)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    async def start(self) -> None:
        if self._http is not None:
            return
        self._key = load_or_create_key(self.folder)
        self._vapid = Vapid(private_key=self._key)
        self._http = aiohttp.ClientSession()
        for subscription in self._load():
            self._add(subscription)
        self._unsubscribe = self.manager.subscribe(self._on_notice)

    async def _shutdown(self) -> None:
        """Idempotent: notes not yet pushed are dropped (a bounded wait)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        outboxes = list(self._outboxes.values())
        self._outboxes.clear()
        await stop_outboxes(outboxes, self.config.delivery.timeout)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def subscribe(self, subscription: Subscription) -> None:
        """Keep ``subscription`` (replacing one with its endpoint, or the oldest when full)."""
        current = self._subscriptions.get(subscription.endpoint)
        if current is not None and current == replace(subscription, created_at=current.created_at):
            # The console renews it on each load: the same one stays, with its queue of notes.
            return
        self._remove(subscription.endpoint)
        while len(self._subscriptions) >= max(1, self.config.max_subscriptions):
            oldest = min(self._subscriptions.values(), key=lambda s: s.created_at)
            log.info(
                "push: %d browsers subscribed; the oldest is replaced",
                self.config.max_subscriptions,
            )
            self._remove(oldest.endpoint)
        self._add(subscription)
        self._save()

    def unsubscribe(self, endpoint: str) -> bool:
        """Forget the subscription of ``endpoint``; whether there was one."""
        removed = self._remove(endpoint)
        if removed:
            self._save()
        return removed

    def _add(self, subscription: Subscription) -> None:
        self._subscriptions[subscription.endpoint] = subscription
        if self._http is not None:
            send = functools.partial(self._push, subscription)
            shown = f"push {urlsplit(subscription.endpoint).hostname}"
            gone = functools.partial(self._gone, subscription)
            self._outboxes[subscription.endpoint] = Outbox(
                shown, send, self.config.delivery, on_gone=gone
            )

    def _remove(self, endpoint: str) -> bool:
        outbox = self._outboxes.pop(endpoint, None)
        if outbox is not None:
            outbox.stop()
        return self._subscriptions.pop(endpoint, None) is not None

    def _gone(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.endpoint) is subscription:
            log.info("push: the push service forgot a browser; its subscription is removed")
            self.unsubscribe(subscription.endpoint)

    def _on_notice(self, notice: Notice) -> None:
        body = note(notice, None)  # each browser's url: its own console (`Subscription.note`)
        for outbox in self._outboxes.values():
            outbox.put_nowait(body)

    async def _push(self, subscription: Subscription, body: dict[str, Any]) -> Delivered:
        """One attempt: encrypt ``body`` for the browser, sign, post; what it came to."""
        assert self._http is not None and self._vapid is not None
        parts = urlsplit(subscription.endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + self.config.token_lifetime,
            "sub": self.config.subject,
        }
        headers = {
            **self._vapid.sign(claims),
            "Urgency": "high" if body["event"] == "approval_requested" else "normal",
        }
        data = json.dumps(subscription.note(body), ensure_ascii=False).encode("utf-8")
        timeout = aiohttp.ClientTimeout(total=self.config.delivery.timeout)
        pusher = WebPusher(subscription.info(), aiohttp_session=self._http)
        try:
            response = await pusher.send_async(data, headers, ttl=self.config.ttl, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("push %s: %r", parts.hostname, exc)
            return "retry"
        except WebPushException as exc:
            log.warning("push %s: %s", parts.hostname, exc)
            return "failed"
        assert not isinstance(response, str)  # a curl command only when asked for one
        status = response.status
        if status < 300:
            return "sent"
        if status in GONE:
            return "gone"
        log.info("push %s: answered %d", parts.hostname, status)
        return "retry" if status == 429 or status >= 500 else "failed"

    def _load(self) -> list[Subscription]:
        path = self._path()
        if path is None or not path.exists():
            return []
        try:
            items = json.loads(path.read_text("utf-8"))
            loaded = [
                Subscription.parse(item, float(item.get("created_at") or 0.0), item.get("console"))
                for item in items
            ]
        except (OSError, ValueError, TypeError, AttributeError, BadRequest) as exc:
            log.warning("push: %s is unreadable (%s); no browser is subscribed", path, exc)
            return []
        return sorted(loaded, key=lambda s: s.created_at)[-max(1, self.config.max_subscriptions) :]

    def _save(self) -> None:
        path = self._path()
        if path is None:
            return
        items = [subscription.to_json() for subscription in self._subscriptions.values()]
        try:
            _write_private(path, json.dumps(items, indent=1).encode("utf-8"))
        except OSError as exc:
            log.warning("push: cannot keep the subscriptions in %s: %s", path, exc)

    def _path(self) -> Path | None:
        return self.folder / "subscriptions.json" if self.folder is not None else None


PUSH_KEY: Final = web.AppKey("arp_push_service", PushService)


def _service(request: web.Request) -> PushService:
    return request.app[PUSH_KEY]


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > BODY_BYTES:
        raise BadRequest(f"a subscription is at most {BODY_BYTES} bytes")
    raw = await request.content.read(BODY_BYTES + 1)
    if len(raw) > BODY_BYTES:
        raise BadRequest(f"a subscription is at most {BODY_BYTES} bytes")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


async def get_key(request: web.Request) -> web.Response:
    return json_response({"public_key": _service(request).public_key})


async def add_subscription(request: web.Request) -> web.Response:
    # Same-origin only (arp.command.middleware): an Origin sent is the console's own.
    origin = request.headers.get("Origin")
    subscription = Subscription.parse(await _body(request), time.time(), origin)
    service = _service(request)
    service.subscribe(subscription)
    return json_response(
        {"endpoint": subscription.endpoint, "subscriptions": len(service.subscriptions)},
        status=201,
    )


async def remove_subscription(request: web.Request) -> web.Response:
    endpoint = request.query.get("endpoint")
    if endpoint is None:
        body = await _body(request)
        endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        raise BadRequest('name the subscription: {"endpoint": …} or ?endpoint=…')
    return json_response({"removed": _service(request).unsubscribe(endpoint)})


async def _start(app: web.Application) -> None:
    ctx = app[CONTEXT_KEY]
    service = PushService(PushConfig(), ctx.sessions, ctx.config.data_dir)
    await service.start()
    app[PUSH_KEY] = service
    if openapi.DOCUMENT_KEY in app:
        openapi.add_paths(app, PUSH_DOC, {"PushSubscription": _SUBSCRIPTION_SCHEMA})


async def _stop(app: web.Application) -> None:
    service = app.get(PUSH_KEY)
    if service is not None:
        await service.close()


def setup_push_routes(app: web.Application) -> None:
    """The push API; the service starts and closes with the application."""
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/api/push/key", get_key)
    app.router.add_post("/api/push/subscriptions", add_subscription)
    app.router.add_delete("/api/push/subscriptions", remove_subscription)


_SUBSCRIPTION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "what PushSubscription.toJSON() gives (expirationTime is ignored)",
    "required": ["endpoint", "keys"],
    "properties": {
        "endpoint": {
            "type": "string",
            "description": "the push service's URL: https (http only on a loopback host)",
        },
        "keys": {
            "type": "object",
            "required": ["p256dh", "auth"],
            "properties": {
                "p256dh": {"type": "string", "description": "P-256 public key, base64url"},
                "auth": {"type": "string", "description": "16-byte secret, base64url"},
            },
        },
    },
}


def _json_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_DOC: Final = _json_doc({"$ref": "#/components/schemas/Error"}, "error")
_ENDPOINT_BODY: Final = {
    "type": "object",
    "required": ["endpoint"],
    "properties": {"endpoint": {"type": "string"}},
}

PUSH_DOC: Final[dict[str, Any]] = {
    "/api/push/key": {
        "get": {
            "summary": "arpc's VAPID public key (the applicationServerKey for "
            "pushManager.subscribe)",
            "description": "Made on first use and kept in the data dir (0600). Notes are "
            "pushed on approval_requested, completed, failed and cancelled, as JSON {event, "
            "session_id, title, message, url} (the same as --notify-url), encrypted "
            "aes128gcm (RFC 8291) and signed with this key (VAPID, RFC 8292).",
            "responses": {
                "200": _json_doc(
                    {
                        "type": "object",
                        "properties": {
                            "public_key": {
                                "type": "string",
                                "description": "the uncompressed P-256 point, base64url",
                            }
                        },
                    },
                    "the key",
                )
            },
        }
    },
    "/api/push/subscriptions": {
        "post": {
            "summary": "Keep a browser's push subscription",
            "description": "Kept per endpoint (a second POST replaces it); at most "
            f"{PushConfig().max_subscriptions} browsers, the oldest replaced beyond. Removed "
            "when the push service answers 404 or 410.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/PushSubscription"}
                    }
                },
            },
            "responses": {
                "201": _json_doc(
                    {
                        "type": "object",
                        "properties": {
                            "endpoint": {"type": "string"},
                            "subscriptions": {"type": "integer"},
                        },
                    },
                    "kept",
                ),
                "400": _ERROR_DOC,
            },
        },
        "delete": {
            "summary": "Forget a browser's push subscription, by its endpoint",
            "parameters": [
                {
                    "name": "endpoint",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "the endpoint (or send it as the JSON body)",
                }
            ],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ENDPOINT_BODY}},
            },
            "responses": {
                "200": _json_doc(
                    {"type": "object", "properties": {"removed": {"type": "boolean"}}},
                    "whether a subscription was removed",
                ),
                "400": _ERROR_DOC,
            },
        },
    },
}


__all__ = [
    "PUSH_KEY",
    "PushConfig",
    "PushService",
    "Subscription",
    "application_server_key",
    "setup_push_routes",
]
