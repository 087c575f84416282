"""The log line's cheaper parts write what structlog's own processors write: timestamps and JSON."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import structlog

from servicekit import logs

pytestmark = pytest.mark.unit

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "ns",
    [
        1_764_000_000_123_456_789,  # a fraction
        1_764_000_000_000_000_000,  # a whole second: no fraction, as isoformat() writes it
        1_764_000_000_000_000_999,  # under a microsecond past it: floored, as datetime.now() does
        1_764_000_059_999_999_999,  # the last microsecond of a minute
        0,
    ],
)
def test_timestamps_are_structlogs_iso_utc(ns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    stamper = logs._IsoTimeStamper()
    for moment in (ns, ns + 1_000_000_000, ns):  # the cached second must follow the clock, both ways
        monkeypatch.setattr(time, "time_ns", lambda moment=moment: moment)
        expected = (EPOCH + dt.timedelta(microseconds=moment // 1000)).isoformat().replace("+00:00", "Z")
        assert stamper(None, "info", {})["timestamp"] == expected


def test_timestamps_match_structlogs_own_stamper_now() -> None:
    ours = logs._IsoTimeStamper()(None, "info", {})["timestamp"]
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})["timestamp"]
    assert abs(dt.datetime.fromisoformat(ours) - dt.datetime.fromisoformat(theirs)) < dt.timedelta(seconds=1)


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_json_is_what_json_dumps_writes() -> None:
    event = {
        "event": "rpc finished",
        "text": 'héllo ☃ "quoted" \x00',
        "duration_ms": 0.12,
        "nested": {"list": [1, None, True]},
        "object": _Opaque(),
        "nan": float("nan"),
    }
    ours = structlog.processors.JSONRenderer(serializer=logs._JsonDumps())(None, "info", dict(event))
    theirs = structlog.processors.JSONRenderer()(None, "info", dict(event))
    assert ours == theirs
    assert json.loads(ours)["object"] == "<opaque>"
