"""Opaque page tokens: url-safe base64 of a small JSON position, checked strictly when read."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from servicekit.errors import DomainError, FieldViolation, invalid_argument

_PREFIX = "p1."


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, field: str = "page_token") -> dict[str, Any]:
    """The position inside `token`; INVALID_ARGUMENT naming `field` when it is not one of ours."""
    if not token.startswith(_PREFIX) or len(token) > 512:
        raise invalid_token(field)
    body = token[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid_token(field) from None
    if not isinstance(position, dict):
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
    return invalid_argument([FieldViolation(field, "is not a page token returned by this service")])
