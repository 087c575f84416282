"""The agent answers typed messages in TEXT conversations, and summarizes calls when they end.

Replies (see SendMessage and RetryReply in the contract):
- A user's new typed message in an ACTIVE TEXT conversation gets one reply message (role AGENT,
  `reply` set) at the next seq, made before SendMessage returns, so watchers see it at once
  (GENERATING, empty, not final). It is keyed by the user message (`reply_for`, unique): a retried
  SendMessage never makes a second one; one that finds none (a crash between the two writes)
  makes it then, if no newer user message exists.
- The text comes from agent_svc (`AgentWriter.reply`, a server stream) and is stored as it grows:
  the first piece at once, then at most one revision per `update_interval`. The end is COMPLETE
  (final), or FAILED with a reason (final; the text that had arrived is kept).
- Cancel, not queue: at most one reply is GENERATING per conversation. A new reply cancels every
  GENERATING reply to an older user message (CANCELLED, final, with what had arrived), and cancels
  itself when a newer user message exists already; the newest message's reply has the older ones
  in its history, so it answers them together. Whatever the order in which concurrent sends on
  any replicas get there, the reply to the newest user message is the one that goes on. Every
  write of a generating reply is conditional on (GENERATING, its attempt): a writer cancelled
  elsewhere finds out at its next write and stops.
- The history sent is bounded: the newest `history_max_messages` final messages up to the one
  answered, within `history_max_chars` (the answered message always goes, cut if need be).
  Replies that did not complete are left out.
- Deadlines: the whole reply must arrive within `reply_timeout` (the GenerateReply deadline);
  agent_svc bounds stalls of the model. A replica that dies mid-reply leaves a lease behind
  (`reply_lease`); any replica's sweeper fails such replies with `REPLY_ABANDONED`.

Summaries: when a VOICE or VIDEO conversation ends, its summary becomes PENDING; after
`summary_delay` (the worker sends its last turns after the hang-up) the transcript's final turns
go to agent_svc (`AgentWriter.summary`) and the summary becomes READY (ABSTRACT from a model,
EXTRACT from the scripted responder) or, after `_SUMMARY_ATTEMPTS` tries of a retryable failure,
FAILED.

No transcript or message text is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from pymongo import ASCENDING, DESCENDING

from chat_svc.changefeed import Change, ChangeFeed, Signal, Subscription
from chat_svc.conversations import Conversations
from chat_svc.messages import MessageLog
from chat_svc.records import Channel, Conversation, Message, Role, Source, Status, now_us
from chat_svc.reply_records import (
    Generator,
    ReplyState,
    SummaryKind,
    SummaryState,
    generator_to_doc,
)
from chat_svc.store import Collections, Document, in_conversation, message_from_doc, store_errors
from chat_svc.validation import check_id
from chat_svc.watch import ALL_CONVERSATIONS_KEY
from servicekit.auth import Principal
from servicekit.errors import DomainError, Violations, failed_precondition, not_found

log = structlog.get_logger("chat_svc.replies")

# Who wrote a reply: chat_svc stores it, on the agent's behalf.
AGENT_SENDER = "agent_svc"
# Replies are capped like transcript turns (the longest text a message holds).
REPLY_TEXT_MAX = 20_000
# A lease outlives its reply's deadline by this much before the sweeper calls the reply abandoned.
_LEASE_MARGIN_SECONDS = 15.0
# How often each replica looks for abandoned replies and summaries.
_SWEEP_SECONDS = 5.0
# Summaries: tries of a retryable failure (agent_svc or the model away), this far apart.
_SUMMARY_ATTEMPTS = 3
_SUMMARY_RETRY_SECONDS = 20.0
# A summary is given at most this many characters of transcript (the most recent ones).
SUMMARY_INPUT_CHARS = 100_000
SUMMARY_INPUT_TURNS = 500
# Failure reasons worth another summary attempt later.
_RETRYABLE = frozenset({"AGENT_SVC_UNAVAILABLE", "LLM_UNAVAILABLE", "LLM_TIMEOUT", "SUMMARY_TIMEOUT"})

Speaker = Literal["user", "agent"]


# -- the port to agent_svc ------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryTurn:
    speaker: Speaker
    text: str


@dataclass(frozen=True)
class GeneratorKnown:
    """The first event of a reply: what is generating it."""

    generator: Generator


@dataclass(frozen=True)
class TextPiece:
    text: str


ReplyEvent = GeneratorKnown | TextPiece


@dataclass(frozen=True)
class SummaryResult:
    text: str
    kind: SummaryKind
    generator: Generator | None


class WriterFailed(Exception):
    """agent_svc gave no (complete) answer; `reason` is the UPPER_SNAKE reason stored with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AgentWriter(Protocol):
    """What chat_svc needs from agent_svc to answer and to summarize (implemented over gRPC)."""

    def reply(
        self, agent_id: str, turns: Sequence[HistoryTurn], conversation_id: str
    ) -> AsyncGenerator[ReplyEvent, None]:
        """The reply to the last turn as it is produced; raises WriterFailed."""
        ...

    async def summary(
        self, agent_id: str, turns: Sequence[HistoryTurn], conversation_id: str
    ) -> SummaryResult:
        """A summary (or extract) of the transcript; raises WriterFailed."""
        ...


