"""Fixtures for chat_svc: the agent_svc stand-in and chat_svc in process on the session store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.chat_svc.support import ChatInProcess, FakeAgentSvc, chat_in_process, running_fake_agent
from tests.conftest import Store


@pytest.fixture
def fake_agent() -> FakeAgentSvc:
    return FakeAgentSvc()


@pytest.fixture
async def agent_port(fake_agent: FakeAgentSvc) -> AsyncIterator[int]:
    async with running_fake_agent(fake_agent) as port:
        yield port


@pytest.fixture
async def chat(store: Store, database_name: str, agent_port: int) -> AsyncIterator[ChatInProcess]:
    async with chat_in_process(store.uri, database_name, f"127.0.0.1:{agent_port}") as running:
        yield running
