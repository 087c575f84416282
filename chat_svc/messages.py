"""Messages of a conversation: gap-free `seq` allocation, typed messages, listing.

`seq` needs no counter document that could leave gaps: a new message takes (highest seq)+1 and is
inserted; the unique {conversation_id, seq} index makes a concurrent insert of the same seq fail,
and the loser retries with the next one. Messages are never deleted, so seqs stay 1, 2, 3…
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from chat_svc.conversations import Conversations
from chat_svc.records import Conversation, Message, Role, Source, Status, now_us
from chat_svc.store import Collections, Document, in_conversation, message_from_doc, store_errors
from chat_svc.validation import MESSAGE_TEXT_MAX, check_id, check_page_size, check_request_id, is_blank
from servicekit import paging
from servicekit.auth import Principal
from servicekit.errors import DomainError, ErrorKind, Violations, failed_precondition

log = structlog.get_logger("chat_svc.messages")

# Each failed attempt means another writer just took that seq; this many in a row means a pile-up.
_MAX_SEQ_ATTEMPTS = 64
# Conversations whose next seq this process remembers (bounded; forgetting only costs a read).
_SEQ_HINTS_MAX = 10_000

# Told about every sent message, new (True) or a retry's stored one (False), before SendMessage
# answers: the agent's reply starts here (chat_svc.replies). Must not raise.
SentListener = Callable[[Principal, Conversation, Message, bool], Awaitable[None]]
# Told about every message write the store acknowledged, with the operation ("insert", "update")
# and the document as now stored: the watchers of this replica get it at once. Must not raise.
WriteListener = Callable[[str, Document], None]


@dataclass
class _Appending:
    """The appends of one conversation in this process: who holds the turn, how many wait."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class MessageLog:
    """Appends and reads the messages of conversations."""

    def __init__(
        self, collections: Collections, conversations: Conversations, page_size: int, page_size_max: int
    ) -> None:
        self._c = collections
        self._conversations = conversations
        self._page_size = page_size
        self._page_size_max = page_size_max
        # The seq after the last one this process inserted. It can lag (another replica wrote since)
        # but never run ahead of the stored messages, so trying it first cannot make a gap; a lagging
        # hint just fails on the unique index and falls back to reading the highest seq.
        self._seq_hints: dict[str, int] = {}
        self._listeners: list[SentListener] = []
        self._written: list[WriteListener] = []
        self._appending: dict[str, _Appending] = {}
        conversations.on_created(self._starts_empty)

    def _starts_empty(self, conversation_id: str) -> None:
        # A conversation this process just stored has no messages: its first one (a call's first
        # transcript, a text's first message) goes in at seq 1 without reading for the top seq.
        if len(self._seq_hints) >= _SEQ_HINTS_MAX:
            self._seq_hints.clear()
        self._seq_hints.setdefault(conversation_id, 1)

    def on_sent(self, listener: SentListener) -> None:
        """Calls `listener` after every SendMessage has stored (or found) its message."""
        self._listeners.append(listener)

    def on_written(self, listener: WriteListener) -> None:
        """Calls `listener` after each message insert or update made through this log."""
        self._written.append(listener)

    def written(self, operation: str, doc: Document) -> None:
        """Tells the write listeners that `doc` is stored (after the store acknowledged it)."""
        for listener in self._written:
            listener(operation, doc)

    async def append(
        self, conversation_id: str, build: Callable[[int], Document], unique_key: tuple[str, str] | None
    ) -> tuple[Document, bool]:
        """Inserts `build(seq)` at the next free seq; returns (document, created).

        If `unique_key` (field, value) already exists in the conversation (a retry, or a concurrent
        writer of the same segment or request), returns that document with created=False instead.
        """
        # One append at a time per conversation in this process: concurrent ones (a user's message
        # and the agent's reply, two reports) would all read the same newest seq and all but one
        # fail and read again. In turn, each starts from the seq the previous one left as the hint:
        # one insert, no read. Other replicas still meet on the unique index.
        entry = self._appending.get(conversation_id)
        if entry is None:
            entry = self._appending[conversation_id] = _Appending()
        entry.users += 1
        try:
            async with entry.lock:
                return await self._append(conversation_id, build, unique_key)
        finally:
            entry.users -= 1
            if not entry.users:
                del self._appending[conversation_id]

    async def _append(
        self, conversation_id: str, build: Callable[[int], Document], unique_key: tuple[str, str] | None
    ) -> tuple[Document, bool]:
        hint = self._seq_hints.pop(conversation_id, None)
        for _ in range(_MAX_SEQ_ATTEMPTS):
            if hint is not None:
                seq, hint = hint, None
            else:
                with store_errors():
                    top = await self._c.messages.find_one(
                        in_conversation(conversation_id),
                        sort=[("seq", DESCENDING)],
                        projection={"seq": True},
                    )
                seq = int(top["seq"]) + 1 if top else 1
            doc = build(seq)
            try:
                with store_errors():
                    await self._c.messages.insert_one(doc)
            except DuplicateKeyError:
                if unique_key is not None:
                    existing = await self.find_by(conversation_id, *unique_key)
                    if existing is not None:
                        # Still the next seq as far as this process knows; whichever index
                        # refused the insert, seq - 1 is stored, so the hint cannot make a gap.
                        self._seq_hints[conversation_id] = seq
                        return existing, False
                continue  # the seq was taken: try the next one
            if len(self._seq_hints) >= _SEQ_HINTS_MAX:
                self._seq_hints.clear()
            self._seq_hints[conversation_id] = seq + 1
            self.written("insert", doc)
            return doc, True
        log.warning("seq allocation contended", conversation_id=conversation_id)
        raise DomainError(ErrorKind.UNAVAILABLE, "SEQ_CONTENTION", "too many concurrent writers; try again")

    async def find_by(self, conversation_id: str, field: str, value: str) -> Document | None:
        with store_errors():
            return await self._c.messages.find_one({**in_conversation(conversation_id), field: value})

    async def send(self, principal: Principal, conversation_id: str, text: str, request_id: str) -> Message:
        """Stores a typed message; idempotent on `request_id`."""
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        if is_blank(text):
            violations.add("text", "must contain a visible character")
        elif len(text) > MESSAGE_TEXT_MAX:
            violations.add("text", f"must be at most {MESSAGE_TEXT_MAX} characters")
        check_request_id(violations, "request_id", request_id)
        violations.raise_if_any()
        conversation = await self._conversations.authorize(principal, conversation_id)
        if request_id:
            existing = await self.find_by(conversation_id, "request_id", request_id)
            if existing is not None:
                stored = message_from_doc(existing)
                for listener in self._listeners:
                    await listener(principal, conversation, stored, False)
                return stored
        if conversation.status is Status.ENDED:
            raise failed_precondition("the conversation has ended", "CONVERSATION_ENDED")
        if conversation.status is Status.FAILED:
            raise failed_precondition("the conversation's call setup failed", "CONVERSATION_FAILED")
        # A service writing into a conversation speaks for the agent (e.g. a text-mode agent).
        role = Role.AGENT if principal.is_service else Role.USER

        def build(seq: int) -> Document:
            now = now_us()
            doc: dict[str, Any] = {
                "_id": uuid.uuid4().hex,
                "conversation_id": conversation_id,
                "seq": seq,
                "revision": 1,
                "role": role.value,
                "source": Source.TEXT.value,
                "text": text,
                "final": True,
                "interrupted": False,
                "sender_id": principal.subject,
                "create_time": now,
                "update_time": now,
                "language": "",
                "confidence": 0.0,
            }
            if request_id:
                doc["request_id"] = request_id
            return doc

        doc, created = await self.append(
            conversation_id, build, ("request_id", request_id) if request_id else None
        )
        if created:
            log.info("message stored", conversation_id=conversation_id, seq=doc["seq"], chars=len(text))
        message = message_from_doc(doc)
        for listener in self._listeners:
            await listener(principal, conversation, message, created)
        return message

    async def list(
        self, principal: Principal, conversation_id: str, page_size: int, page_token: str, after_seq: int
    ) -> tuple[list[Message], str]:
        """Messages in seq order after `after_seq`, and the next page token ('' on the last page)."""
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        check_page_size(violations, "page_size", page_size, self._page_size_max)
        if after_seq < 0:
            violations.add("after_seq", "must not be negative")
        violations.raise_if_any()
        start = after_seq
        if page_token:
            position = paging.decode(page_token)
            if paging.require_str(position, "c") != conversation_id:
                raise paging.invalid_token("page_token")  # another conversation's token
            start = max(start, paging.require_int(position, "s"))
        await self._conversations.authorize(principal, conversation_id)
        limit = page_size or self._page_size
        with store_errors():
            docs = (
                await self._c.messages.find({**in_conversation(conversation_id), "seq": {"$gt": start}})
                .sort("seq", ASCENDING)
                .limit(limit + 1)
                .to_list()
            )
        page = [message_from_doc(d) for d in docs[:limit]]
        next_token = ""
        if len(docs) > limit:
            next_token = paging.encode({"c": conversation_id, "s": page[-1].seq})
        return page, next_token
