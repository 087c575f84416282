"""Conversations: create (with call setup through agent_svc), read, list, end. Ownership lives here."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import structlog
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from chat_svc.calls import CallSetup
from chat_svc.records import Call, CallState, Channel, Conversation, JoinGrant, Status, now_us
from chat_svc.store import (
    Collections,
    conversation_from_doc,
    conversation_to_doc,
    equal,
    in_conversation,
    store_errors,
)
from chat_svc.validation import TITLE_MAX, check_id, check_page_size, check_request_id
from servicekit import ids, paging
from servicekit.auth import Principal
from servicekit.errors import DomainError, Violations, not_found, permission_denied

log = structlog.get_logger("chat_svc.conversations")


@dataclass(frozen=True)
class CreateInput:
    """A validated-on-use CreateConversation request. `channel` is None for an unknown value."""

    agent_id: str
    channel: Channel | None
    title: str
    request_id: str


@dataclass(frozen=True)
class Created:
    conversation: Conversation
    join: JoinGrant | None


class Conversations:
    """The conversation store plus the rules around it (ownership, idempotency, call setup)."""

    def __init__(
        self, collections: Collections, calls: CallSetup, page_size: int, page_size_max: int
    ) -> None:
        self._c = collections
        self._calls = calls
        self._page_size = page_size
        self._page_size_max = page_size_max
        self._created: list[Callable[[str], None]] = []

    def on_created(self, listener: Callable[[str], None]) -> None:
        """Calls `listener(conversation_id)` after this process stored a new conversation."""
        self._created.append(listener)

    # -- reading -------------------------------------------------------------------------------

    async def load(self, conversation_id: str, field: str = "conversation_id") -> Conversation:
        """The conversation, any owner; INVALID_ARGUMENT for a malformed id, NOT_FOUND if unknown."""
        _check_conversation_id(conversation_id, field)
        with store_errors():
            doc = await self._c.conversations.find_one({"_id": conversation_id})
        if doc is None:
            raise not_found("conversation", conversation_id)
        return conversation_from_doc(doc)

    async def authorize(self, principal: Principal, conversation_id: str) -> Conversation:
        """The conversation if the caller owns it or is a service; PERMISSION_DENIED otherwise."""
        conversation = await self.load(conversation_id)
        if not principal.is_service and conversation.user_id != principal.subject:
            raise permission_denied("this conversation belongs to another user", "NOT_CONVERSATION_OWNER")
        return conversation

    async def merge_metadata(self, conversation_id: str, entries: dict[str, str]) -> None:
        """Sets metadata entries the call reporter knows (e.g. `providers`), leaving the others.

        Also the existence check of a conversation id not seen before: INVALID_ARGUMENT for a
        malformed id, NOT_FOUND if unknown, in one store command instead of a read and a write
        (a call's first report is on its caller's caption path). No entries: just the read.
        """
        if not entries:
            await self.load(conversation_id)
            return
        _check_conversation_id(conversation_id)
        with store_errors():
            result = await self._c.conversations.update_one(
                {"_id": conversation_id}, {"$set": {f"metadata.{k}": v for k, v in entries.items()}}
            )
        if not result.matched_count:
            raise not_found("conversation", conversation_id)

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self.authorize(principal, conversation_id)
        return await self.with_last_seq(conversation)

    async def with_last_seq(self, conversation: Conversation) -> Conversation:
        """`last_seq` is derived from the messages themselves, never stored as a second truth."""
        with store_errors():
            top = await self._c.messages.find_one(
                in_conversation(conversation.conversation_id),
                sort=[("seq", DESCENDING)],
                projection={"seq": True},
            )
        return replace(conversation, last_seq=int(top["seq"]) if top else 0)

    async def list(
        self, principal: Principal, page_size: int, page_token: str
    ) -> tuple[list[Conversation], str]:
        """The caller's conversations newest first, and the next page token ('' on the last page)."""
        violations = Violations()
        check_page_size(violations, "page_size", page_size, self._page_size_max)
        violations.raise_if_any()
        limit = page_size or self._page_size
        query: dict[str, object] = {"user_id": principal.subject}
        if page_token:
            position = paging.decode(page_token)
            before_time = paging.require_int(position, "t")
            before_id = paging.require_str(position, "id")
            query["$or"] = [
                {"create_time": {"$lt": before_time}},
                {"create_time": before_time, "_id": {"$lt": before_id}},
            ]
        with store_errors():
            cursor = (
                self._c.conversations.find(query)
                .sort([("create_time", DESCENDING), ("_id", DESCENDING)])
                .limit(limit + 1)
            )
            docs = await cursor.to_list()
            last_seqs = await self._last_seqs([str(d["_id"]) for d in docs[:limit]])
        page = [conversation_from_doc(d, last_seqs.get(str(d["_id"]), 0)) for d in docs[:limit]]
        next_token = ""
        if len(docs) > limit:
            tail = page[-1]
            next_token = paging.encode({"t": tail.create_time_us, "id": tail.conversation_id})
        return page, next_token

    async def _last_seqs(self, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        cursor = await self._c.messages.aggregate(
            [
                {"$match": {"conversation_id": {"$in": list(ids)}}},
                {"$group": {"_id": "$conversation_id", "last": {"$max": "$seq"}}},
            ]
        )
        return {str(row["_id"]): int(row["last"]) async for row in cursor}

    # -- creating ------------------------------------------------------------------------------

    async def create(self, principal: Principal, request: CreateInput) -> Created:
        """Creates a conversation; for calls, gets the join grant from agent_svc before storing.

        Idempotent on (caller, request_id): a repeat returns the stored conversation (with a fresh
        join grant while an ACTIVE call), so a retry after a timeout never makes a second one.
        Because the grant is obtained before the insert, an unreachable agent_svc leaves nothing.
        """
        channel = self._validate_create(request)
        if request.request_id:
            existing = await self._by_request_id(principal.subject, request.request_id)
            if existing is not None:
                return await self._repeat(existing)
        await self._calls.check_agent(request.agent_id)
        conversation_id = uuid.uuid4().hex
        join: JoinGrant | None = None
        metadata: dict[str, str] = {}
        room_name = ""
        if channel.is_call:
            join = await self._calls.join_grant(conversation_id, principal.subject, request.agent_id, channel)
            room_name = join.room_name or ids.room_name(conversation_id)
            metadata = {
                "agent_name": join.agent_name,
                "dispatch": "token",
                "token_expire_time_us": str(join.expire_time_us),
            }
        conversation = Conversation(
            conversation_id=conversation_id,
            user_id=principal.subject,
            agent_id=request.agent_id,
            channel=channel,
            status=Status.ACTIVE,
            title=request.title,
            room_name=room_name,
            metadata=metadata,
            create_time_us=now_us(),
            request_id=request.request_id or None,
            # Until agent_svc reports the room (revision 1 on), the call waits for its user.
            call=Call(CallState.WAITING, revision=0) if channel.is_call else None,
        )
        try:
            with store_errors():
                await self._c.conversations.insert_one(conversation_to_doc(conversation))
        except DuplicateKeyError:
            # A concurrent create with the same request_id won; answer with its conversation.
            winner = await self._by_request_id(principal.subject, request.request_id)
            if winner is None:
                raise
            return await self._repeat(winner)
        for listener in self._created:
            listener(conversation_id)
        log.info(
            "conversation created",
            conversation_id=conversation_id,
            channel=channel.value,
            agent_id=request.agent_id,
        )
        return Created(conversation, join)

    def _validate_create(self, request: CreateInput) -> Channel:
        violations = Violations()
        check_id(violations, "agent_id", request.agent_id)
        if request.channel is None:
            violations.add("channel", "must be CHANNEL_TEXT, CHANNEL_VOICE or CHANNEL_VIDEO")
        if len(request.title) > TITLE_MAX:
            violations.add("title", f"must be at most {TITLE_MAX} characters")
        elif request.title and not request.title.isprintable():
            violations.add("title", "must not contain control characters")
        check_request_id(violations, "request_id", request.request_id)
        violations.raise_if_any()
        assert request.channel is not None  # noqa: S101 - a None channel added a violation above
        return request.channel

    async def _by_request_id(self, user_id: str, request_id: str) -> Conversation | None:
        with store_errors():
            doc = await self._c.conversations.find_one(equal(user_id=user_id, request_id=request_id))
        return None if doc is None else conversation_from_doc(doc)

    async def _repeat(self, conversation: Conversation) -> Created:
        join = None
        if conversation.channel.is_call and conversation.status is Status.ACTIVE:
            join = await self._calls.join_grant(
                conversation.conversation_id,
                conversation.user_id,
                conversation.agent_id,
                conversation.channel,
            )
        return Created(await self.with_last_seq(conversation), join)

    # -- ending --------------------------------------------------------------------------------

    async def end(self, principal: Principal, conversation_id: str) -> Conversation:
        """Hangs up: ENDED with end time and duration, then the room is deleted through agent_svc.

        Idempotent. If the room cannot be deleted the hang-up still stands; the conversation is
        marked `room_cleanup=pending` (LiveKit's empty-room timeout closes the room meanwhile).
        """
        conversation = await self.authorize(principal, conversation_id)
        if conversation.status is Status.ENDED:
            return await self.with_last_seq(conversation)
        ended_at = now_us()
        duration = max(0, ended_at - conversation.create_time_us)
        with store_errors():
            result = await self._c.conversations.update_one(
                {"_id": conversation_id, "status": {"$ne": Status.ENDED.value}},
                {"$set": {"status": Status.ENDED.value, "end_time": ended_at, "duration": duration}},
            )
        if result.modified_count and conversation.channel.is_call:
            await self._clean_up_room(conversation_id)
        log.info("conversation ended", conversation_id=conversation_id, first=bool(result.modified_count))
        return await self.with_last_seq(await self.load(conversation_id))

    async def end_with_call(self, conversation: Conversation, ended_at_us: int) -> None:
        """Ends a conversation because its call ended: same fields as `end`, no room to clean up.

        Conditional on the conversation still being open, so a hang-up racing the call's end wins
        cleanly either way.
        """
        ended_at = max(ended_at_us, conversation.create_time_us)
        with store_errors():
            result = await self._c.conversations.update_one(
                {"_id": conversation.conversation_id, "status": Status.ACTIVE.value},
                {
                    "$set": {
                        "status": Status.ENDED.value,
                        "end_time": ended_at,
                        "duration": ended_at - conversation.create_time_us,
                        "metadata.ended_by": "call",
                    }
                },
            )
        if result.modified_count:
            log.info("conversation ended with its call", conversation_id=conversation.conversation_id)

    async def _clean_up_room(self, conversation_id: str) -> None:
        try:
            await self._calls.delete_room(conversation_id)
        except DomainError as exc:
            log.warning("room cleanup failed", conversation_id=conversation_id, reason=exc.reason)
            with store_errors():
                await self._c.conversations.update_one(
                    {"_id": conversation_id}, {"$set": {"metadata.room_cleanup": "pending"}}
                )
            return
        with store_errors():
            await self._c.conversations.update_one(
                {"_id": conversation_id}, {"$set": {"metadata.room_cleanup": "done"}}
            )


def _check_conversation_id(conversation_id: str, field: str = "conversation_id") -> None:
    """INVALID_ARGUMENT naming `field` unless `conversation_id` is a well-formed id."""
    violations = Violations()
    check_id(violations, field, conversation_id)
    violations.raise_if_any()
