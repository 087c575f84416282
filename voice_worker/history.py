"""The conversation so far, for an agent that takes over a call another agent left.

When a worker dies mid-call, agent_svc dispatches the agent again with `resume` in the dispatch
metadata (agent_svc.agent_keeper). The new agent must not start over: it reads the conversation's
newest messages from chat_svc (ListMessages, as a service) and starts with them as its chat
context, then greets with a short "I'm back".

Reading is bounded: a deadline per call and the newest `MAX_MESSAGES` final messages. When chat_svc
cannot be read in time the agent still comes back, without the history, and says so in the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import structlog
from livekit.agents import llm

from servicekit.client import ServiceCredentials, open_channel
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res

log = structlog.get_logger("voice_worker.history")

# Enough for the agent to follow the thread; a language model's context takes far more.
MAX_MESSAGES = 40
RESUME_GREETING = "I'm back. Where were we?"

_ROLES = {conv_res.ROLE_USER: "user", conv_res.ROLE_AGENT: "assistant"}


@dataclass(frozen=True)
class Turn:
    """One message of the conversation as the agent's chat context takes it."""

    role: str  # "user" or "assistant"
    text: str


class ConversationHistory:
    """Reads a conversation's newest messages from chat_svc.

    Args:
        address: chat_svc's gRPC address.
        credentials: The worker's service identity.
        timeout: Deadline of each call.
    """

    def __init__(self, address: str, credentials: ServiceCredentials, timeout: float) -> None:
        self._channel = open_channel(address)
        self._stub = conv_grpc.ConversationServiceStub(self._channel)
        self._credentials = credentials
        self._timeout = timeout

    async def newest(self, conversation_id: str) -> list[Turn]:
        """The newest final messages in `seq` order; empty when chat_svc cannot be read."""
        try:
            got = await self._stub.GetConversation(
                conv_pb2.GetConversationRequest(conversation_id=conversation_id),
                timeout=self._timeout,
                metadata=self._credentials.metadata(time.monotonic()),
            )
            listed = await self._stub.ListMessages(
                conv_pb2.ListMessagesRequest(
                    conversation_id=conversation_id,
                    after_seq=max(0, got.conversation.last_seq - MAX_MESSAGES),
                    page_size=MAX_MESSAGES,
                ),
                timeout=self._timeout,
                metadata=self._credentials.metadata(time.monotonic()),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("history unavailable; resuming without it", code=exc.code().name)
            return []
        return [
            Turn(_ROLES[m.role], m.text.strip())
            for m in listed.messages
            if m.final and m.role in _ROLES and m.text.strip()
        ]

    async def aclose(self) -> None:
        await self._channel.close(None)


def chat_context(turns: list[Turn]) -> llm.ChatContext:
    """The turns as an agent's initial chat context."""
    context = llm.ChatContext()
    for turn in turns:
        context.add_message(role=turn.role, content=turn.text)  # type: ignore[arg-type]
    return context
