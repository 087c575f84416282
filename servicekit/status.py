"""Maps domain errors onto `google.rpc.Status` with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from servicekit.errors import DomainError, ErrorKind

DOMAIN = "syntera.dev"

_CODES: dict[ErrorKind, grpc.StatusCode] = {kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind}


def grpc_code(kind: ErrorKind) -> grpc.StatusCode:
    return _CODES[kind]


def to_status(error: DomainError) -> status_pb2.Status:
    """The rich status for `error`: ErrorInfo always, BadRequest when fields were wrong."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=dict(error.metadata))
    details = [_pack(info)]
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    code_value: int = getattr(code_pb2, error.kind.value)
    return status_pb2.Status(code=code_value, message=error.message, details=details)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
