"""Time as protobuf `Timestamp` and `Duration`, at the gRPC boundary; the one place that converts.

The mesh keeps times as UTC microseconds (servicekit.times); agent profiles keep `datetime`s (what
BSON dates read back as) and the voice worker float seconds (what LiveKit Agents reports).
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import duration_pb2, timestamp_pb2

from servicekit.times import US_PER_SECOND

_NS_PER_SECOND = 1_000_000_000


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // US_PER_SECOND, nanos=(us % US_PER_SECOND) * 1000)


def duration(us: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=us // US_PER_SECOND, nanos=(us % US_PER_SECOND) * 1000)


def timestamp_from_datetime(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """An aware `datetime`, or a naive one taken as UTC."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def timestamp_from_seconds(seconds: float) -> timestamp_pb2.Timestamp:
    """Seconds since the epoch (as `time.time()` gives them), to the nanosecond the float holds."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * _NS_PER_SECOND))
    return stamp


def duration_from_seconds(seconds: float) -> duration_pb2.Duration:
    span = duration_pb2.Duration()
    span.FromNanoseconds(int(seconds * _NS_PER_SECOND))
    return span


def to_us(message: timestamp_pb2.Timestamp | duration_pb2.Duration) -> int:
    """Microseconds (since the epoch for a `Timestamp`); nanoseconds below that are dropped."""
    return message.seconds * US_PER_SECOND + message.nanos // 1000


def to_seconds(message: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    return message.seconds + message.nanos / _NS_PER_SECOND
