"""Conversation facts cached in front of chat_svc, exact because chat_svc streams every end.

A conversation's owner, agent and channel never change; only its end does. So a positive answer
from chat_svc (this user may act on this conversation, with this agent and channel) stays true
until the conversation ends, and chat_svc tells us when that happens (WatchConversationEnds).

The cache answers only while that stream is live, and only with entries filled while the same
stream was live: an entry whose GetConversation began before the stream opened (or before a
`reset`) could predate an end the stream never told us about. When the stream drops, every entry
is forgotten and each request asks chat_svc again until the stream is back. Refusals (another
user's conversation, one that does not exist, one that ended) are never cached: they always go to
chat_svc, which decides them. An end that arrives while a GetConversation for the same
conversation is in flight keeps that answer out of the cache.

No grpc here: `agent_svc.conversation_ends` feeds `opened`, `ended`, `reset`, `dropped`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agent_svc.ownership import ConversationAccess, ConversationFacts
from servicekit.auth import Principal

# How many recent ends are remembered to keep in-flight answers out of the cache; a fill that
# saw more ends than this while it was in flight is not cached (it cannot tell).
_RECENT_ENDS = 4096


@dataclass(frozen=True)
class _Entry:
    user: str
    epoch: object
    facts: ConversationFacts


class CachedConversationAccess:
    """A `ConversationAccess` that remembers positive answers while conversation ends are followed.

    Args:
        source: chat_svc (GetConversation with the user's token), asked on every miss.
        max_entries: Bound on cached conversations; the least recently used is dropped first.
    """

    def __init__(self, source: ConversationAccess, max_entries: int) -> None:
        self._source = source
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Identity of the current live stream; None while no stream is live (nothing is answered).
        self._epoch: object | None = None
        self._ends = 0
        self._recent: OrderedDict[str, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def live(self) -> bool:
        return self._epoch is not None

    def __len__(self) -> int:
        return len(self._entries)

    async def resolve(
        self, principal: Principal, bearer_token: str, conversation_id: str
    ) -> ConversationFacts:
        epoch = self._epoch
        if epoch is not None:
            entry = self._entries.get(conversation_id)
            if entry is not None and entry.epoch is epoch and entry.user == principal.subject:
                self._entries.move_to_end(conversation_id)
                self.hits += 1
                return entry.facts
        self.misses += 1
        ends_before = self._ends
        facts = await self._source.resolve(principal, bearer_token, conversation_id)
        if (
            epoch is not None
            and self._epoch is epoch
            and not facts.ended
            and not principal.is_service
            and not self._ended_since(conversation_id, ends_before)
        ):
            self._entries[conversation_id] = _Entry(principal.subject, epoch, facts)
            self._entries.move_to_end(conversation_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return facts

    def opened(self) -> None:
        """A stream is live: from now on every end is reported. Starts empty."""
        self._entries.clear()
        self._epoch = object()

    def reset(self) -> None:
        """The stream may have missed ends: forget everything, and fills in flight with it."""
        if self._epoch is not None:
            self.opened()

    def dropped(self) -> None:
        """The stream is gone: answer nothing until `opened` again."""
        self._epoch = None
        self._entries.clear()

    def ended(self, conversation_id: str) -> None:
        """The conversation ended: never answer for it again."""
        self._entries.pop(conversation_id, None)
        self._ends += 1
        self._recent[conversation_id] = self._ends
        self._recent.move_to_end(conversation_id)
        while len(self._recent) > _RECENT_ENDS:
            self._recent.popitem(last=False)

    def _ended_since(self, conversation_id: str, ends_before: int) -> bool:
        if self._ends == ends_before:
            return False
        if self._ends - ends_before >= _RECENT_ENDS:
            return True  # more ends than remembered went by: assume this one was among them
        return self._recent.get(conversation_id, 0) > ends_before
