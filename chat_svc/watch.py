"""WatchConversation and WatchConversations as async generators of domain events.

A conversation watcher delivers a message only if its revision is greater than the one already
delivered for that seq, so replays (initial, and after every RESYNC) never duplicate and the
subscription taken before the first read guarantees nothing falls in between.

Resuming: a client resumes with `after_seq` = the highest seq up to which it holds only final
messages (its lowest interim seq minus one, or its highest seq when none is interim). It then gets
every message it missed exactly once: finals above the point, and the current state of its interim
ones. Messages at or below `after_seq` that are still interim are sent again as the contract says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo import ASCENDING

from chat_svc import metrics
from chat_svc.changefeed import Change, ChangeFeed, Signal, Subscription
from chat_svc.conversations import Conversations
from chat_svc.records import Call, CallState, Conversation, Message, Status
from chat_svc.store import Collections, conversation_from_doc, message_from_doc, store_errors
from chat_svc.validation import check_id
from servicekit.auth import Principal
from servicekit.errors import DomainError, ErrorKind, Violations

log = structlog.get_logger("chat_svc.watch")

MESSAGES_FEED = "messages"
CONVERSATIONS_FEED = "conversations"


def message_keys(doc: dict[str, Any]) -> list[str]:
    return [str(doc.get("conversation_id", ""))]


# Every conversation change, for subscribers that follow them all (summaries of ended calls).
ALL_CONVERSATIONS_KEY = "conversations"


def conversation_keys(doc: dict[str, Any]) -> list[str]:
    return [f"conversation:{doc.get('_id')}", f"user:{doc.get('user_id')}", ALL_CONVERSATIONS_KEY]


@dataclass(frozen=True)
class KeepAlive:
    """Nothing happened for a while."""


@dataclass(frozen=True)
class MessageChanged:
    message: Message


@dataclass(frozen=True)
class ConversationCreated:
    conversation: Conversation


@dataclass(frozen=True)
class ConversationEnded:
    conversation: Conversation


@dataclass(frozen=True)
class CallChanged:
    """The conversation's call record changed (a higher revision)."""

    call: Call


@dataclass(frozen=True)
class CallStateChanged:
    """A conversation's call moved to another state (waiting, active, ended)."""

    conversation: Conversation


ConversationEvent = MessageChanged | CallChanged | ConversationEnded | KeepAlive
UserEvent = ConversationCreated | CallStateChanged | ConversationEnded | KeepAlive


@dataclass
class _Delivered:
    """What one watcher has sent: the revision per seq, the highest seq, the seqs still interim."""

    high: int
    revisions: dict[int, int] = field(default_factory=dict)
    interim: set[int] = field(default_factory=set)
    # Records from agent_svc start at revision 1; chat_svc's own "waiting" record (0) is not news.
    call_revision: int = 0

    def accept_call(self, call: Call | None) -> bool:
        if call is None or call.revision <= self.call_revision:
            return False
        self.call_revision = call.revision
        return True

    def accept(self, message: Message) -> bool:
        if self.revisions.get(message.seq, 0) >= message.revision:
            return False
        self.revisions[message.seq] = message.revision
        self.high = max(self.high, message.seq)
        if message.final:
            self.interim.discard(message.seq)
        else:
            self.interim.add(message.seq)
        return True

    def resync_query(self, conversation_id: str) -> dict[str, Any]:
        alternatives: list[dict[str, Any]] = [{"seq": {"$gt": self.high}}]
        if self.interim:
            alternatives.append({"seq": {"$in": sorted(self.interim)}})
        return {"conversation_id": conversation_id, "$or": alternatives}


