"""Conversation ends, streamed to services that cache conversation facts (agent_svc's token path).

agent_svc keeps, per conversation, what never changes (owner, agent, channel) so a token does not
cost a GetConversation. The one fact that does change is that a conversation ended, and an ended
conversation must never get a token: so agent_svc may answer from its cache only while it follows
this stream, and forgets everything whenever the stream drops or says `Reset`.

Two sources, so an end is known everywhere and at once where it happened:
- the conversations change feed (every replica's writes, and any other writer of the store);
- `announce`, called by this replica right after it ended a conversation, so the stream carries
  the end before the EndConversation caller has its answer, without waiting for the feed's poll.
A conversation may therefore be sent twice; ending is final, so that is harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from chat_svc.changefeed import Change, ChangeFeed, Signal, Subscription
from chat_svc.records import Status
from chat_svc.watch import ALL_CONVERSATIONS_KEY
from servicekit.auth import Principal
from servicekit.errors import permission_denied

log = structlog.get_logger("chat_svc.ends")


@dataclass(frozen=True)
class Opened:
    """The stream is live: every end from now on is sent."""


@dataclass(frozen=True)
class Ended:
    """A conversation ended."""

    conversation_id: str


@dataclass(frozen=True)
class Reset:
    """Ends may have been missed: what the receiver learnt before this is not to be trusted."""


@dataclass(frozen=True)
class Idle:
    """Nothing happened for a while."""


EndEvent = Opened | Ended | Reset | Idle


class ConversationEnds:
    """Streams conversation ends to service callers.

    Args:
        feed: The conversations change feed.
        keepalive_seconds: Idle time after which a keep-alive is sent.
        open_limit_seconds: How long a new stream waits for the feed to be open (UNAVAILABLE after).
    """

    def __init__(self, feed: ChangeFeed, keepalive_seconds: float, open_limit_seconds: float) -> None:
        self._feed = feed
        self._keepalive = keepalive_seconds
        self._open_limit = open_limit_seconds
        self._local: set[Subscription] = set()

    def announce(self, conversation_id: str) -> None:
        """Tells this replica's streams at once that `conversation_id` has just ended here."""
        item = Change("conversations", "update", {"_id": conversation_id, "status": Status.ENDED.value})
        for subscription in list(self._local):
            subscription.put(item)

    async def stream(self, principal: Principal) -> AsyncIterator[EndEvent]:
        """`Opened` once the feed is live, then every end; PERMISSION_DENIED for users."""
        if not principal.is_service:
            raise permission_denied("only services may follow conversation ends", "SERVICE_ONLY")
        subscription = Subscription()
        # Subscribed before waiting for the feed to open: nothing written after `Opened` is missed.
        self._feed.subscribe(ALL_CONVERSATIONS_KEY, subscription)
        self._local.add(subscription)
        try:
            await self._feed.wait_open(self._open_limit)
            log.info("conversation ends followed", caller=principal.subject)
            yield Opened()
            while True:
                item = await subscription.get(self._keepalive)
                if item is None:
                    yield Idle()
                elif item is Signal.CLOSED:
                    return
                elif item is Signal.RESYNC:
                    yield Reset()
                elif isinstance(item, Change) and item.document.get("status") == Status.ENDED.value:
                    yield Ended(str(item.document["_id"]))
        finally:
            self._local.discard(subscription)
            self._feed.unsubscribe(ALL_CONVERSATIONS_KEY, subscription)
