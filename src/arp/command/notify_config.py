"""The notifier's settings and arpc's ``--notify-*`` flags that fill them.

Apart from the notifier (`arp.command.notify`) so arpc's parser lists the flags without loading
the notifier, the session manager or aiohttp: forward mode stays light (idle RSS, issue 18).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from arp import argtypes


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Where notes go and the bounds of their delivery."""

    urls: tuple[str, ...] = ()
    timeout: float = 10.0
    """One post's deadline (connect and answer), seconds."""
    retries: int = 3
    """Attempts after the first failed one."""
    backoff: float = 1.0
    """The first retry's delay, doubled for each further one."""
    max_queue: int = 100
    """Notes waiting per URL (beyond: the new one is dropped)."""


def add_notify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--notify-url",
        action="append",
        default=[],
        metavar="URL",
        help="post a note when an agent asks for an approval or a run ends (repeatable): "
        "http(s)://… gets JSON {event, session_id, title, message, url}; ntfy://HOST/TOPIC "
        "or ntfy+https://HOST/TOPIC publishes to ntfy",
    )
    parser.add_argument(
        "--notify-timeout",
        type=argtypes.positive_float,
        default=NotifyConfig().timeout,
        metavar="SECONDS",
        help="one notification post's deadline (default %(default)s)",
    )
