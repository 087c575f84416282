"""A closed-loop load generator: `concurrency` workers call back to back for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.stats import RunResult

Call = Callable[[], Awaitable[None]]


async def run_load(
    name: str, call: Call, *, concurrency: int, duration_s: float, warmup_s: float
) -> RunResult:
    """Runs `call` from `concurrency` workers; only calls started after the warm-up are counted.

    A call that raises counts as an error and the worker goes on: a benchmark reports failures
    instead of stopping at the first one.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while (began := loop.time()) < stop_at:
            t0 = time.perf_counter()
            try:
                await call()
            except Exception:  # noqa: BLE001 - counted, reported in the table
                if began >= measure_from:
                    errors += 1
                continue
            if began >= measure_from:
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    # Calls in flight at `stop_at` are counted, so the window ends when the last one finished.
    elapsed = loop.time() - measure_from
    return RunResult(name, latencies, errors, elapsed, concurrency)
