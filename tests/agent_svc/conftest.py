"""Fixtures for agent_svc: the real LiveKit server, a fake chat_svc, and agent_svc in process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from agent_svc.app import AgentServer, create_server
from devrun.livekit_server import LiveKitKeys
from servicekit.server import RunningServer
from syntera.agent.v1 import agent_service_pb2_grpc
from syntera.livekit.v1 import livekit_service_pb2_grpc
from tests.agent_svc.livekit_support import LiveKitServer, start_livekit
from tests.agent_svc.support import (
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    FakeConversationService,
    make_settings,
    start_fake_chat,
)
from tests.conftest import Store

# The room policy the `agent_svc` fixture runs with: values unlike LiveKit's defaults (300 s, no
# limit), so a test can tell that the server honours what agent_svc asked for.
ROOM_EMPTY_TIMEOUT_SECONDS = 97
ROOM_MAX_PARTICIPANTS = 2


@pytest.fixture(scope="session")
def livekit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """One real LiveKit server for the session, knowing LIVEKIT_KEY/LIVEKIT_SECRET. Do not stop it.

    Tests share it: each uses conversation ids (so rooms) of its own.
    """
    server = start_livekit(tmp_path_factory.mktemp("livekit"), LiveKitKeys(LIVEKIT_KEY, LIVEKIT_SECRET))
    yield server
    server.stop()


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

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def start_agent_svc(
    store: Store, database_name: str, chat_server: RunningServer, livekit_url: str, **env: Any
) -> AgentSvc:
    """agent_svc in process against `livekit_url`, with the test room policy; `env` overrides settings."""
    settings = make_settings(
        **{
            "LIVEKIT_URL": livekit_url,
            "MONGODB_URI": store.uri,
            "MONGODB_DATABASE": database_name,
            "CHAT_SVC_ADDRESS": f"127.0.0.1:{chat_server.port}",
            "LIVEKIT_API_TIMEOUT_SECONDS": 3,
            "LIVEKIT_ROOM_EMPTY_TIMEOUT_SECONDS": ROOM_EMPTY_TIMEOUT_SECONDS,
            "LIVEKIT_ROOM_MAX_PARTICIPANTS": ROOM_MAX_PARTICIPANTS,
            **env,
        }
    )
    server = await create_server(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return AgentSvc(
        server,
        channel,
        livekit_service_pb2_grpc.LiveKitServiceStub(channel),
        agent_service_pb2_grpc.AgentServiceStub(channel),
    )


@pytest.fixture
async def agent_svc(
    store: Store,
    database_name: str,
    livekit: LiveKitServer,
    chat_server: RunningServer,
) -> AsyncIterator[AgentSvc]:
    running = await start_agent_svc(store, database_name, chat_server, livekit.url)
    yield running
    await running.close()
