"""`eventually()`: wait for a condition instead of sleeping a fixed time or writing a poll loop.

A fixed sleep is either too long (every run pays it) or too short (a busy machine fails the test);
a hand-written loop repeats the deadline, the interval and the failure message each time. This polls
a check until it holds, returns as soon as it does, and fails with what was last seen.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Calls `check` (sync or async) until it returns a true value, and returns that value.

    A check that raises AssertionError has not held yet: it is called again, and its last message is
    in the failure. Any other exception ends the wait at once (a process that died, a stream that
    closed): raise one of those from the check for conditions that can no longer come true.

    Args:
        check: The condition; a plain predicate, or a block of asserts that returns a value.
        within: Seconds before the wait fails (AssertionError).
        interval: Seconds between calls.
        what: What is awaited, for the failure message; a callable is asked only on failure
            (e.g. for a log tail).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        last_error: AssertionError | None = None
        try:
            result = check()
            value = await result if inspect.isawaitable(result) else result
        except AssertionError as error:
            last_error = error
        else:
            if value:
                return value
        if loop.time() >= deadline:
            described = what() if callable(what) else what
            seen = f": {last_error}" if last_error is not None else f"; last seen {value!r}"
            raise AssertionError(f"not within {within:g} s: {described}{seen}") from last_error
        await asyncio.sleep(interval)
