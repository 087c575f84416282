"""Maps domain errors onto `google.rpc.Status` with ErrorInfo, BadRequest and QuotaFailure details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from servicekit.errors import ERROR_DOMAIN, DomainError, ErrorKind

DOMAIN = ERROR_DOMAIN

# Error text may quote what the caller sent; clipping keeps the trailers far below gRPC's 8 KiB
# metadata limit (past it the client sees RESOURCE_EXHAUSTED instead of our status).
MAX_MESSAGE_CHARS = 500
MAX_DETAIL_CHARS = 200
MAX_VIOLATIONS = 20

_CODES: dict[ErrorKind, grpc.StatusCode] = {kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind}


def grpc_code(kind: ErrorKind) -> grpc.StatusCode:
    return _CODES[kind]


def to_status(error: DomainError) -> status_pb2.Status:
    """The rich status for `error`: ErrorInfo always, BadRequest / QuotaFailure when there are any."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=DOMAIN,
        metadata={clip(k, MAX_DETAIL_CHARS): clip(v, MAX_DETAIL_CHARS) for k, v in error.metadata.items()},
    )
    details = [_pack(info)]
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=clip(v.field, MAX_DETAIL_CHARS), description=clip(v.description, MAX_DETAIL_CHARS)
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        details.append(_pack(bad_request))
    if error.quota_violations:
        quota_failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=clip(v.subject, MAX_DETAIL_CHARS),
                    description=clip(v.description, MAX_DETAIL_CHARS),
                    quota_id=v.quota_id,
                    quota_value=v.limit,
                )
                for v in error.quota_violations[:MAX_VIOLATIONS]
            ]
        )
        details.append(_pack(quota_failure))
    code_value: int = getattr(code_pb2, error.kind.value)
    return status_pb2.Status(code=code_value, message=clip(error.message, MAX_MESSAGE_CHARS), details=details)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pack(
    message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest | error_details_pb2.QuotaFailure,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
