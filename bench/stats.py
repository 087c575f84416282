"""Latency figures from one load run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunResult:
    """What one load run measured.

    Attributes:
        name: What was measured (printed as the row label).
        latencies_s: Seconds each successful call took.
        errors: Calls that failed.
        elapsed_s: Wall-clock length of the measured window.
        concurrency: Calls kept in flight.
    """

    name: str
    latencies_s: Sequence[float]
    errors: int
    elapsed_s: float
    concurrency: int

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def per_second(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds (`q` in 0..100); NaN without samples."""
        return percentile(self.latencies_s, q) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (`q` in 0..100); NaN without samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def table(results: Sequence[RunResult]) -> str:
    """A fixed-width table of the results."""
    header = (
        f"{'path':<34} {'conc':>4} {'requests':>9} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(
            f"{r.name:<34} {r.concurrency:>4} {r.requests:>9} {r.errors:>6} {r.per_second:>9.1f} "
            f"{r.percentile_ms(50):>8.2f} {r.percentile_ms(99):>8.2f}"
        )
    return "\n".join(rows)