class Watchers:
    """Serves watch streams from the two change feeds."""

    def __init__(
        self,
        collections: Collections,
        conversations: Conversations,
        messages_feed: ChangeFeed,
        conversations_feed: ChangeFeed,
        keepalive_seconds: float,
        store_timeout_seconds: float,
    ) -> None:
        self._c = collections
        self._conversations = conversations
        self._messages_feed = messages_feed
        self._conversations_feed = conversations_feed
        self._keepalive = keepalive_seconds
        self._store_timeout = store_timeout_seconds

    async def conversation(
        self, principal: Principal, conversation_id: str, after_seq: int
    ) -> AsyncIterator[ConversationEvent]:
        """Stored messages after `after_seq` (and interim ones at or below it), then live changes."""
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        if after_seq < 0:
            violations.add("after_seq", "must not be negative")
        violations.raise_if_any()
        await self._conversations.authorize(principal, conversation_id)
        subscription = Subscription()
        conversation_key = f"conversation:{conversation_id}"
        self._messages_feed.subscribe(conversation_id, subscription)
        self._conversations_feed.subscribe(conversation_key, subscription)
        try:
            await self._messages_feed.wait_open(self._store_timeout)
            await self._conversations_feed.wait_open(self._store_timeout)
            delivered = _Delivered(high=after_seq)
            initial = {
                "conversation_id": conversation_id,
                "$or": [{"seq": {"$gt": after_seq}}, {"final": False}],
            }
            events = await self._catch_up(conversation_id, initial, delivered)
            for event in events:
                yield event
            if events and isinstance(events[-1], ConversationEnded):
                return
            # Tells the client the replay is done and it is live (proxies also flush headers on it).
            yield KeepAlive()
            while True:
                item = await subscription.get(self._keepalive)
                if item is None:
                    yield KeepAlive()
                elif item is Signal.CLOSED:
                    return
                elif item is Signal.RESYNC:
                    query = delivered.resync_query(conversation_id)
                    events = await self._catch_up(conversation_id, query, delivered)
                    for event in events:
                        yield event
                    if events and isinstance(events[-1], ConversationEnded):
                        return
                elif isinstance(item, Change) and item.feed == MESSAGES_FEED:
                    message = message_from_doc(item.document)
                    if delivered.accept(message):
                        metrics.delivered_live(message)
                        yield MessageChanged(message)
                elif isinstance(item, Change):
                    changed = conversation_from_doc(item.document)
                    if delivered.accept_call(changed.call):
                        assert changed.call is not None  # noqa: S101 - accept_call refuses None
                        yield CallChanged(changed.call)
                    if changed.status is Status.ENDED:
                        yield ConversationEnded(await self._conversations.with_last_seq(changed))
                        return
        finally:
            self._messages_feed.unsubscribe(conversation_id, subscription)
            self._conversations_feed.unsubscribe(conversation_key, subscription)

    async def user(self, principal: Principal) -> AsyncIterator[UserEvent]:
        """The caller's conversations as they are created and ended, with keep-alives."""
        subscription = Subscription()
        key = f"user:{principal.subject}"
        self._conversations_feed.subscribe(key, subscription)
        ended_sent: set[str] = set()
        # The call state last sent (or seen at creation) per conversation, to send only changes.
        call_states: dict[str, CallState] = {}
        try:
            await self._conversations_feed.wait_open(self._store_timeout)
            yield KeepAlive()  # subscribed: from here on nothing is missed
            while True:
                item = await subscription.get(self._keepalive)
                if item is None:
                    yield KeepAlive()
                elif item is Signal.CLOSED:
                    return
                elif isinstance(item, Change):
                    conversation = conversation_from_doc(item.document)
                    call = conversation.call
                    if item.operation == "insert":
                        yield ConversationCreated(conversation)
                        if call is not None:
                            call_states[conversation.conversation_id] = call.state
                    # Only agent_svc's records (revision 1 on) say something about the call.
                    elif call is not None and call.revision > 0:
                        if call_states.get(conversation.conversation_id) is not call.state:
                            call_states[conversation.conversation_id] = call.state
                            yield CallStateChanged(conversation)
                    if conversation.status is Status.ENDED and conversation.conversation_id not in ended_sent:
                        ended_sent.add(conversation.conversation_id)
                        yield ConversationEnded(conversation)
                # RESYNC: this stream promises events "as they happen", not a replay; nothing to do.
        finally:
            self._conversations_feed.unsubscribe(key, subscription)

    async def _catch_up(
        self, conversation_id: str, query: dict[str, Any], delivered: _Delivered
    ) -> list[ConversationEvent]:
        """Stored messages the client has not seen, the call if it changed, then ConversationEnded
        if it has ended."""
        events: list[ConversationEvent] = [
            MessageChanged(m) for m in await self._replay(query) if delivered.accept(m)
        ]
        conversation = await self._conversations.load(conversation_id)
        if delivered.accept_call(conversation.call):
            assert conversation.call is not None  # noqa: S101 - accept_call refuses None
            events.append(CallChanged(conversation.call))
        if conversation.status is Status.ENDED:
            events.append(ConversationEnded(await self._conversations.with_last_seq(conversation)))
        return events

    async def _replay(self, query: dict[str, Any]) -> list[Message]:
        """Reads stored messages in seq order, retrying while the store is briefly away.

        Retrying is safe: the subscription already collects everything written meanwhile.
        """
        deadline = time.monotonic() + max(self._store_timeout * 3, 10.0)
        delay = 0.1
        while True:
            try:
                with store_errors():
                    docs = await self._c.messages.find(query).sort("seq", ASCENDING).to_list()
                return [message_from_doc(d) for d in docs]
            except DomainError as exc:
                if exc.kind is not ErrorKind.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                log.info("replay waiting for the store", reason=exc.reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
