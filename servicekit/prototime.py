"""UTC microseconds (servicekit.times) as protobuf `Timestamp` and `Duration`, at the gRPC boundary."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from servicekit.times import US_PER_SECOND


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // US_PER_SECOND, nanos=(us % US_PER_SECOND) * 1000)


def duration(us: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=us // US_PER_SECOND, nanos=(us % US_PER_SECOND) * 1000)