@dataclass(frozen=True)
class ReplySettings:
    """Bounds and pacing (seconds, counts); see ChatSettings."""

    reply_timeout: float
    update_interval: float
    history_max_messages: int
    history_max_chars: int
    summary_timeout: float
    summary_delay: float


# -- replies and summaries ------------------------------------------------------------------------


class Replies:
    """Starts, writes, cancels, retries and sweeps replies; makes summaries. One per process."""

    def __init__(
        self,
        collections: Collections,
        conversations: Conversations,
        messages: MessageLog,
        writer: AgentWriter | None,
        settings: ReplySettings,
    ) -> None:
        self._c = collections
        self._conversations = conversations
        self._messages = messages
        self._writer = writer
        self._settings = settings
        # Replies this process is generating, by conversation: (to_seq, task) by message id, so a
        # newer message cancels them at once.
        self._running: dict[str, dict[str, tuple[int, asyncio.Task[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._closing = False

    # -- life cycle ----------------------------------------------------------------------------

    async def ensure_indexes(self) -> None:
        await self._c.messages.create_index(
            [("conversation_id", ASCENDING), ("reply_for", ASCENDING)],
            name="conversation_reply_for_unique",
            unique=True,
            partialFilterExpression={"reply_for": {"$exists": True}},
        )
        await self._c.messages.create_index(
            [("reply_lease", ASCENDING)],
            name="reply_lease",
            partialFilterExpression={"reply_lease": {"$exists": True}},
        )
        await self._c.conversations.create_index(
            [("summary_lease", ASCENDING)],
            name="summary_lease",
            partialFilterExpression={"summary_lease": {"$exists": True}},
        )

    def start(self, conversations_feed: ChangeFeed) -> None:
        """Starts the sweeper (abandoned replies, due summaries) and the follower of ended calls."""
        self._background = [
            asyncio.create_task(self._sweep_forever(), name="replies-sweeper"),
            asyncio.create_task(self._follow_ended(conversations_feed), name="replies-ended-calls"),
        ]

    async def close(self, grace_seconds: float) -> None:
        """Lets replies in flight finish for `grace_seconds`, then fails them (SERVICE_STOPPING)."""
        self._closing = True
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_LEASE_MARGIN_SECONDS)

    # -- replies -------------------------------------------------------------------------------

    async def on_message(
        self, principal: Principal, conversation: Conversation, message: Message, created: bool
    ) -> None:
        """Called by MessageLog after every SendMessage: answers a user's typed TEXT message.

        Never raises: the user's message is stored whatever happens here (a failure is logged, and
        a retried SendMessage makes the missing reply).
        """
        if (
            self._writer is None
            or conversation.channel is not Channel.TEXT
            or conversation.status is not Status.ACTIVE
            or message.role is not Role.USER
            or principal.is_service
        ):
            return
        try:
            if not created:
                if await self._messages.find_by(
                    conversation.conversation_id, "reply_for", message.message_id
                ):
                    return
                if await self._newer_user_message(conversation.conversation_id, message.seq):
                    return
            await self._create(conversation, message)
        except DomainError as exc:
            log.warning("reply not started", conversation_id=conversation.conversation_id, reason=exc.reason)

    async def retry(self, principal: Principal, conversation_id: str, message_id: str) -> Message:
        """RetryReply: a FAILED reply generates again in place (see the contract)."""
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        check_id(violations, "message_id", message_id)
        violations.raise_if_any()
        conversation = await self._conversations.authorize(principal, conversation_id)
        doc = await self._messages.find_by(conversation_id, "_id", message_id)
        if doc is None:
            raise not_found("message", message_id)
        message = message_from_doc(doc)
        if message.reply is None:
            raise failed_precondition("the message is not an agent reply", "NOT_A_REPLY")
        if message.reply.state is not ReplyState.FAILED:
            return message  # generating again already, or done: a repeated retry changes nothing
        if self._writer is None:
            raise failed_precondition("this server does not generate replies", "REPLIES_OFF")
        if conversation.status is not Status.ACTIVE:
            raise failed_precondition("the conversation has ended", "CONVERSATION_ENDED")
        if await self._newer_user_message(conversation_id, message.reply.in_reply_to_seq):
            raise failed_precondition("a newer message has its own reply", "REPLY_SUPERSEDED")
        attempt = message.reply.attempt + 1
        now = now_us()
        with store_errors():
            result = await self._c.messages.update_one(
                {
                    "_id": message_id,
                    "reply.state": ReplyState.FAILED.value,
                    "reply.attempt": message.reply.attempt,
                },
                {
                    "$set": {
                        "reply.state": ReplyState.GENERATING.value,
                        "reply.failure_reason": "",
                        "reply.attempt": attempt,
                        "text": "",
                        "final": False,
                        "update_time": now,
                        "reply_lease": self._lease(now),
                    },
                    "$inc": {"revision": 1},
                },
            )
        if result.modified_count:
            log.info("reply retried", conversation_id=conversation_id, seq=message.seq, attempt=attempt)
            self._spawn(conversation, message_id, message.seq, message.reply.in_reply_to_seq, attempt)
        refreshed = await self._messages.find_by(conversation_id, "_id", message_id)
        return message_from_doc(refreshed or doc)

    async def _create(self, conversation: Conversation, user: Message) -> None:
        conversation_id = conversation.conversation_id
        message_id = uuid.uuid4().hex

        def build(seq: int) -> Document:
            now = now_us()
            return {
                "_id": message_id,
                "conversation_id": conversation_id,
                "seq": seq,
                "revision": 1,
                "role": Role.AGENT.value,
                "source": Source.TEXT.value,
                "text": "",
                "final": False,
                "interrupted": False,
                "sender_id": AGENT_SENDER,
                "create_time": now,
                "update_time": now,
                "language": "",
                "confidence": 0.0,
                "reply": {
                    "state": ReplyState.GENERATING.value,
                    "to_seq": user.seq,
                    "failure_reason": "",
                    "generator": None,
                    "attempt": 1,
                },
                "reply_for": user.message_id,
                "reply_lease": self._lease(now),
            }

        doc, created = await self._messages.append(conversation_id, build, ("reply_for", user.message_id))
        if not created:
            return  # a concurrent retry of the same SendMessage made it
        seq = int(doc["seq"])
        # Older replies of this process stop at once; the store is told in the reply's own task,
        # so SendMessage does not wait for it.
        for to_seq, task in list(self._running.get(conversation_id, {}).values()):
            if to_seq < user.seq:
                task.cancel(msg="superseded")
        log.info("reply started", conversation_id=conversation_id, seq=seq, in_reply_to_seq=user.seq)
        self._spawn(conversation, message_id, seq, user.seq, 1, supersede=True)

    async def _superseded(self, conversation_id: str, message_id: str, to_seq: int) -> bool:
        """Cancels the older replies still generating; True when a newer message makes this one moot."""
        await self._cancel(conversation_id, below_to_seq=to_seq)
        if await self._newer_user_message(conversation_id, to_seq):
            # A newer message got here first: its reply answers this one too.
            await self._cancel(conversation_id, message_id=message_id)
            return True
        return False

    async def _cancel(self, conversation_id: str, *, below_to_seq: int = 0, message_id: str = "") -> None:
        """Marks CANCELLED the generating replies to user messages before `below_to_seq`, or the
        reply `message_id`; their writers (on any replica) stop at their next write."""
        query: dict[str, Any] = in_conversation(conversation_id)
        if message_id:
            query["_id"] = message_id
        else:
            query["reply.to_seq"] = {"$lt": below_to_seq}
        with store_errors():
            result = await self._c.messages.update_many(
                {**query, "reply.state": ReplyState.GENERATING.value},
                {
                    "$set": {
                        "reply.state": ReplyState.CANCELLED.value,
                        "final": True,
                        "update_time": now_us(),
                    },
                    "$unset": {"reply_lease": ""},
                    "$inc": {"revision": 1},
                },
            )
        if result.modified_count:
            log.info(
                "replies cancelled by a newer message",
                conversation_id=conversation_id,
                count=result.modified_count,
            )

    def _spawn(
        self,
        conversation: Conversation,
        message_id: str,
        seq: int,
        to_seq: int,
        attempt: int,
        *,
        supersede: bool = False,
    ) -> None:
        task = asyncio.create_task(
            self._generate(conversation, message_id, seq, to_seq, attempt, supersede),
            name=f"reply:{message_id}:{seq}",
        )
        running = self._running.setdefault(conversation.conversation_id, {})
        running[message_id] = (to_seq, task)
        self._tasks.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            current = self._running.get(conversation.conversation_id, {})
            if message_id in current and current[message_id][1] is done:
                del current[message_id]
                if not current:
                    self._running.pop(conversation.conversation_id, None)

        task.add_done_callback(forget)

    async def _generate(
        self,
        conversation: Conversation,
        message_id: str,
        seq: int,
        to_seq: int,
        attempt: int,
        supersede: bool,
    ) -> None:
        assert self._writer is not None  # noqa: S101 - only spawned with a writer
        writer = _ReplyWriter(self._c, message_id, attempt, self._settings.update_interval)
        started = time.monotonic()
        first_piece: float | None = None
        outcome = "complete"
        try:
            if supersede and await self._superseded(conversation.conversation_id, message_id, to_seq):
                outcome = "superseded"
                return
            turns = await self._history(conversation.conversation_id, to_seq)
            events = self._writer.reply(conversation.agent_id, turns, conversation.conversation_id)
            async with asyncio.timeout(self._settings.reply_timeout), contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, GeneratorKnown):
                        writer.generator = event.generator
                    elif event.text:
                        if first_piece is None:
                            first_piece = time.monotonic()
                        writer.append(event.text)
                    # The first piece is stored at once (the reader sees the reply start), later ones paced.
                    if not await writer.flush(force=writer.flushes == 0 and bool(writer.text)):
                        outcome = "superseded"
                        return
            if not writer.text.strip():
                raise WriterFailed("LLM_EMPTY_REPLY")
            if not await writer.finish(ReplyState.COMPLETE, ""):
                outcome = "superseded"
        except WriterFailed as exc:
            outcome = exc.reason
            await writer.finish(ReplyState.FAILED, exc.reason)
        except TimeoutError:
            outcome = "REPLY_TIMEOUT"
            await writer.finish(ReplyState.FAILED, "REPLY_TIMEOUT")
        except asyncio.CancelledError:
            if self._closing:
                outcome = "SERVICE_STOPPING"
                await writer.finish(ReplyState.FAILED, "SERVICE_STOPPING")
            else:
                outcome = "superseded"
                await writer.cancelled()
            raise
        except DomainError as exc:  # the store, while reading the history
            outcome = exc.reason
            await writer.finish(ReplyState.FAILED, "REPLY_FAILED")
        except Exception:
            outcome = "REPLY_FAILED"
            log.exception("reply failed unexpectedly", conversation_id=conversation.conversation_id, seq=seq)
            await writer.finish(ReplyState.FAILED, "REPLY_FAILED")
        finally:
            log.info(
                "reply finished",
                conversation_id=conversation.conversation_id,
                seq=seq,
                attempt=attempt,
                outcome=outcome,
                chars=len(writer.text),
                revisions=writer.flushes,
                first_piece_ms=None if first_piece is None else round((first_piece - started) * 1000, 1),
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _history(self, conversation_id: str, to_seq: int) -> list[HistoryTurn]:
        """The final turns up to `to_seq`, newest kept, within the message and character bounds."""
        limit = self._settings.history_max_messages
        with store_errors():
            docs = (
                await self._c.messages.find({**in_conversation(conversation_id), "seq": {"$lte": to_seq}})
                .sort("seq", DESCENDING)
                .limit(limit * 3)
                .to_list()
            )
        return bounded_history(
            [message_from_doc(d) for d in docs], to_seq, limit, self._settings.history_max_chars
        )

    async def _newer_user_message(self, conversation_id: str, seq: int) -> bool:
        with store_errors():
            newer = await self._c.messages.find_one(
                {**in_conversation(conversation_id), "seq": {"$gt": seq}, "role": Role.USER.value},
                projection={"_id": True},
            )
        return newer is not None

    def _lease(self, now: int) -> int:
        return now + int((self._settings.reply_timeout + _LEASE_MARGIN_SECONDS) * 1_000_000)

    # -- summaries -----------------------------------------------------------------------------

    async def _follow_ended(self, feed: ChangeFeed) -> None:
        """Begins the summary of every call that ends, however it ended (hang-up, the room closing).

        Every replica sees every change; the conditional PENDING write lets exactly one begin it.
        """
        subscription = Subscription()
        feed.subscribe(ALL_CONVERSATIONS_KEY, subscription)
        try:
            while True:
                item = await subscription.get(_SWEEP_SECONDS)
                if item is Signal.CLOSED:
                    return
                if not isinstance(item, Change):
                    continue  # idle, or RESYNC: a missed end is only a missed summary
                doc = item.document
                if (
                    doc.get("status") == Status.ENDED.value
                    and doc.get("channel") in (Channel.VOICE.value, Channel.VIDEO.value)
                    and "summary" not in doc
                    and not self._closing
                ):
                    await self._begin_summary(str(doc["_id"]))
        finally:
            feed.unsubscribe(ALL_CONVERSATIONS_KEY, subscription)

    async def _begin_summary(self, conversation_id: str) -> None:
        """Marks the summary PENDING (once, whichever replica gets there first) and makes it."""
        now = now_us()
        try:
            with store_errors():
                result = await self._c.conversations.update_one(
                    {"_id": conversation_id, "summary": {"$exists": False}},
                    {
                        "$set": {
                            "summary": {"state": SummaryState.PENDING.value, "attempts": 1},
                            "summary_lease": self._summary_lease(now, self._settings.summary_delay),
                        }
                    },
                )
        except DomainError as exc:
            # The sweeper cannot see a summary that was never marked: it is simply not made.
            log.warning("summary not started", conversation_id=conversation_id, reason=exc.reason)
            return
        if result.modified_count:
            task = asyncio.create_task(
                self._summarize(conversation_id, 1, self._settings.summary_delay), name="summary"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _summarize(self, conversation_id: str, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        started = time.monotonic()
        outcome = "READY"
        try:
            conversation = await self._conversations.load(conversation_id)
            turns = await self._transcript(conversation_id)
            if not turns:
                await self._summary_done(
                    conversation_id, attempt, {"state": SummaryState.READY.value, "text": ""}
                )
                outcome = "EMPTY"
                return
            if self._writer is None:
                raise WriterFailed("REPLIES_OFF")
            async with asyncio.timeout(self._settings.summary_timeout):
                result = await self._writer.summary(conversation.agent_id, turns, conversation_id)
            await self._summary_done(
                conversation_id,
                attempt,
                {
                    "state": SummaryState.READY.value,
                    "text": result.text,
                    "kind": result.kind.value,
                    "generator": generator_to_doc(result.generator),
                },
            )
        except (WriterFailed, TimeoutError, DomainError) as exc:
            reason = exc.reason if isinstance(exc, WriterFailed | DomainError) else "SUMMARY_TIMEOUT"
            outcome = reason
            if reason in _RETRYABLE and attempt < _SUMMARY_ATTEMPTS and not self._closing:
                # Left PENDING: the sweeper claims it again once the lease runs out.
                await self._summary_retry_later(conversation_id, attempt)
            else:
                await self._summary_done(
                    conversation_id, attempt, {"state": SummaryState.FAILED.value, "failure_reason": reason}
                )
        finally:
            log.info(
                "summary finished",
                conversation_id=conversation_id,
                attempt=attempt,
                outcome=outcome,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _transcript(self, conversation_id: str) -> list[HistoryTurn]:
        with store_errors():
            docs = (
                await self._c.messages.find(in_conversation(conversation_id))
                .sort("seq", DESCENDING)
                .limit(SUMMARY_INPUT_TURNS * 2)
                .to_list()
            )
        messages = [message_from_doc(d) for d in docs]
        top = messages[0].seq if messages else 0
        return bounded_history(messages, top, SUMMARY_INPUT_TURNS, SUMMARY_INPUT_CHARS, clip_last=False)

    async def _summary_done(self, conversation_id: str, attempt: int, fields: dict[str, Any]) -> None:
        summary = {"update_time": now_us(), "attempts": attempt, **fields}
        with contextlib.suppress(DomainError), store_errors():
            await self._c.conversations.update_one(
                {
                    "_id": conversation_id,
                    "summary.state": SummaryState.PENDING.value,
                    "summary.attempts": attempt,
                },
                {"$set": {"summary": summary}, "$unset": {"summary_lease": ""}},
            )

    async def _summary_retry_later(self, conversation_id: str, attempt: int) -> None:
        with contextlib.suppress(DomainError), store_errors():
            await self._c.conversations.update_one(
                {
                    "_id": conversation_id,
                    "summary.state": SummaryState.PENDING.value,
                    "summary.attempts": attempt,
                },
                {"$set": {"summary_lease": now_us() + int(_SUMMARY_RETRY_SECONDS * 1_000_000)}},
            )

    def _summary_lease(self, now: int, delay: float) -> int:
        return now + int((delay + self._settings.summary_timeout + _LEASE_MARGIN_SECONDS) * 1_000_000)

    # -- sweeping ------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            try:
                await self.sweep()
            except DomainError as exc:
                log.warning("sweep skipped", reason=exc.reason)

    async def sweep(self) -> None:
        """Fails replies whose replica went away; claims summaries that are due again."""
        now = now_us()
        with store_errors():
            result = await self._c.messages.update_many(
                {"reply_lease": {"$lt": now}, "reply.state": ReplyState.GENERATING.value},
                {
                    "$set": {
                        "reply.state": ReplyState.FAILED.value,
                        "reply.failure_reason": "REPLY_ABANDONED",
                        "final": True,
                        "update_time": now,
                    },
                    "$unset": {"reply_lease": ""},
                    "$inc": {"revision": 1},
                },
            )
        if result.modified_count:
            log.warning("abandoned replies failed", count=result.modified_count)
        while not self._closing:
            with store_errors():
                due = await self._c.conversations.find_one_and_update(
                    {"summary_lease": {"$lt": now}, "summary.state": SummaryState.PENDING.value},
                    {
                        "$set": {"summary_lease": self._summary_lease(now, 0.0)},
                        "$inc": {"summary.attempts": 1},
                    },
                    projection={"summary": True},
                    return_document=True,
                )
            if due is None:
                return
            attempt = int((due.get("summary") or {}).get("attempts") or 1)
            conversation_id = str(due["_id"])
            if attempt > _SUMMARY_ATTEMPTS:
                await self._summary_done(
                    conversation_id,
                    attempt,
                    {"state": SummaryState.FAILED.value, "failure_reason": "SUMMARY_ABANDONED"},
                )
                continue
            task = asyncio.create_task(self._summarize(conversation_id, attempt, 0.0), name="summary-retry")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def bounded_history(
    newest_first: Sequence[Message], to_seq: int, max_messages: int, max_chars: int, *, clip_last: bool = True
) -> list[HistoryTurn]:
    """The turns a model is given, oldest first: final, non-empty, not a failed or cancelled reply.

    Walks back from `to_seq` until `max_messages` turns or `max_chars` characters; the newest turn
    always goes (cut to `max_chars` when `clip_last`).
    """
    turns: list[HistoryTurn] = []
    chars = 0
    for message in newest_first:
        if message.seq > to_seq or not message.final or not message.text.strip():
            continue
        if message.reply is not None and message.reply.state is not ReplyState.COMPLETE:
            continue
        text = message.text
        if chars + len(text) > max_chars:
            if turns or not clip_last:
                break
            text = text[-max_chars:]
        turns.append(HistoryTurn("user" if message.role is Role.USER else "agent", text))
        chars += len(text)
        if len(turns) >= max_messages:
            break
    turns.reverse()
    return turns


class _ReplyWriter:
    """Stores one generating reply as it grows; every write is conditional on its attempt."""

    def __init__(self, collections: Collections, message_id: str, attempt: int, interval: float) -> None:
        self._c = collections
        self._id = message_id
        self._attempt = attempt
        self._interval = interval
        self.text = ""
        self.generator: Generator | None = None
        self._stored_text = ""
        self._stored_generator: Generator | None = None
        self._last = time.monotonic()
        self.flushes = 0

    def append(self, piece: str) -> None:
        room = REPLY_TEXT_MAX - len(self.text)
        if room > 0:
            self.text += piece[:room]

    def _filter(self, state: ReplyState) -> dict[str, Any]:
        return {"_id": self._id, "reply.state": state.value, "reply.attempt": self._attempt}

    async def flush(self, force: bool = False) -> bool:
        """Stores the text when due (or `force`d); False when the reply is no longer generating."""
        changed = self.text != self._stored_text or self.generator != self._stored_generator
        if not changed or (not force and time.monotonic() - self._last < self._interval):
            return True
        fields: dict[str, Any] = {"text": self.text, "update_time": now_us()}
        if self.generator != self._stored_generator:
            fields["reply.generator"] = generator_to_doc(self.generator)
        try:
            with store_errors():
                result = await self._c.messages.update_one(
                    self._filter(ReplyState.GENERATING), {"$set": fields, "$inc": {"revision": 1}}
                )
        except DomainError as exc:
            log.warning("reply revision not stored", reason=exc.reason)  # tried again at the next piece
            return True
        self._last = time.monotonic()
        if not result.matched_count:
            return False  # cancelled (a newer message) or failed by a sweeper
        self._stored_text, self._stored_generator = self.text, self.generator
        self.flushes += 1
        return True

    async def finish(self, state: ReplyState, reason: str) -> bool:
        """Ends the reply (COMPLETE or FAILED, final); False when it was no longer generating."""
        fields: dict[str, Any] = {
            "reply.state": state.value,
            "reply.failure_reason": reason,
            "reply.generator": generator_to_doc(self.generator),
            "text": self.text,
            "final": True,
            "update_time": now_us(),
        }
        try:
            with store_errors():
                result = await self._c.messages.update_one(
                    self._filter(ReplyState.GENERATING),
                    {"$set": fields, "$unset": {"reply_lease": ""}, "$inc": {"revision": 1}},
                )
        except DomainError as exc:
            # Left GENERATING: the sweeper fails it once its lease runs out.
            log.warning("reply end not stored", reason=exc.reason)
            return False
        self.flushes += 1
        return bool(result.matched_count)

    async def cancelled(self) -> None:
        """A newer message cancelled the reply here: CANCELLED (if the store does not say so yet),
        with the text that had arrived."""
        with contextlib.suppress(DomainError), store_errors():
            await self._c.messages.update_one(
                {
                    "_id": self._id,
                    "reply.attempt": self._attempt,
                    "reply.state": {"$in": [ReplyState.GENERATING.value, ReplyState.CANCELLED.value]},
                },
                {
                    "$set": {
                        "reply.state": ReplyState.CANCELLED.value,
                        "reply.generator": generator_to_doc(self.generator),
                        "text": self.text,
                        "final": True,
                        "update_time": now_us(),
                    },
                    "$unset": {"reply_lease": ""},
                    "$inc": {"revision": 1},
                },
            )
