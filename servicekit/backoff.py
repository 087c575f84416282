"""Capped exponential backoff with jitter, for every retry loop in the mesh.

Without jitter, replicas that lost the same dependency at the same moment (a MongoDB failover, a
chat_svc restart) retry in lockstep and hit it together each time it comes back. Each wait here is
drawn between `1 - jitter` and 1 times the capped exponential step, so the waits spread out but a
wait is never longer than the un-jittered schedule: deadlines tuned to that schedule still hold.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class Backoff:
    """The waits between attempts: `initial`, then `multiplier` times longer each time, up to `maximum`.

    Not safe to share between tasks: each retry loop owns one.

    Args:
        initial: The first step, in seconds.
        maximum: The largest step, in seconds.
        multiplier: How much each step grows.
        jitter: The share of each step drawn at random, from 0 (exact steps) to 1 (anywhere
            between 0 and the step).
        rand: A source of floats in [0, 1); tests pass a fixed one.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"initial and maximum must be positive, got {initial} and {maximum}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {multiplier}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
        # `maximum` wins over a larger `initial` (both are often separate settings).
        self._initial = min(initial, maximum)
        self._maximum = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rand = rand
        self._step = self._initial

    def next_delay(self) -> float:
        """The wait before the next attempt, in seconds; the step grows for the one after."""
        delay = self._step * (1 - self._jitter * self._rand())
        self._step = min(self._maximum, self._step * self._multiplier)
        return delay

    def reset(self) -> None:
        """Starts again from `initial`: call it after an attempt succeeded."""
        self._step = self._initial

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleeps the next delay; returns True at once when `stop` is set (then do not retry)."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return False
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return False
        return True
