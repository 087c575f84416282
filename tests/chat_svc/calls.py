"""Small call helpers for chat_svc tests (status details decoding, common requests)."""

from __future__ import annotations

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


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths named in the error's BadRequest detail."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return [v.field for v in bad.field_violations]
    return []


def reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason
    return ""


async def create(
    stub: api_grpc.ConversationServiceStub,
    user: str,
    channel: int = pb.CHANNEL_TEXT,
    request_id: str = "",
    agent_id: str = "default",
) -> api.CreateConversationResponse:
    return await stub.CreateConversation(
        api.CreateConversationRequest(agent_id=agent_id, channel=channel, request_id=request_id, title="t"),
        metadata=as_user(user),
        timeout=TIMEOUT,
    )


def segment(segment_id: str, text: str, final: bool = True, role: int = pb.ROLE_USER) -> pb.TranscriptSegment:
    return pb.TranscriptSegment(segment_id=segment_id, role=role, text=text, final=final)


async def report(
    stub: api_grpc.ConversationServiceStub, conversation_id: str, *segments: pb.TranscriptSegment
) -> api.ReportTranscriptResponse:
    return await stub.ReportTranscript(
        api.ReportTranscriptRequest(conversation_id=conversation_id, segments=list(segments)),
        metadata=as_service(),
        timeout=TIMEOUT,
    )
