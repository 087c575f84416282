"""Fixtures for agent_svc: the LiveKit stand-in, a fake chat_svc, and agent_svc in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from agent_svc.app import AgentServer, create_server
from servicekit.server import RunningServer
from syntera.agent.v1 import agent_service_pb2_grpc
from syntera.livekit.v1 import livekit_service_pb2_grpc
from tests.agent_svc.support import (
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeConversationService,
    make_settings,
    start_fake_chat,
)
from tests.conftest import Store
from tests.support.livekit_standin import LiveKitStandIn


@pytest.fixture
async def livekit() -> AsyncIterator[LiveKitStandIn]:
    async with LiveKitStandIn(LIVEKIT_KEY, LIVEKIT_SECRET) as standin:
        yield standin


@pytest.fixture
def chat() -> FakeConversationService:
    return FakeConversationService()


@pytest.fixture
async def chat_server(chat: FakeConversationService) -> AsyncIterator[RunningServer]:
    running = await start_fake_chat(chat)
    yield running
    await running.stop(0)


@dataclass
class AgentSvc:
    server: AgentServer
    channel: grpc.aio.Channel
    livekit: livekit_service_pb2_grpc.LiveKitServiceStub
    agents: agent_service_pb2_grpc.AgentServiceStub


@pytest.fixture
async def agent_svc(
    store: Store,
    database_name: str,
    livekit: LiveKitStandIn,
    chat_server: RunningServer,
) -> AsyncIterator[AgentSvc]:
    settings = make_settings(
        LIVEKIT_URL=livekit.url,
        MONGODB_URI=store.uri,
        MONGODB_DATABASE=database_name,
        CHAT_SVC_ADDRESS=f"127.0.0.1:{chat_server.port}",
        LIVEKIT_API_TIMEOUT_SECONDS=3,
    )
    server = await create_server(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield AgentSvc(
        server,
        channel,
        livekit_service_pb2_grpc.LiveKitServiceStub(channel),
        agent_service_pb2_grpc.AgentServiceStub(channel),
    )
    await channel.close()
    await server.stop(0)
