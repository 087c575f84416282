"""What chat_svc needs from agent_svc, as a port the domain depends on (no grpc here).

The gRPC implementation is `chat_svc.agent_client.AgentServiceClient`; the domain's unit tests use
the hand-written `FakeCallSetup` (tests/chat_svc/fakes.py).
"""

from __future__ import annotations

from typing import Protocol

from chat_svc.records import Channel, JoinGrant


class CallSetup(Protocol):
    """Agent profiles and LiveKit rooms, reached through agent_svc as a service."""

    async def check_agent(self, agent_id: str) -> None:
        """Returns if the agent profile exists; NOT_FOUND (field `agent_id`) or UNAVAILABLE otherwise."""
        ...

    async def join_grant(
        self, conversation_id: str, user_id: str, agent_id: str, channel: Channel
    ) -> JoinGrant:
        """Mints the user's join token for the conversation's room; UNAVAILABLE when agent_svc is down."""
        ...

    async def delete_room(self, conversation_id: str) -> None:
        """Deletes the conversation's room (idempotent); raises a DomainError when it could not."""
        ...
