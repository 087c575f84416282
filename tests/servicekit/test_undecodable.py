"""Requests protobuf cannot decode are INVALID_ARGUMENT naming the field, never UNKNOWN.

A real grpc.aio server with the real generated handlers (and so the real deserializers); the client
sends raw bytes, as a gRPC client or Envoy's transcoder can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from servicekit.server import RunningServer, start_server
from servicekit.wire import invalid_utf8_fields
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from tests.support.identity import TOKEN_POLICY, bearer, user_token

pytestmark = pytest.mark.grpc

GET_AGENT = "/syntera.agent.v1.AgentService/GetAgent"
REPORT = "/syntera.conversation.v1.ConversationService/ReportTranscript"


class _Agents(agent_service_pb2_grpc.AgentServiceServicer):
    async def GetAgent(  # noqa: N802
        self, request: agent_service_pb2.GetAgentRequest, _: Any
    ) -> agent_service_pb2.GetAgentResponse:
        return agent_service_pb2.GetAgentResponse()


class _Conversations(conv_grpc.ConversationServiceServicer):
    async def ReportTranscript(  # noqa: N802
        self, request: conv_pb.ReportTranscriptRequest, _: Any
    ) -> conv_pb.ReportTranscriptResponse:
        return conv_pb.ReportTranscriptResponse()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    running: RunningServer = await start_server(
        host="127.0.0.1",
        port=0,
        tokens=TOKEN_POLICY,
        registrars=[
            lambda server: agent_service_pb2_grpc.add_AgentServiceServicer_to_server(_Agents(), server),
            lambda server: conv_grpc.add_ConversationServiceServicer_to_server(_Conversations(), server),
        ],
        service_names=["syntera.agent.v1.AgentService", "syntera.conversation.v1.ConversationService"],
    )
    await running.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as chan:
        yield chan
    await running.stop(0)


def _raw(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    return [v.field for v in bad_request.field_violations]


def _with_bad_utf8(message: Any, good: bytes, bad: bytes) -> bytes:
    encoded: bytes = message.SerializeToString()
    assert encoded.count(good) == 1
    return encoded.replace(good, bad)


@pytest.mark.parametrize("token", [None, "alice"], ids=["no-token", "user-token"])
async def test_a_string_that_is_not_utf8_is_invalid_argument_naming_it(
    channel: grpc.aio.Channel, token: str | None
) -> None:
    raw = _with_bad_utf8(agent_service_pb2.GetAgentRequest(agent_id="ab"), b"ab", b"\xff\xfe")
    metadata = bearer(user_token(token)) if token else ()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw(channel, GET_AGENT)(raw, metadata=metadata, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["agent_id"]
    details = caught.value.details() or ""
    assert "DecodeError" not in details
    assert "Error parsing" not in details


async def test_nested_and_repeated_fields_are_named_by_path(channel: grpc.aio.Channel) -> None:
    request = conv_pb.ReportTranscriptRequest(
        conversation_id="c1",
        segments=[
            conv_res.TranscriptSegment(segment_id="s1", text="fine"),
            conv_res.TranscriptSegment(segment_id="s2", text="zz"),
        ],
    )
    raw = _with_bad_utf8(request, b"zz", b"\xc3(")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw(channel, REPORT)(raw, metadata=bearer(user_token("alice")), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["segments[1].text"]


async def test_bytes_that_are_no_message_at_all_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _raw(channel, GET_AGENT)(b"\x0a\xff\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == ["request"]


async def test_good_requests_still_reach_the_handler(channel: grpc.aio.Channel) -> None:
    stub = agent_service_pb2_grpc.AgentServiceStub(channel)
    reply = await stub.GetAgent(
        agent_service_pb2.GetAgentRequest(agent_id="default"), metadata=bearer(user_token("alice"))
    )
    assert reply == agent_service_pb2.GetAgentResponse()


@pytest.mark.unit
def test_map_entries_are_named_by_the_map() -> None:
    request = conv_pb.ReportTranscriptRequest(conversation_id="c1", call_metadata={"kk": "v"})
    raw = _with_bad_utf8(request, b"kk", b"\xff\xfe")
    assert invalid_utf8_fields(request.DESCRIPTOR, raw) == ["call_metadata"]
