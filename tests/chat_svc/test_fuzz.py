"""Property test: random field values (every field, nested ones too) at every ConversationService RPC,
as a user and as a service, against chat_svc as a real process: only documented codes come back.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message as pb_message

from syntera.conversation.v1 import conversation_service_pb2 as api
from tests.support.fuzzing import check_random_requests, stream_invoker, unary_invoker
from tests.support.mesh import Mesh

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    assert mesh.chat_addr is not None
    with grpc.insecure_channel(mesh.chat_addr) as chan:
        yield chan


@pytest.mark.parametrize(("name", "request_cls", "response_cls"), UNARY, ids=[n for n, _, _ in UNARY])
def test_unary_rpcs_answer_random_input_with_documented_codes(
    channel: grpc.Channel,
    name: str,
    request_cls: type[pb_message.Message],
    response_cls: type[pb_message.Message],
) -> None:
    invoke = unary_invoker(channel, SERVICE + name, response_cls)
    check_random_requests(invoke, request_cls, name, max_examples=40)


@pytest.mark.parametrize(("name", "request_cls", "response_cls"), STREAMS, ids=[n for n, _, _ in STREAMS])
def test_streams_answer_random_input_with_documented_codes(
    channel: grpc.Channel,
    name: str,
    request_cls: type[pb_message.Message],
    response_cls: type[pb_message.Message],
) -> None:
    invoke = stream_invoker(channel, SERVICE + name, response_cls)
    check_random_requests(invoke, request_cls, name, max_examples=25)
