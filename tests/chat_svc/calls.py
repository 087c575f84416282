"""Small call helpers for chat_svc tests (status details decoding, common requests)."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from tests.support.identity import bearer, service_token, user_token

TIMEOUT = 10.0


def as_user(user: str) -> tuple[tuple[str, str], ...]:
    return bearer(user_token(user))


def as_service() -> tuple[tuple[str, str], ...]:
    return bearer(service_token("voice_worker"))


def _details(error: grpc.aio.AioRpcError) -> list[status_pb2.Status]:
    statuses = []
    # The stubs type trailing metadata loosely; at run time it is (key, value) pairs.
    pairs: Any = error.trailing_metadata() or ()
    for key, value in pairs:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            statuses.append(status_pb2.Status.FromString(value))
    return statuses


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths named in the error's BadRequest detail."""
    for status in _details(error):
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                return [v.field for v in bad.field_violations]
    return []


def reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of the error ('' when there is none)."""
    for status in _details(error):
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""


async def create(
    stub: api_grpc.ConversationServiceAsyncStub,
    user: str,
    channel: pb.Channel.ValueType = pb.CHANNEL_TEXT,
    request_id: str = "",
    agent_id: str = "default",
) -> api.CreateConversationResponse:
    return await stub.CreateConversation(
        api.CreateConversationRequest(agent_id=agent_id, channel=channel, request_id=request_id, title="t"),
        metadata=as_user(user),
        timeout=TIMEOUT,
    )


def segment(
    segment_id: str, text: str, final: bool = True, role: pb.Role.ValueType = pb.ROLE_USER
) -> pb.TranscriptSegment:
    return pb.TranscriptSegment(segment_id=segment_id, role=role, text=text, final=final)


async def report(
    stub: api_grpc.ConversationServiceAsyncStub, conversation_id: str, *segments: pb.TranscriptSegment
) -> api.ReportTranscriptResponse:
    return await stub.ReportTranscript(
        api.ReportTranscriptRequest(conversation_id=conversation_id, segments=list(segments)),
        metadata=as_service(),
        timeout=TIMEOUT,
    )
