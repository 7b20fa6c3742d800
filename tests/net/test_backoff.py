from __future__ import annotations

import itertools

import pytest

from arp.net.backoff import Backoff


def test_backoff_grows_to_cap_and_resets() -> None:
    backoff = Backoff(0.2, 5.0, jitter=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays[0] == pytest.approx(0.2)  # full jitter on the first try, here its top
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(delays))
    assert max(delays) == pytest.approx(5.0)
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.2)


def test_backoff_jitter_stays_in_bounds() -> None:
    low = Backoff(1.0, 4.0, jitter=lambda: 0.0)
    assert low.next_delay() == 0.0
    assert low.next_delay() == pytest.approx(1.618 * 0.75)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
