"""Edge tests run against the real mesh (tests/support/mesh.py) through a real Envoy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.support.identity import user_token
from tests.support.mesh import Mesh

ConversationMaker = Callable[[str], Awaitable[str]]


@pytest.fixture
async def edge(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP/1.1 client for Envoy's listener (what curl and browsers use for REST)."""
    assert mesh.envoy_url is not None
    async with httpx.AsyncClient(base_url=mesh.envoy_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def new_conversation(mesh: Mesh, edge: httpx.AsyncClient) -> ConversationMaker:
    """Makes a conversation the user owns and returns its id.

    With chat_svc in the mesh, a VOICE conversation is created through Envoy (ownership is real);
    without it agent_svc runs in dev mode without ownership checks, so any fresh id will do.
    """

    async def make(user: str) -> str:
        if mesh.chat_addr is None:
            return uuid.uuid4().hex
        reply = await edge.post(
            "/v1/conversations",
            json={"agentId": "default", "channel": "CHANNEL_VOICE", "requestId": uuid.uuid4().hex},
            headers={"authorization": f"Bearer {user_token(user)}"},
        )
        assert reply.status_code == 200, reply.text
        conversation_id: str = reply.json()["conversation"]["conversationId"]
        return conversation_id

    return make
