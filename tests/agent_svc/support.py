"""Helpers for agent_svc tests: settings, a fake ConversationService, rich-status decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agent_svc.settings import AgentSettings
from servicekit import context
from servicekit.errors import not_found, permission_denied
from servicekit.server import RunningServer, start_server
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET, TOKEN_POLICY

LIVEKIT_KEY = "APItestkey"
# Long enough that PyJWT does not warn (warnings are errors in tests).
LIVEKIT_SECRET = "livekit-test-secret-0123456789-abcdefghijklmnop"


def make_settings(**env: Any) -> AgentSettings:
    """AgentSettings from explicit values only (no `.env`), keyed by env variable name."""
    values: dict[str, Any] = {
        "SYNTERA_JWT_SECRET": JWT_SECRET,
        "SYNTERA_SERVICE_JWT_SECRET": SERVICE_JWT_SECRET,
        "LIVEKIT_URL": "wss://livekit.example.com",
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
        "CHAT_SVC_ADDRESS": "127.0.0.1:1",
        "AGENT_SVC_PORT": 0,
        # Tests hold many rooms at once; the quota guard has tests of its own.
        "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS": 0,
    }
    values.update(env)
    return AgentSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class StoredConversation:
    owner: str
    agent_id: str
    channel: int = conv_res.CHANNEL_VOICE
    status: int = conv_res.CONVERSATION_STATUS_ACTIVE


class FakeConversationService(conv_grpc.ConversationServiceServicer):
    """chat_svc's GetConversation with its ownership rule: the owner (or a service) only."""

    def __init__(self) -> None:
        self.conversations: dict[str, StoredConversation] = {}
        self.calls = 0
        self.last_subject = ""

    async def GetConversation(
        self, request: conv_pb.GetConversationRequest, _: grpc.aio.ServicerContext[Any, Any]
    ) -> conv_pb.GetConversationResponse:
        self.calls += 1
        principal = context.current_principal()
        self.last_subject = principal.subject
        stored = self.conversations.get(request.conversation_id)
        if stored is None:
            raise not_found("conversation", request.conversation_id)
        if not principal.is_service and principal.subject != stored.owner:
            raise permission_denied("not your conversation")
        return conv_pb.GetConversationResponse(
            conversation=conv_res.Conversation(
                conversation_id=request.conversation_id,
                user_id=stored.owner,
                agent_id=stored.agent_id,
                channel=stored.channel,  # type: ignore[arg-type]
                status=stored.status,  # type: ignore[arg-type]
            )
        )


async def start_fake_chat(service: FakeConversationService) -> RunningServer:
    def register(server: grpc.aio.Server) -> None:
        conv_grpc.add_ConversationServiceServicer_to_server(service, server)

    running = await start_server(
        host="127.0.0.1",
        port=0,
        tokens=TOKEN_POLICY,
        registrars=[register],
        service_names=[conv_pb.DESCRIPTOR.services_by_name["ConversationService"].full_name],
    )
    await running.set_serving(True)
    return running


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]
    raw: bytes


def rich_error(err: grpc.aio.AioRpcError) -> RichError:
    """Decodes the google.rpc.Status the server attached (ErrorInfo reason, BadRequest fields)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {err.code()}: {err.details()}"
    reason = ""
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    assert reason, "every error must carry an ErrorInfo reason"
    return RichError(err.code(), err.details() or "", reason, fields, status.SerializeToString())
