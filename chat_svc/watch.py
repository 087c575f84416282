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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from chat_svc import metrics
from chat_svc.changefeed import Change, ChangeFeed, Signal, Subscription
from chat_svc.conversations import Conversations
from chat_svc.records import Call, CallState, Conversation, Message, Status
from chat_svc.store import (
    Collections,
    conversation_from_doc,
    in_conversation,
    message_from_doc,
    store_errors,
)
from chat_svc.validation import check_id
from servicekit.auth import Principal
from servicekit.backoff import Backoff
from servicekit.errors import DomainError, ErrorKind, QuotaViolation, Violations, quota_exceeded

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
    """What one watcher has sent: the revision per seq, the seqs still interim, and `high`, the
    highest seq up to which every message was sent.

    `high` only moves over an unbroken run of seqs: a replica hands its own writes to its watchers
    at once while another replica's earlier seq may still be on its way through the change feed,
    so a message can arrive before a lower seq; a re-read after RESYNC must still find that one.
    """

    high: int
    revisions: dict[int, int] = field(default_factory=dict)
    # The client's resume point: it holds every message up to here as final already.
    floor: int = 0
    interim: set[int] = field(default_factory=set)
    # Records from agent_svc start at revision 1; chat_svc's own "waiting" record (0) is not news.
    call_revision: int = 0

    def accept_call(self, call: Call | None) -> bool:
        if call is None or call.revision <= self.call_revision:
            return False
        self.call_revision = call.revision
        return True

    def has(self, doc: dict[str, Any]) -> bool:
        """True when this stored message's revision (or a newer one) was sent already."""
        try:
            return self.revisions.get(int(doc["seq"]), 0) >= int(doc["revision"])
        except (KeyError, TypeError, ValueError):
            return False  # decoded (and judged) in full instead

    def accept(self, message: Message) -> bool:
        if self.revisions.get(message.seq, 0) >= message.revision:
            return False
        # As the replay does: at or below the resume point only what is (or was sent as) interim.
        # The feed can still bring changes made before this watcher opened.
        if message.seq <= self.floor and message.final and message.seq not in self.revisions:
            return False
        self.revisions[message.seq] = message.revision
        while self.high + 1 in self.revisions:
            self.high += 1
        if message.final:
            self.interim.discard(message.seq)
        else:
            self.interim.add(message.seq)
        return True

    def resync_queries(self, conversation_id: str) -> tuple[Query, ...]:
        return _replay_queries(conversation_id, self.high, tuple(sorted(self.interim)), interim_below=False)


# One find on the messages collection, as (conversation id, kind, bound, seqs) so that watchers
# asking the same thing share a read (see _SharedReads).
Query = tuple[str, str, int, tuple[int, ...]]


def _replay_queries(
    conversation_id: str, after_seq: int, interim: tuple[int, ...], *, interim_below: bool
) -> tuple[Query, ...]:
    """The reads a replay needs, each served by the {conversation_id, seq} index.

    One `$or` would say the same, but the embedded store evaluates `$or` by reading every stored
    message in Python; MongoDB would plan each branch on the index anyway.
    """
    queries: list[Query] = [(conversation_id, "after", after_seq, ())]
    if interim_below and after_seq > 0:
        queries.append((conversation_id, "interim_upto", after_seq, ()))
    if interim:
        queries.append((conversation_id, "seqs", 0, interim))
    return tuple(queries)


def _filter(query: Query) -> dict[str, Any]:
    conversation_id, kind, bound, seqs = query
    if kind == "after":
        return {**in_conversation(conversation_id), "seq": {"$gt": bound}}
    if kind == "interim_upto":
        return {**in_conversation(conversation_id), "seq": {"$lte": bound}, "final": False}
    return {**in_conversation(conversation_id), "seq": {"$in": list(seqs)}}


@dataclass(frozen=True)
class _Snapshot:
    """What a replay read: the messages in seq order and the conversation."""

    messages: tuple[Message, ...]
    conversation: Conversation


