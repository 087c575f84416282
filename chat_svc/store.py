"""MongoDB collections, indexes and document ↔ record conversion.

Ids are strings (uuid4 hex), never ObjectIds. Booleans are read back with `bool()` because the
embedded store hands back updated booleans as 0/1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from chat_svc.records import (
    Call,
    CallEndReason,
    CallParticipant,
    CallState,
    Channel,
    Conversation,
    Message,
    ParticipantKind,
    Role,
    Source,
    Status,
    TurnMetrics,
)
from chat_svc.reply_records import reply_from_doc, reply_to_doc, summary_from_doc
from servicekit import store_errors as servicekit_store_errors
from servicekit.errors import DomainError

Document = dict[str, Any]


@dataclass(frozen=True)
class Collections:
    """The two collections chat_svc owns."""

    conversations: AsyncCollection[Document]
    messages: AsyncCollection[Document]

    @classmethod
    def of(cls, database: AsyncDatabase[Document]) -> Collections:
        return cls(database["conversations"], database["messages"])


def open_client(
    uri: str, timeout_seconds: float, listeners: Sequence[monitoring._EventListener] = ()
) -> AsyncMongoClient[Document]:
    """A client whose every operation has a deadline (client-side operation timeout)."""
    timeout_ms = int(timeout_seconds * 1000)
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=timeout_ms,
        event_listeners=list(listeners),
    )


async def ensure_indexes(collections: Collections) -> None:
    """Creates the indexes the queries and the uniqueness guarantees rely on (idempotent)."""
    # Listing newest first; the `_id` tie-break is applied in the sort (the embedded store cannot
    # index `_id` inside a compound index).
    await collections.conversations.create_index(
        [("user_id", ASCENDING), ("create_time", DESCENDING)], name="user_newest"
    )
    await collections.conversations.create_index(
        [("user_id", ASCENDING), ("request_id", ASCENDING)],
        name="user_request_unique",
        unique=True,
        partialFilterExpression={"request_id": {"$exists": True}},
    )
    # Gap-free seq: a concurrent insert of the same seq fails here and retries with the next one.
    await collections.messages.create_index(
        [("conversation_id", ASCENDING), ("seq", ASCENDING)], name="conversation_seq_unique", unique=True
    )
    await collections.messages.create_index(
        [("conversation_id", ASCENDING), ("segment_id", ASCENDING)],
        name="conversation_segment_unique",
        unique=True,
        partialFilterExpression={"segment_id": {"$exists": True}},
    )
    await collections.messages.create_index(
        [("conversation_id", ASCENDING), ("request_id", ASCENDING)],
        name="conversation_request_unique",
        unique=True,
        partialFilterExpression={"request_id": {"$exists": True}},
    )


def equal(**fields: Any) -> Document:
    """A filter of plain equalities in the form both stores index (see `in_conversation`)."""
    return {name: {"$eq": value} for name, value in fields.items()}


def in_conversation(conversation_id: str) -> Document:
    """The filter on a message's conversation, as every messages query should start.

    `{"$eq": id}` means exactly what `id` alone means to MongoDB and uses the same
    {conversation_id, seq} index there. The embedded store (neosqlite under nx-27017) translates a
    bare value into "equals, or is an array containing it", an OR that its expression index cannot
    serve, so every such query scanned the whole messages collection (about 45 ms at 70,000
    messages, growing with the store); the `$eq` form is a plain indexed equality (under 1 ms).
    """
    return equal(conversation_id=conversation_id)


_STORE = "conversation store"


def store_unavailable() -> DomainError:
    return servicekit_store_errors.store_unavailable(_STORE)


def store_errors() -> contextlib.AbstractContextManager[None]:
    """Turns driver failures into domain errors so callers never see UNKNOWN or a raw traceback."""
    return servicekit_store_errors.store_errors(_STORE)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def conversation_to_doc(conversation: Conversation) -> Document:
    doc: Document = {
        "_id": conversation.conversation_id,
        "user_id": conversation.user_id,
        "agent_id": conversation.agent_id,
        "channel": conversation.channel.value,
        "status": conversation.status.value,
        "title": conversation.title,
        "room_name": conversation.room_name,
        "metadata": dict(conversation.metadata),
        "create_time": conversation.create_time_us,
    }
    if conversation.request_id is not None:
        doc["request_id"] = conversation.request_id
    if conversation.call is not None:
        doc["call"] = call_to_doc(conversation.call)
    return doc


def conversation_from_doc(doc: Mapping[str, Any], last_seq: int | None = None) -> Conversation:
    return Conversation(
        conversation_id=str(doc["_id"]),
        user_id=str(doc["user_id"]),
        agent_id=str(doc.get("agent_id", "")),
        channel=Channel(doc["channel"]),
        status=Status(doc["status"]),
        title=str(doc.get("title", "")),
        room_name=str(doc.get("room_name", "")),
        metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
        create_time_us=int(doc["create_time"]),
        end_time_us=_opt_int(doc.get("end_time")),
        duration_us=_opt_int(doc.get("duration")),
        request_id=doc.get("request_id"),
        last_seq=int(last_seq if last_seq is not None else doc.get("last_seq", 0)),
        summary=summary_from_doc(doc.get("summary")),
        call=call_from_doc(doc["call"]) if doc.get("call") else None,
    )


def call_to_doc(call: Call) -> Document:
    return {
        "state": call.state.value,
        "revision": call.revision,
        "room_sid": call.room_sid,
        "start_time": call.start_time_us,
        "end_time": call.end_time_us,
        "duration": call.duration_us,
        "participants": [
            {
                "identity": p.identity,
                "kind": p.kind.value,
                "join_time": p.join_time_us,
                "leave_time": p.leave_time_us,
            }
            for p in call.participants
        ],
        "agent_join_time": call.agent_join_time_us,
        "end_reason": call.end_reason.value if call.end_reason else None,
        "agent_redispatches": call.agent_redispatches,
        "update_time": call.update_time_us,
    }


def call_from_doc(doc: Mapping[str, Any]) -> Call:
    reason = doc.get("end_reason")
    return Call(
        state=CallState(doc["state"]),
        revision=int(doc.get("revision") or 0),
        room_sid=str(doc.get("room_sid") or ""),
        start_time_us=_opt_int(doc.get("start_time")),
        end_time_us=_opt_int(doc.get("end_time")),
        duration_us=_opt_int(doc.get("duration")),
        participants=tuple(
            CallParticipant(
                identity=str(p.get("identity") or ""),
                kind=ParticipantKind(p["kind"]),
                join_time_us=int(p["join_time"]),
                leave_time_us=_opt_int(p.get("leave_time")),
            )
            for p in doc.get("participants") or ()
        ),
        agent_join_time_us=_opt_int(doc.get("agent_join_time")),
        end_reason=CallEndReason(reason) if reason else None,
        agent_redispatches=int(doc.get("agent_redispatches") or 0),
        update_time_us=_opt_int(doc.get("update_time")),
    )


def metrics_to_doc(metrics: TurnMetrics) -> Document:
    return {
        "end_of_turn_delay": metrics.end_of_turn_delay_us,
        "llm_time_to_first_token": metrics.llm_time_to_first_token_us,
        "tts_time_to_first_byte": metrics.tts_time_to_first_byte_us,
        "transcription_delay": metrics.transcription_delay_us,
    }


def message_to_doc(message: Message) -> Document:
    doc: Document = {
        "_id": message.message_id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "revision": message.revision,
        "role": message.role.value,
        "source": message.source.value,
        "text": message.text,
        "final": message.final,
        "interrupted": message.interrupted,
        "sender_id": message.sender_id,
        "create_time": message.create_time_us,
        "update_time": message.update_time_us,
        "start_time": message.start_time_us,
        "end_time": message.end_time_us,
        "language": message.language,
        "confidence": message.confidence,
        "metrics": metrics_to_doc(message.metrics),
    }
    # Absent, not null: the partial unique indexes only cover documents that have the key.
    if message.segment_id is not None:
        doc["segment_id"] = message.segment_id
    if message.request_id is not None:
        doc["request_id"] = message.request_id
    if message.reply is not None:
        doc["reply"] = reply_to_doc(message.reply)
    return doc


def message_from_doc(doc: Mapping[str, Any]) -> Message:
    metrics = doc.get("metrics") or {}
    return Message(
        message_id=str(doc["_id"]),
        conversation_id=str(doc["conversation_id"]),
        seq=int(doc["seq"]),
        revision=int(doc["revision"]),
        role=Role(doc["role"]),
        source=Source(doc["source"]),
        text=str(doc.get("text", "")),
        final=bool(doc.get("final")),
        interrupted=bool(doc.get("interrupted")),
        sender_id=str(doc.get("sender_id", "")),
        create_time_us=int(doc["create_time"]),
        update_time_us=int(doc["update_time"]),
        segment_id=doc.get("segment_id"),
        request_id=doc.get("request_id"),
        start_time_us=_opt_int(doc.get("start_time")),
        end_time_us=_opt_int(doc.get("end_time")),
        language=str(doc.get("language") or ""),
        confidence=float(doc.get("confidence") or 0.0),
        reply=reply_from_doc(doc.get("reply")),
        metrics=TurnMetrics(
            end_of_turn_delay_us=_opt_int(metrics.get("end_of_turn_delay")),
            llm_time_to_first_token_us=_opt_int(metrics.get("llm_time_to_first_token")),
            tts_time_to_first_byte_us=_opt_int(metrics.get("tts_time_to_first_byte")),
            transcription_delay_us=_opt_int(metrics.get("transcription_delay")),
        ),
    )
