"""Opaque page tokens: url-safe base64 of a small JSON position, checked strictly when read.

Every List RPC of the mesh pages with these. The prefix versions the format, so that a token from
an older release is refused as "not a page token" rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from servicekit.errors import DomainError, FieldViolation, invalid_argument

_PREFIX = "p1."
# Bounds the work a hostile token can cause; the longest token the mesh makes (ListAgents', with a
# 100-character display name all escaped) is about 1,700 characters.
_MAX_CHARS = 2048
# The field violation of a token this service did not make.
NOT_OURS = "is not a page token returned by this service"


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read(token: str) -> dict[str, Any] | None:
    """The position inside `token`, or None when it is not one of ours."""
    if not token.startswith(_PREFIX) or len(token) > _MAX_CHARS:
        return None
    body = token[len(_PREFIX) :]
    try:
        position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    return position if isinstance(position, dict) else None


def decode(token: str, field: str = "page_token") -> dict[str, Any]:
    """The position inside `token`; INVALID_ARGUMENT naming `field` when it is not one of ours."""
    position = read(token)
    if position is None:
        raise invalid_token(field)
    return position


def require_int(position: dict[str, Any], key: str, field: str = "page_token") -> int:
    value = position.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**63:
        raise invalid_token(field)
    return value


def require_str(position: dict[str, Any], key: str, field: str = "page_token") -> str:
    value = position.get(key)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise invalid_token(field)
    return value


def invalid_token(field: str) -> DomainError:
    return invalid_argument([FieldViolation(field, NOT_OURS)])
