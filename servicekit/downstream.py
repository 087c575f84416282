"""What a downstream service said when a call failed: the `ErrorInfo` reason of its rich status,
and the limits of a `QuotaFailure`.

Our services attach `google.rpc.Status` (with `ErrorInfo`) to every error they return; a caller
that must tell failures apart (an unreachable model from an unreachable service, say) reads the
reason here instead of parsing messages, and a caller that passes a refusal on (chat_svc, when
agent_svc's quota guard refuses a call) reads the limits here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from servicekit.errors import QuotaViolation

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The `ErrorInfo.reason` the callee attached, or "" when it attached none (or it was no service)."""
    for detail in _details(error):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def quota_violations(error: grpc.aio.AioRpcError) -> tuple[QuotaViolation, ...]:
    """The limits of the callee's `QuotaFailure`, or () when it attached none."""
    found: list[QuotaViolation] = []
    for detail in _details(error):
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            found += [
                QuotaViolation(v.quota_id, v.subject, int(v.quota_value), v.description)
                for v in failure.violations
            ]
    return tuple(found)


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    pairs: Iterable[tuple[str, str | bytes]] = cast(Any, error.trailing_metadata()) or ()
    for key, value in pairs:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return []
        return list(status.details)
    return []
