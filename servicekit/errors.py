"""Domain errors. Domain code raises these; one interceptor turns them into gRPC statuses.

This module must not import grpc: domain code depends on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# `google.rpc.ErrorInfo.domain` of every error the mesh reports, the services' and the edge's own.
ERROR_DOMAIN = "syntera.dev"


class ErrorKind(enum.Enum):
    """The class of failure; maps one-to-one onto a gRPC status code at the boundary."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is the request path (e.g. `agent.display_name`)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One limit a request ran into (goes into `google.rpc.QuotaFailure`).

    Attributes:
        quota_id: The limit's name as configured, e.g. `QUOTA_MAX_CONCURRENT_AGENT_SESSIONS`.
        subject: Whose quota: `deployment`, or `user:{id}`.
        limit: The configured limit.
        description: What was exceeded, for people.
    """

    quota_id: str
    subject: str
    limit: int
    description: str


@dataclass
class DomainError(Exception):
    """A failure a caller can act on.

    Attributes:
        kind: The class of failure.
        reason: UPPER_SNAKE machine-readable reason (goes into `google.rpc.ErrorInfo`).
        message: Human-readable text for the caller. Never put secrets or transcript text here.
        violations: Field violations for INVALID_ARGUMENT (goes into `google.rpc.BadRequest`).
        metadata: Extra ErrorInfo metadata, e.g. the id that was not found.
        quota_violations: The limits hit, for RESOURCE_EXHAUSTED (goes into `google.rpc.QuotaFailure`).
    """

    kind: ErrorKind
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    quota_violations: tuple[QuotaViolation, ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def invalid_argument(violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> DomainError:
    """An INVALID_ARGUMENT error whose message names every bad field."""
    text = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return DomainError(
        ErrorKind.INVALID_ARGUMENT, "INVALID_FIELD", f"invalid request: {text}", tuple(violations)
    )


def not_found(what: str, ident: str, reason: str | None = None) -> DomainError:
    """A NOT_FOUND error naming the kind of thing and its id."""
    return DomainError(
        ErrorKind.NOT_FOUND,
        reason or f"{what.upper()}_NOT_FOUND",
        f"{what} {ident!r} not found",
        metadata={f"{what}_id": ident},
    )


def permission_denied(message: str, reason: str = "PERMISSION_DENIED") -> DomainError:
    return DomainError(ErrorKind.PERMISSION_DENIED, reason, message)


def failed_precondition(message: str, reason: str) -> DomainError:
    return DomainError(ErrorKind.FAILED_PRECONDITION, reason, message)


def unavailable(message: str, reason: str) -> DomainError:
    return DomainError(ErrorKind.UNAVAILABLE, reason, message)


def quota_exceeded(violations: tuple[QuotaViolation, ...]) -> DomainError:
    """A RESOURCE_EXHAUSTED error naming every limit that was reached."""
    text = "; ".join(v.description for v in violations)
    return DomainError(
        ErrorKind.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
        f"usage limit reached: {text}",
        metadata={"limits": ",".join(v.quota_id for v in violations)},
        quota_violations=violations,
    )


def unauthenticated(message: str, reason: str = "UNAUTHENTICATED") -> DomainError:
    return DomainError(ErrorKind.UNAUTHENTICATED, reason, message)


class Violations:
    """Collects field violations so one error can name every bad field at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        self._items.append(FieldViolation(field_path, description))

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise invalid_argument(self._items)
