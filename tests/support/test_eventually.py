"""The polling helper the other tests wait with: returns early, retries asserts, fails with what it saw."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.eventually import eventually

pytestmark = pytest.mark.unit


async def test_returns_the_first_true_value_without_waiting_out_the_limit() -> None:
    calls = []

    def check() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    started = asyncio.get_running_loop().time()
    assert await eventually(check, within=5.0, interval=0.01) == 3
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_async_checks_and_asserting_checks_are_retried() -> None:
    seen: list[int] = []

    async def check() -> list[int]:
        seen.append(len(seen))
        assert len(seen) > 2, "not yet"
        return seen

    assert await eventually(check, interval=0.01) == [0, 1, 2]


async def test_failure_names_what_was_awaited_and_the_last_assertion() -> None:
    def check() -> None:
        raise AssertionError("still 2 messages")

    with pytest.raises(AssertionError, match=r"not within 0.1 s: the third message: still 2 messages"):
        await eventually(check, within=0.1, interval=0.02, what="the third message")


async def test_failure_shows_the_last_value_and_a_lazy_description() -> None:
    asked = []

    def describe() -> str:
        asked.append(1)
        return "the log tail"

    assert await eventually(lambda: "ready", what=describe) == "ready"
    assert asked == []
    with pytest.raises(AssertionError, match=r"the log tail; last seen \[\]"):
        await eventually(lambda: [], within=0.05, interval=0.01, what=describe)


async def test_other_errors_end_the_wait_at_once() -> None:
    def check() -> bool:
        raise RuntimeError("the process exited")

    started = asyncio.get_running_loop().time()
    with pytest.raises(RuntimeError, match="exited"):
        await eventually(check, within=5.0)
    assert asyncio.get_running_loop().time() - started < 1.0