class _SharedReads:
    """Watchers of one conversation that open (or resync) together share one replay read.

    At most one read per question is in flight; whoever asks meanwhile waits for the next one,
    which starts when the current one ends and serves them all. A watcher never joins a read
    that has already started: it subscribed to the feed before asking, so a read that starts
    after that sees every write the subscription might have missed.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[Query, ...], asyncio.Task[None]] = {}
        self._next: dict[tuple[Query, ...], asyncio.Future[_Snapshot]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: tuple[Query, ...], read: Callable[[], Awaitable[_Snapshot]]) -> _Snapshot:
        future = self._next.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # Retrieved here so a read whose watchers all left does not log "never retrieved".
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._next[key] = future
            task = asyncio.create_task(self._run(key, future, read))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _run(
        self,
        key: tuple[Query, ...],
        future: asyncio.Future[_Snapshot],
        read: Callable[[], Awaitable[_Snapshot]],
    ) -> None:
        running = self._running.get(key)
        if running is not None:
            try:
                await asyncio.wait({running})
            except asyncio.CancelledError:
                future.cancel()
                raise
        # From here on, newcomers wait for a later read.
        if self._next.get(key) is future:
            del self._next[key]
        me = asyncio.current_task()
        assert me is not None  # noqa: S101 - always inside a task
        self._running[key] = me
        try:
            future.set_result(await read())
        except Exception as exc:  # noqa: BLE001 - handed to every watcher waiting for this read
            future.set_exception(exc)
        finally:
            if self._running.get(key) is me:
                del self._running[key]
            if not future.done():  # cancelled (shutdown): nobody may wait for it forever
                future.cancel()


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
        max_per_user: int = 0,
    ) -> None:
        """`max_per_user`: conversation watch streams one user may hold open at once (0: no limit)."""
        self._c = collections
        self._conversations = conversations
        self._messages_feed = messages_feed
        self._conversations_feed = conversations_feed
        self._keepalive = keepalive_seconds
        self._store_timeout = store_timeout_seconds
        self._max_per_user = max_per_user
        self._open_per_user: dict[str, int] = {}
        self._shared = _SharedReads()

    async def conversation(
        self, principal: Principal, conversation_id: str, after_seq: int
    ) -> AsyncGenerator[ConversationEvent, None]:
        """Stored messages after `after_seq` (and interim ones at or below it), then live changes."""
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        if after_seq < 0:
            violations.add("after_seq", "must not be negative")
        violations.raise_if_any()
        await self._conversations.authorize(principal, conversation_id)
        # Counted from here to the end of the stream; services (the voice worker follows every
        # call it serves) are not users and are bounded by their own deployment.
        user = None if principal.is_service else principal.subject
        if user is not None:
            held = self._open_per_user.get(user, 0)
            if self._max_per_user and held >= self._max_per_user:
                raise _too_many_watches(user, self._max_per_user)
            self._open_per_user[user] = held + 1
        subscription = Subscription()
        conversation_key = f"conversation:{conversation_id}"
        self._messages_feed.subscribe(conversation_id, subscription)
        self._conversations_feed.subscribe(conversation_key, subscription)
        try:
            await self._messages_feed.wait_open(self._store_timeout)
            await self._conversations_feed.wait_open(self._store_timeout)
            delivered = _Delivered(high=after_seq, floor=after_seq)
            initial = _replay_queries(conversation_id, after_seq, (), interim_below=True)
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
                    queries = delivered.resync_queries(conversation_id)
                    events = await self._catch_up(conversation_id, queries, delivered)
                    for event in events:
                        yield event
                    if events and isinstance(events[-1], ConversationEnded):
                        return
                elif isinstance(item, Change) and item.feed == MESSAGES_FEED:
                    # Every write comes twice on the replica that made it (at once, then from the
                    # feed): the repeat is dropped before it is decoded.
                    if delivered.has(item.document):
                        continue
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
            if user is not None:
                left = self._open_per_user.get(user, 1) - 1
                if left > 0:
                    self._open_per_user[user] = left
                else:
                    self._open_per_user.pop(user, None)

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
        self, conversation_id: str, queries: tuple[Query, ...], delivered: _Delivered
    ) -> list[ConversationEvent]:
        """Stored messages the client has not seen, the call if it changed, then ConversationEnded
        if it has ended."""
        snapshot = await self._shared.read(queries, lambda: self._snapshot(conversation_id, queries))
        events: list[ConversationEvent] = [
            MessageChanged(m) for m in snapshot.messages if delivered.accept(m)
        ]
        conversation = snapshot.conversation
        if delivered.accept_call(conversation.call):
            assert conversation.call is not None  # noqa: S101 - accept_call refuses None
            events.append(CallChanged(conversation.call))
        if conversation.status is Status.ENDED:
            events.append(ConversationEnded(await self._conversations.with_last_seq(conversation)))
        return events

    async def _snapshot(self, conversation_id: str, queries: tuple[Query, ...]) -> _Snapshot:
        by_seq: dict[int, Message] = {}
        for query in queries:
            for message in await self._replay(_filter(query)):
                by_seq[message.seq] = message
        conversation = await self._conversations.load(conversation_id)
        return _Snapshot(tuple(by_seq[seq] for seq in sorted(by_seq)), conversation)

    async def _replay(self, query: dict[str, Any]) -> list[Message]:
        """Reads stored messages, retrying while the store is briefly away.

        Retrying is safe: the subscription already collects everything written meanwhile.
        """
        deadline = time.monotonic() + max(self._store_timeout * 3, 10.0)
        backoff = Backoff(0.1, 1.0)
        while True:
            try:
                with store_errors():
                    docs = await self._c.messages.find(query).to_list()
                return [message_from_doc(d) for d in docs]
            except DomainError as exc:
                if exc.kind is not ErrorKind.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                log.info("replay waiting for the store", reason=exc.reason)
                await backoff.wait()


def _too_many_watches(user: str, limit: int) -> DomainError:
    return quota_exceeded(
        (
            QuotaViolation(
                "WATCH_MAX_PER_USER",
                f"user:{user}",
                limit,
                f"at most {limit} conversation watch streams open at once per user",
            ),
        )
    )
