"""Shared pieces of the property tests that throw random requests at real services."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import message as pb_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.identity import bearer, service_token, user_token
from tests.support.proto_strategies import messages

# What a well-behaved server may answer to arbitrary input. UNKNOWN or INTERNAL mean a crash leaked
# out; UNAVAILABLE would mean a dependency died under the input.
DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)

Invoke = Callable[[pb_message.Message, tuple[tuple[str, str], ...]], None]


def unary_invoker(channel: grpc.Channel, path: str, response_cls: type[pb_message.Message]) -> Invoke:
    call = channel.unary_unary(
        path, request_serializer=_serialize, response_deserializer=response_cls.FromString
    )

    def invoke(request: pb_message.Message, metadata: tuple[tuple[str, str], ...]) -> None:
        call(request, metadata=metadata, timeout=10)

    return invoke


def stream_invoker(channel: grpc.Channel, path: str, response_cls: type[pb_message.Message]) -> Invoke:
    call = channel.unary_stream(
        path, request_serializer=_serialize, response_deserializer=response_cls.FromString
    )

    def invoke(request: pb_message.Message, metadata: tuple[tuple[str, str], ...]) -> None:
        stream = call(request, metadata=metadata, timeout=10)
        try:
            next(stream)  # the first event (a replayed message or the keep-alive) means it opened
        finally:
            stream.cancel()  # type: ignore[attr-defined]

    return invoke


def check_random_requests(
    invoke: Invoke, request_cls: type[pb_message.Message], name: str, max_examples: int
) -> None:
    """Sends random `request_cls` messages as a user and as a service; fails on undocumented codes."""
    tokens = {"user": user_token("fuzz-user"), "service": service_token("fuzz-service")}

    @settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=messages(request_cls), caller=st.sampled_from(sorted(tokens)))
    def check(request: pb_message.Message, caller: str) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            invoke(request, bearer(tokens[caller]))
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # type: ignore[attr-defined]
        assert code in DOCUMENTED, f"{name} answered {code} ({details[:300]}) to {str(request)[:500]}"

    check()


def _serialize(message: pb_message.Message) -> bytes:
    return message.SerializeToString()
