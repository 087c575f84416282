"""Who may act on a conversation's room: one source of truth, the conversation in chat_svc.

agent_svc keeps no copy of conversation data. For a user caller it asks chat_svc for the
conversation with the user's own credentials, so chat_svc's ownership rule decides; service
callers are trusted and skip the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent_svc.model import CallMedia
from servicekit.auth import Principal


@dataclass(frozen=True)
class ConversationFacts:
    """What agent_svc needs to know about a conversation the caller may act on.

    Attributes:
        agent_id: The agent profile the conversation is with (empty if chat_svc has none).
        media: VOICE or VIDEO for calls; None for a text-only conversation.
        ended: True once the conversation has been hung up.
    """

    agent_id: str
    media: CallMedia | None
    ended: bool = False


class ConversationAccess(Protocol):
    """Resolves a conversation for a user, enforcing that the user may act on it."""

    async def resolve(
        self, principal: Principal, bearer_token: str, conversation_id: str
    ) -> ConversationFacts:
        """The conversation's facts.

        Raises:
            DomainError: NOT_FOUND / PERMISSION_DENIED when the user may not act on it,
                UNAVAILABLE when the source of truth cannot be asked.
        """
        ...


class UncheckedConversationAccess:
    """Dev mode without chat_svc: ownership cannot be checked, so every conversation is allowed.

    Only constructed when SYNTERA_DEV_MODE is on and CHAT_SVC_ADDRESS is empty (settings refuse
    that combination otherwise), and announced with a warning at start-up.
    """

    async def resolve(
        self, principal: Principal, bearer_token: str, conversation_id: str
    ) -> ConversationFacts:
        return ConversationFacts(agent_id="", media=None)
