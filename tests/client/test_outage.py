"""A relay that stays away is said once, then once a minute with the count, and once it is back.

Before, arpc logged a WARNING on every reconnect attempt (every 5 s at the backoff's cap) for as
long as the relay was down.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from arp.client.config import ClientConfig, Target
from arp.client.control import Client, OutageReport
from arp.relay.server import Relay, RelayConfig
from tests.conftest import free_port, units
from tests.relay.conftest import fast_timeouts


def test_first_failure_then_one_reminder_a_minute_then_back() -> None:
    report = OutageReport("relay.example:17001", every=60)
    first = report.failed(0.0, "Connection refused", 0.2)
    assert first == "relay relay.example:17001: Connection refused; reconnecting in 0.2 s"
    assert [report.failed(t, "Connection refused", 5) for t in range(5, 60, 5)] == [None] * 11
    reminder = report.failed(60.0, "Connection refused", 5)
    assert reminder is not None
    assert "still unreachable after 1 min 0 s: 12 more failed attempts (13 in all)" in reminder
    assert report.failed(65.0, "Connection refused", 5) is None
    back = report.recovered(70.0)
    assert back == "relay relay.example:17001 reached again after 1 min 10 s and 14 failed attempts"
    assert report.recovered(71.0) is None  # said once
    # A later outage starts over with a first line of its own.
    assert report.failed(100.0, "the control link closed", 0.2) is not None


async def test_a_client_without_its_relay_warns_once_and_says_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    timeouts = fast_timeouts()
    config = ClientConfig(
        client_id="patient",
        http_target=Target("127.0.0.1", 9),
        control_port=port,
        proxy_port=free_port(),
        timeouts=timeouts,
    )
    caplog.set_level(logging.INFO, logger="arp.client.control")
    async with Client(config) as client:
        # Many attempts (the backoff is capped at 0.3 s here), one warning.
        await asyncio.sleep(units(1.5))
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "reconnecting in" in warnings[0].getMessage()
        relay = Relay(
            RelayConfig(
                bind="127.0.0.1",
                control_port=port,
                proxy_port=config.proxy_port,
                public_port=0,
                timeouts=timeouts,
            )
        )
        async with relay:
            await client.wait_registered(units(5))
            back = [r.getMessage() for r in caplog.records if "reached again" in r.getMessage()]
            assert len(back) == 1 and "failed attempts" in back[0], back
