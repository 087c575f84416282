"""servicekit.backoff: capped exponential steps, jitter within each step, reset, a stoppable wait."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.backoff import Backoff

pytestmark = pytest.mark.unit


def test_steps_double_up_to_the_maximum_without_jitter() -> None:
    backoff = Backoff(0.1, 1.0, jitter=0)
    assert [round(backoff.next_delay(), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_the_step() -> None:
    lowest = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.999999)
    highest = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.0)
    assert [round(lowest.next_delay(), 3) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [highest.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_replicas_do_not_wait_alike() -> None:
    waits = {Backoff(1.0, 1.0).next_delay() for _ in range(20)}
    assert len(waits) > 1
    assert all(0.5 <= w <= 1.0 for w in waits)


def test_reset_starts_from_the_first_step() -> None:
    backoff = Backoff(0.1, 1.0, jitter=0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.1


def test_maximum_wins_over_a_larger_initial() -> None:
    assert Backoff(5.0, 1.0, jitter=0).next_delay() == 1.0


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"),
    [(0, 1, 2, 0.5), (1, -1, 2, 0.5), (1, 2, 0.5, 0.5), (1, 2, 2, 1.5)],
)
def test_nonsense_is_refused(initial: float, maximum: float, multiplier: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="must"):
        Backoff(initial, maximum, multiplier=multiplier, jitter=jitter)


async def test_wait_sleeps_then_says_go_on() -> None:
    assert await Backoff(0.01, 0.01).wait() is False
    assert await Backoff(0.01, 0.01).wait(asyncio.Event()) is False


async def test_wait_ends_at_once_when_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await Backoff(30.0, 30.0).wait(stop) is True
    assert loop.time() - started < 5.0
