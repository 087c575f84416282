"""Field checks shared by every RPC. Each check adds a violation naming the request field."""

from __future__ import annotations

import re

from servicekit.errors import Violations

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Reporter segment ids may embed a room or job name (`conversation:abc/item_1`), hence `:` `/` `.`.
SEGMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@+=-]{1,200}$")
LANGUAGE_PATTERN = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
REQUEST_ID_MAX = 64
TITLE_MAX = 200
MESSAGE_TEXT_MAX = 4000
SEGMENT_TEXT_MAX = 20000
SEGMENTS_MAX = 100


def check_id(violations: Violations, field: str, value: str, *, required: bool = True) -> None:
    """An id matching `^[A-Za-z0-9_-]{1,64}$`."""
    if not value:
        if required:
            violations.add(field, "is required")
        return
    if not ID_PATTERN.fullmatch(value):
        violations.add(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")


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
