"""Reconnect delays: a random first delay, then growth by a factor up to a cap (as websockets)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Successive delays for reconnect attempts; `reset()` after a success."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 1.618,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._jitter = jitter
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt: jittered, so many clients do not retry in step."""
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        # Full jitter on the first attempt, ±25 % after it, never above the cap.
        if self._attempt == 1:
            return base * self._jitter()
        return min(self.maximum, base * (0.75 + 0.5 * self._jitter()))

    def reset(self) -> None:
        self._attempt = 0
