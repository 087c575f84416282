"""Field checks shared by every RPC. Each check adds a violation naming the request field."""

from __future__ import annotations

import re
from dataclasses import dataclass

from servicekit.errors import Violations

# Re-exported so that every chat_svc field check comes from this module; the id rule is the mesh's.
from servicekit.ids import check_id as check_id

# Reporter segment ids may embed a room or job name (`conversation:abc/item_1`), hence `:` `/` `.`.
SEGMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@+=-]{1,200}$")
LANGUAGE_PATTERN = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
REQUEST_ID_MAX = 64
TITLE_MAX = 200
MESSAGE_TEXT_MAX = 4000
SEGMENT_TEXT_MAX = 20000
SEGMENTS_MAX = 100
# protobuf Timestamp bounds (0001-01-01 to 9999-12-31) and Duration bounds.
_TIMESTAMP_MIN_S = -62_135_596_800
_TIMESTAMP_MAX_S = 253_402_300_799
_DURATION_MAX_S = 315_576_000_000
_NANOS_MAX = 999_999_999


@dataclass(frozen=True)
class RawTime:
    """Seconds and nanos exactly as the request carried them (Timestamp or Duration)."""

    seconds: int
    nanos: int


def timestamp_us(violations: Violations, field: str, value: RawTime | None) -> int | None:
    """A Timestamp in UTC microseconds; a violation when it lies outside protobuf's range."""
    if value is None:
        return None
    if not (_TIMESTAMP_MIN_S <= value.seconds <= _TIMESTAMP_MAX_S) or not (0 <= value.nanos <= _NANOS_MAX):
        violations.add(field, "is not a valid timestamp")
        return None
    return value.seconds * 1_000_000 + value.nanos // 1000


def duration_us(violations: Violations, field: str, value: RawTime | None) -> int | None:
    """A Duration in microseconds; a violation when negative or outside protobuf's range."""
    if value is None:
        return None
    if value.seconds < 0 or value.nanos < 0:
        violations.add(field, "must not be negative")
        return None
    if value.seconds > _DURATION_MAX_S or value.nanos > _NANOS_MAX:
        violations.add(field, "is not a valid duration")
        return None
    return value.seconds * 1_000_000 + value.nanos // 1000


def check_request_id(violations: Violations, field: str, value: str) -> None:
    """An optional client request id: 1 to 64 printable characters without white space."""
    if not value:
        return
    if len(value) > REQUEST_ID_MAX or not value.isprintable() or any(ch.isspace() for ch in value):
        violations.add(field, "must be 1 to 64 printable characters without white space")


def check_page_size(violations: Violations, field: str, value: int, maximum: int) -> None:
    if value < 0 or value > maximum:
        violations.add(field, f"must be between 0 and {maximum}")


def is_blank(text: str) -> bool:
    """True for text that has no visible character (white space only, or nothing)."""
    return not text.strip()
