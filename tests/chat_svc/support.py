"""Helpers for chat_svc tests: a hand-written agent_svc stand-in and chat_svc in process.

The stand-in implements the real AgentService and LiveKitService contracts over a real grpc.aio
server and checks the caller's service JWT like agent_svc does, so chat_svc's client wrapper
(deadlines, metadata, error mapping) is exercised for real.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from chat_svc.agent_client import AgentServiceClient
from chat_svc.app import ChatServer, create_server
from chat_svc.changefeed import Disruptions
from chat_svc.settings import ChatSettings
from chat_svc.store import open_client
from servicekit import auth
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.agent.v1 import resources_pb2 as agent_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc
from syntera.livekit.v1 import livekit_service_pb2, livekit_service_pb2_grpc
from tests.support.identity import JWT_SECRET, SERVICE_JWT_SECRET

KNOWN_AGENTS = ("default", "helper")
AGENT_NAME = "syntera-voice"
LIVEKIT_URL = "ws://livekit.test:7880"

Context = grpc.aio.ServicerContext[Any, Any]


async def _require_service(context: Context) -> str:
    header = dict(context.invocation_metadata() or ()).get("authorization", "")
    scheme, _, token = str(header).partition(" ")
    try:
        principal = auth.verify(token, SERVICE_JWT_SECRET)
    except Exception:  # noqa: BLE001 - any failure is an auth failure here
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
    if scheme.lower() != "bearer" or not principal.is_service:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "service callers only")
    return principal.subject


@dataclass
class FakeAgentSvc(
    agent_service_pb2_grpc.AgentServiceServicer, livekit_service_pb2_grpc.LiveKitServiceServicer
):
    """Records what chat_svc asked for; `delete_fails` makes DeleteRoom answer UNAVAILABLE."""

    token_requests: list[livekit_service_pb2.GenerateTokenRequest] = field(default_factory=list)
    deleted_rooms: list[str] = field(default_factory=list)
    callers: set[str] = field(default_factory=set)
    delete_fails: bool = False

    async def GetAgent(  # noqa: N802
        self, request: agent_service_pb2.GetAgentRequest, context: Context
    ) -> agent_service_pb2.GetAgentResponse:
        self.callers.add(await _require_service(context))
        if request.agent_id not in KNOWN_AGENTS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"agent {request.agent_id!r} not found")
        return agent_service_pb2.GetAgentResponse(
            agent=agent_pb.Agent(agent_id=request.agent_id, display_name=request.agent_id)
        )

    async def GenerateToken(  # noqa: N802
        self, request: livekit_service_pb2.GenerateTokenRequest, context: Context
    ) -> livekit_service_pb2.GenerateTokenResponse:
        self.callers.add(await _require_service(context))
        self.token_requests.append(request)
        return livekit_service_pb2.GenerateTokenResponse(
            token=f"lk-token-{request.conversation_id}-{len(self.token_requests)}",
            url=LIVEKIT_URL,
            room_name=f"conversation:{request.conversation_id}",
            identity=request.user_id,
            participant_kind=request.participant_kind,
            expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600),
            agent_name=AGENT_NAME,
        )

    async def DeleteRoom(  # noqa: N802
        self, request: livekit_service_pb2.DeleteRoomRequest, context: Context
    ) -> livekit_service_pb2.DeleteRoomResponse:
        self.callers.add(await _require_service(context))
        if self.delete_fails:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "livekit unreachable")
        self.deleted_rooms.append(request.conversation_id)
        return livekit_service_pb2.DeleteRoomResponse(
            room_name=f"conversation:{request.conversation_id}", deleted=True
        )


@asynccontextmanager
async def running_fake_agent(fake: FakeAgentSvc, port: int = 0) -> AsyncIterator[int]:
    """Serves `fake` on 127.0.0.1 (port 0 picks one); yields the port."""
    server = grpc.aio.server()
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(fake, server)
    livekit_service_pb2_grpc.add_LiveKitServiceServicer_to_server(fake, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(0)


def make_settings(**env: Any) -> ChatSettings:
    values: dict[str, Any] = {
        "SYNTERA_JWT_SECRET": JWT_SECRET,
        "SYNTERA_SERVICE_JWT_SECRET": SERVICE_JWT_SECRET,
        "CHAT_SVC_PORT": 0,
        "WATCH_KEEPALIVE_SECONDS": 0.5,
        "CHANGE_STREAM_POLL_SECONDS": 0.02,
        "AGENT_SVC_TIMEOUT_SECONDS": 2,
        "MONGODB_TIMEOUT_SECONDS": 3,
        **env,
    }
    return ChatSettings(**values)


@dataclass
class ChatInProcess:
    server: ChatServer
    channel: grpc.aio.Channel
    stub: conversation_service_pb2_grpc.ConversationServiceStub
    calls: AgentServiceClient


@asynccontextmanager
async def chat_in_process(store_uri: str, database: str, agent_address: str) -> AsyncIterator[ChatInProcess]:
    """chat_svc on port 0 against `database`, talking to agent_svc at `agent_address`."""
    settings = make_settings(
        MONGODB_URI=store_uri, MONGODB_DATABASE=database, AGENT_SVC_ADDRESS=agent_address
    )
    disruptions = Disruptions()
    client = open_client(settings.mongodb_uri, settings.mongodb_timeout_seconds, [disruptions])
    calls = AgentServiceClient.connect(agent_address, SERVICE_JWT_SECRET, settings.agent_svc_timeout_seconds)
    server = await create_server(settings, client[database], calls, disruptions)
    await server.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield ChatInProcess(
            server, channel, conversation_service_pb2_grpc.ConversationServiceStub(channel), calls
        )
    finally:
        await channel.close()
        await server.stop(0)
        await calls.close()
        await client.close()
