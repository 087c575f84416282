"""`ConversationAccess` backed by chat_svc's `ConversationService.GetConversation`."""

from __future__ import annotations

import grpc
import structlog

from agent_svc.model import CallMedia
from agent_svc.ownership import ConversationFacts
from servicekit.auth import Principal
from servicekit.errors import (
    DomainError,
    ErrorKind,
    FieldViolation,
    invalid_argument,
    not_found,
    permission_denied,
    unavailable,
)
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res

log = structlog.get_logger("agent_svc.ownership")

_MEDIA = {conv_res.CHANNEL_VOICE: CallMedia.VOICE, conv_res.CHANNEL_VIDEO: CallMedia.VIDEO}


class ChatConversationAccess:
    """Asks chat_svc for the conversation with the calling user's own bearer token.

    Args:
        channel: A channel to chat_svc (owned by the caller, closed by it).
        timeout_seconds: Deadline of each GetConversation call.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self._stub = conv_grpc.ConversationServiceStub(channel)
        self._timeout = timeout_seconds

    async def resolve(
        self, principal: Principal, bearer_token: str, conversation_id: str
    ) -> ConversationFacts:
        if not bearer_token:
            raise DomainError(ErrorKind.UNAUTHENTICATED, "TOKEN_MISSING", "this call needs a bearer token")
        try:
            reply = await self._stub.GetConversation(
                conv_pb.GetConversationRequest(conversation_id=conversation_id),
                metadata=(("authorization", f"Bearer {bearer_token}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as err:
            raise _map(err, conversation_id) from None
        conversation = reply.conversation
        return ConversationFacts(
            agent_id=conversation.agent_id,
            media=_MEDIA.get(conversation.channel),
            ended=conversation.status == conv_res.CONVERSATION_STATUS_ENDED,
        )


def _map(err: grpc.aio.AioRpcError, conversation_id: str) -> DomainError:
    code = err.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return not_found("conversation", conversation_id)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return permission_denied("the conversation belongs to another user", "CONVERSATION_NOT_OWNED")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return DomainError(
            ErrorKind.UNAUTHENTICATED, "TOKEN_INVALID", "chat_svc did not accept the bearer token"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid_argument([FieldViolation("conversation_id", "is not a valid conversation id")])
    log.warning("ownership check failed", code=code.name)
    return unavailable("the conversation service is unavailable", "CONVERSATION_SERVICE_UNAVAILABLE")
