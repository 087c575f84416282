"""Time in the mesh: UTC microseconds since the epoch (int), and calendar months.

Domain code and the stores keep times as integers: the embedded store turns dates written by updates
into strings, and integers sort and compare the same everywhere. Only the protobuf boundary sees
`Timestamp` and `Duration` (servicekit.prototime). Months are calendar months in UTC, `YYYY-MM`.
"""

from __future__ import annotations

import datetime as dt
import re
import time

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


def month_of(us: int) -> str:
    """The UTC calendar month `YYYY-MM` that the instant `us` falls in."""
    return dt.datetime.fromtimestamp(us / US_PER_SECOND, tz=dt.UTC).strftime("%Y-%m")


def is_month(text: str) -> bool:
    """True for a well-formed `YYYY-MM`."""
    return _MONTH.fullmatch(text) is not None


def month_bounds(month: str) -> tuple[int, int]:
    """The first microsecond of `month` and of the month after it; `month` must be `YYYY-MM`."""
    matched = _MONTH.fullmatch(month)
    if matched is None:
        raise ValueError(f"not a YYYY-MM month: {month!r}")
    year, number = int(matched.group(1)), int(matched.group(2))
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=dt.UTC)
    return _us(start), _us(end)


def months_between(start_us: int, end_us: int) -> list[str]:
    """Every month the interval [start_us, end_us] touches, in order."""
    months = [month_of(start_us)]
    while True:
        _, next_start = month_bounds(months[-1])
        if next_start > end_us:
            return months
        months.append(month_of(next_start))


def _us(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * US_PER_SECOND
