"""Being told: arpc posts a note when an agent needs its person or a run ends (``--notify-url``).

The session manager tells its listeners (`SessionManager.subscribe`) of ``approval_requested``
(ask mode) and of runs that ended ``completed``, ``failed`` or ``cancelled``. For each
``--notify-url`` (repeatable) the notifier posts:

- ``http://…`` / ``https://…``: a webhook, JSON ``{"event", "session_id", "title", "message",
  "url"}``;
- ``ntfy://HOST/TOPIC`` (plain HTTP) or ``ntfy+https://HOST/TOPIC``: ntfy's JSON publish to
  ``HOST/`` ``{"topic", "title", "message", "click", "priority", "tags"}``, priority 4 (high)
  for an approval and 3 otherwise.

``url``/``click`` opens the run in the console through the relay (``<public URL>/#/run/<id>``,
known once arpc registered; without the token, which a notification service must not see: a
browser that opened the console once has it in its cookie).

Delivery never slows a run: the listener only queues (each URL has its own bounded queue and
worker, so a dead endpoint delays nobody else; a full queue drops the new note, logged), and each
post has a deadline and a bounded number of retries with a doubling backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from arp.agents.executors import EXECUTORS
from arp.agents.session_types import Notice
from arp.command.notify_config import NotifyConfig as NotifyConfig
from arp.command.notify_config import add_notify_arguments as add_notify_arguments
from arp.errors import ConfigError
from arp.lifecycle import Service

if TYPE_CHECKING:
    # Imported where the notifier starts: arpc without --notify-url never loads aiohttp.
    import aiohttp

    from arp.agents.sessions import SessionManager

log = logging.getLogger(__name__)

NTFY_HIGH: Final = 4
NTFY_DEFAULT: Final = 3
MESSAGE_CHARS: Final = 300
"""The longest message text (the prompt's first line, or the error), cut."""


@dataclass(frozen=True, slots=True)
class Target:
    """One ``--notify-url``, parsed: where to post and in which format."""

    kind: Literal["webhook", "ntfy"]
    post_url: str
    topic: str | None = None
    shown: str = ""
    """The URL as logged (no credentials)."""


def parse_target(url: str) -> Target:
    """A ``--notify-url``; a `ConfigError` says what is wrong with it."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}{parts.path}"
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(f"--notify-url {url!r} names no host")
        return Target("webhook", url.strip(), shown=shown)
    if scheme in ("ntfy", "ntfy+http", "ntfy+https"):
        topic = parts.path.strip("/")
        if not parts.hostname or not topic or "/" in topic:
            raise ConfigError(f"--notify-url {url!r}: use ntfy://HOST/TOPIC or ntfy+https://…")
        base = "https" if scheme == "ntfy+https" else "http"
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return Target("ntfy", f"{base}://{netloc}/", topic, shown)
    raise ConfigError(
        f"--notify-url {url!r}: use http(s)://… (a webhook) or ntfy://HOST/TOPIC, "
        "ntfy+https://HOST/TOPIC"
    )


def note(notice: Notice, console_url: str | None) -> dict[str, Any]:
    """The webhook's JSON for ``notice``."""
    session = notice.session
    executor = EXECUTORS.get(session.executor)
    who = executor.display_name if executor is not None else session.executor
    prompt = _first_line(session.prompt)
    if notice.kind == "approval_requested" and notice.approval is not None:
        title = f"{who} asks: {notice.approval.get('title') or notice.approval.get('tool_name')}"
        message = f"Allow or deny before {notice.approval.get('expires_at')}. Task: {prompt}"
    elif notice.kind == "completed":
        title, message = f"{who} finished", prompt
    elif notice.kind == "failed":
        title, message = f"{who} failed", _first_line(session.error or "") or prompt
    else:
        title, message = f"{who} was cancelled", prompt
    url = f"{console_url.rstrip('/')}/#/run/{session.session_id}" if console_url else None
    return {
        "event": notice.kind,
        "session_id": session.session_id,
        "title": title[:MESSAGE_CHARS],
        "message": message[:MESSAGE_CHARS],
        "url": url,
    }


def ntfy_body(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """ntfy's JSON publish for a webhook note."""
    out: dict[str, Any] = {
        "topic": target.topic,
        "title": body["title"],
        "message": body["message"] or body["title"],
        "priority": NTFY_HIGH if body["event"] == "approval_requested" else NTFY_DEFAULT,
        "tags": [body["event"]],
    }
    if body["url"]:
        out["click"] = body["url"]
    return out


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


Delivered = Literal["sent", "retry", "failed", "gone"]
"""What one delivery attempt came to: done, worth another try, not worth one (this note is
given up), or never again (the destination is gone: a push subscription the push service
answered 404/410 for)."""


class Outbox:
    """One destination's bounded queue of notes and the worker that delivers them.

    ``send`` makes one attempt (with its own deadline); a ``"retry"`` is tried again after
    ``backoff``, doubled each time, at most ``retries`` times. A full queue drops the new note.
    The webhooks and ntfy targets (`Notifier`) and each Web Push subscription
    (`arp.command.push`) have one each, so a dead destination delays nobody else.
    """

    def __init__(
        self,
        shown: str,
        send: Callable[[dict[str, Any]], Awaitable[Delivered]],
        config: NotifyConfig,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self.shown = shown
        self._send = send
        self._config = config
        self._on_gone = on_gone
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max(1, config.max_queue))
        self._worker: asyncio.Task[None] | None = asyncio.ensure_future(self._work())
        self.delivered = 0
        self.dropped = 0

    def put_nowait(self, body: dict[str, Any]) -> bool:
        """Queue ``body``; False (logged, counted) when the queue is full or closed."""
        if self._worker is None:
            return False
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("notify %s: %d notes wait already; dropped one", self.shown,
                        self._queue.qsize())  # fmt: skip
            return False
        return True

    def stop(self) -> asyncio.Task[None] | None:
        """Stop the worker (notes not yet delivered are dropped); the task to wait for."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
        return worker

    async def _work(self) -> None:
        while True:
            body = await self._queue.get()
            delay = self._config.backoff
            for attempt in range(self._config.retries + 1):
                try:
                    result = await self._send(body)
                except Exception:  # a bug or an odd answer must not end the worker
                    log.exception("notify %s: a %s note failed", self.shown, body.get("event"))
                    result = "failed"
                if result == "sent":
                    self.delivered += 1
                    break
                if result == "failed":
                    log.warning("notify %s: a %s note refused", self.shown, body.get("event"))
                    break
                if result == "gone":
                    log.info("notify %s: gone; no further notes", self.shown)
                    self.stop()
                    if self._on_gone is not None:
                        self._on_gone()
                    return
                if attempt < self._config.retries:
                    await asyncio.sleep(delay)
                    delay *= 2
            else:
                log.warning("notify %s: gave up on a %s note", self.shown, body.get("event"))


async def stop_outboxes(outboxes: Iterable[Outbox], timeout: float) -> None:
    """Stop every outbox and wait (at most ``timeout``) for their workers to end."""
    workers = [task for task in (box.stop() for box in outboxes) if task is not None]
    if workers:
        await asyncio.wait(workers, timeout=timeout)


class Notifier(Service):
    """Posts the manager's notices to every target; see the module docstring."""

    def __init__(self, config: NotifyConfig, manager: SessionManager) -> None:
        self.config = config
        self.manager = manager
        self.targets = [parse_target(url) for url in config.urls]
        self.console_url: str | None = None
        """The console's public URL, once known (arpc sets it when it registered)."""
        self._outboxes: list[Outbox] = []
        self._http: aiohttp.ClientSession | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def delivered(self) -> int:
        return sum(box.delivered for box in self._outboxes)

    @property
    def dropped(self) -> int:
        return sum(box.dropped for box in self._outboxes)

    async def start(self) -> None:
        if self._http is not None or not self.targets:
            return
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        for target in self.targets:
            send = functools.partial(self._post, target)
            self._outboxes.append(Outbox(target.shown, send, self.config))
        self._unsubscribe = self.manager.subscribe(self._on_notice)

    async def _shutdown(self) -> None:
        """Idempotent: notes not yet posted are dropped (a bounded wait for none)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await stop_outboxes(self._outboxes, self.config.timeout)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _on_notice(self, notice: Notice) -> None:
        body = note(notice, self.console_url)
        for outbox in self._outboxes:
            outbox.put_nowait(body)

    async def _post(self, target: Target, body: dict[str, Any]) -> Delivered:
        import aiohttp  # loaded by `start` already

        assert self._http is not None
        payload = ntfy_body(target, body) if target.kind == "ntfy" else body
        try:
            async with self._http.post(target.post_url, json=payload) as response:
                await response.read()
                if response.status < 300:
                    return "sent"
                log.info("notify %s: answered %d", target.shown, response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("notify %s: %r", target.shown, exc)
        return "retry"


def notifier_from_args(args: argparse.Namespace, manager: SessionManager) -> Notifier | None:
    """None without ``--notify-url``; a bad URL is a `ConfigError` at start."""
    urls = tuple(getattr(args, "notify_url", None) or ())
    if not urls:
        return None
    return Notifier(NotifyConfig(urls=urls, timeout=args.notify_timeout), manager)
