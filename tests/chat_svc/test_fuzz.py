"""Property test: random field values (every field, nested ones too) at every ConversationService RPC,
as a user and as a service, against chat_svc as a real process: only documented codes come back.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message as pb_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syntera.conversation.v1 import conversation_service_pb2 as api
from tests.support.identity import bearer, service_token, user_token
from tests.support.mesh import Mesh
from tests.support.proto_strategies import messages

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}
SERVICE = "/syntera.conversation.v1.ConversationService/"
UNARY: list[tuple[str, type[pb_message.Message], type[pb_message.Message]]] = [
    ("CreateConversation", api.CreateConversationRequest, api.CreateConversationResponse),
    ("GetConversation", api.GetConversationRequest, api.GetConversationResponse),
    ("ListConversations", api.ListConversationsRequest, api.ListConversationsResponse),
    ("EndConversation", api.EndConversationRequest, api.EndConversationResponse),
    ("SendMessage", api.SendMessageRequest, api.SendMessageResponse),
    ("ListMessages", api.ListMessagesRequest, api.ListMessagesResponse),
    ("ReportTranscript", api.ReportTranscriptRequest, api.ReportTranscriptResponse),
]
STREAMS: list[tuple[str, type[pb_message.Message], type[pb_message.Message]]] = [
    ("WatchConversation", api.WatchConversationRequest, api.WatchConversationResponse),
    ("WatchConversations", api.WatchConversationsRequest, api.WatchConversationsResponse),
]
CALLERS = st.sampled_from(["user", "service"])


@pytest.fixture(scope="module")
def channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    assert mesh.chat_addr is not None
    with grpc.insecure_channel(mesh.chat_addr) as chan:
        yield chan


def _tokens() -> dict[str, str]:
    return {"user": user_token("fuzz-user"), "service": service_token("fuzz-service")}


def _serialize(message: pb_message.Message) -> bytes:
    return message.SerializeToString()


@pytest.mark.parametrize(("name", "request_cls", "response_cls"), UNARY, ids=[n for n, _, _ in UNARY])
def test_unary_rpcs_answer_random_input_with_documented_codes(
    channel: grpc.Channel,
    name: str,
    request_cls: type[pb_message.Message],
    response_cls: type[pb_message.Message],
) -> None:
    call = channel.unary_unary(
        SERVICE + name, request_serializer=_serialize, response_deserializer=response_cls.FromString
    )
    tokens = _tokens()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=messages(request_cls), caller=CALLERS)
    def check(request: pb_message.Message, caller: str) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            call(request, metadata=bearer(tokens[caller]), timeout=10)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # type: ignore[attr-defined]
        assert code in DOCUMENTED, f"{name} answered {code} ({details[:300]}) to {str(request)[:500]}"

    check()


@pytest.mark.parametrize(("name", "request_cls", "response_cls"), STREAMS, ids=[n for n, _, _ in STREAMS])
def test_streams_answer_random_input_with_documented_codes(
    channel: grpc.Channel,
    name: str,
    request_cls: type[pb_message.Message],
    response_cls: type[pb_message.Message],
) -> None:
    call = channel.unary_stream(
        SERVICE + name, request_serializer=_serialize, response_deserializer=response_cls.FromString
    )
    tokens = _tokens()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=messages(request_cls), caller=CALLERS)
    def check(request: pb_message.Message, caller: str) -> None:
        code, details = grpc.StatusCode.OK, ""
        stream = call(request, metadata=bearer(tokens[caller]), timeout=10)
        try:
            next(stream)  # the first event (a replayed message or the keep-alive) means it opened
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # type: ignore[attr-defined]
        finally:
            stream.cancel()  # type: ignore[attr-defined]
        assert code in DOCUMENTED, f"{name} answered {code} ({details[:300]}) to {str(request)[:500]}"

    check()
