"""Helpers for voice mesh tests: a conversation in the real chat_svc and the worker pointed at it."""

from __future__ import annotations

from pathlib import Path

import grpc

from servicekit.client import ServiceCredentials
from syntera.conversation.v1 import conversation_service_pb2 as pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as pb_grpc
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET, bearer, user_token
from tests.support.mesh import Mesh
from voice_worker.clients import SERVICE_NAME, AgentProfiles, ChatTranscriptSink
from voice_worker.settings import VoiceWorkerSettings

USER = "alice"


def worker_settings(mesh: Mesh, outbox: Path, **extra: object) -> VoiceWorkerSettings:
    assert mesh.chat_addr is not None
    return VoiceWorkerSettings(  # type: ignore[call-arg]
        _env_file=None,
        SYNTERA_JWT_SECRET=JWT_SECRET,
        SYNTERA_SERVICE_JWT_SECRET=SERVICE_JWT_SECRET,
        CHAT_SVC_ADDRESS=mesh.chat_addr,
        AGENT_SVC_ADDRESS=mesh.agent_addr,
        VOICE_WORKER_PROVIDERS="offline",
        VOICE_WORKER_OUTBOX_DIR=str(outbox),
        VOICE_WORKER_RETRY_INITIAL_SECONDS=0.1,
        VOICE_WORKER_RETRY_MAX_SECONDS=0.5,
        VOICE_WORKER_RPC_TIMEOUT_SECONDS=2.0,
        **extra,
    )


def clients(settings: VoiceWorkerSettings) -> tuple[AgentProfiles, ChatTranscriptSink]:
    credentials = ServiceCredentials(settings.service_jwt_secret.get_secret_value(), SERVICE_NAME)
    return (
        AgentProfiles(settings.agent_svc_address, credentials, settings.rpc_timeout_seconds),
        ChatTranscriptSink(settings.chat_svc_address, credentials, settings.rpc_timeout_seconds),
    )


async def create_voice_conversation(mesh: Mesh) -> str:
    assert mesh.chat_addr is not None
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        response = await stub.CreateConversation(
            pb.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_VOICE),
            metadata=bearer(user_token(USER)),
            timeout=10,
        )
    return response.conversation.conversation_id


async def list_messages(mesh: Mesh, conversation_id: str) -> list[res.Message]:
    assert mesh.chat_addr is not None
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        response = await stub.ListMessages(
            pb.ListMessagesRequest(conversation_id=conversation_id, page_size=500),
            metadata=bearer(user_token(USER)),
            timeout=10,
        )
    return list(response.messages)


async def get_conversation(mesh: Mesh, conversation_id: str) -> res.Conversation:
    assert mesh.chat_addr is not None
    async with grpc.aio.insecure_channel(mesh.chat_addr) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        response = await stub.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id),
            metadata=bearer(user_token(USER)),
            timeout=10,
        )
    return response.conversation
