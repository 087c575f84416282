"""Calls on MongoDB: every event once (`call_events`) and each conversation's folded call (`calls`).

`call_events` is the truth: one document per event id, so a repeated webhook is refused by the
primary key. `calls` holds, per conversation, the record folded from those events plus what the
quota guard needs at hand: the owner, the admission hold, and the revision pushed to chat_svc.
Counts and minutes are read from the store, never from process memory, so they survive restarts
and hold across replicas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from agent_svc.call_record import (
    CallEvent,
    CallRecord,
    CallState,
    EventKind,
    Presence,
    Role,
    Session,
)
from servicekit.store_errors import store_errors as servicekit_store_errors

EVENTS_COLLECTION = "call_events"
CALLS_COLLECTION = "calls"
# `state` of a call whose room has not started yet (it may hold an admission, see `reserved_until`).
NOT_STARTED = "none"
_RUNNING_STATES = [CallState.WAITING.value, CallState.ACTIVE.value]

Document = dict[str, Any]


@dataclass(frozen=True)
class StoredCall:
    """A conversation's call as stored.

    Attributes:
        record: The call folded from its events.
        user_id: The conversation's user (from the token request, else the first user to join).
        agent_id: The agent profile the call runs with (for dispatching it again).
        reserved_at_us: When the call was last admitted (the hold below was made).
        reserved_until_us: Until when an admitted call that has not started counts as live.
        revision: Grows with every change of `record`.
        synced: True once chat_svc has this revision.
        update_us: When `record` last changed.
    """

    record: CallRecord
    user_id: str = ""
    agent_id: str = ""
    reserved_at_us: int = 0
    reserved_until_us: int = 0
    revision: int = 0
    synced: bool = True
    update_us: int = 0

    @property
    def conversation_id(self) -> str:
        return self.record.conversation_id

    def live(self, now_us: int) -> bool:
        """True while the call takes (or is about to take) an agent session."""
        if self.record.started and not self.record.ended:
            return True
        # A hold counts until it lapses, unless a room has started since it was made (the call it
        # was for has taken its session, and may be over by now).
        end = self.record.end_us
        return self.reserved_until_us > now_us and (end is None or self.reserved_at_us > end)


def store_errors() -> contextlib.AbstractContextManager[None]:
    """Driver failures as UNAVAILABLE (a webhook is then retried by LiveKit), never a raw error."""
    return servicekit_store_errors("call store")


class CallStore:
    """The two collections. All times are UTC microseconds."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._events: AsyncCollection[Document] = database[EVENTS_COLLECTION]
        self._calls: AsyncCollection[Document] = database[CALLS_COLLECTION]

    async def prepare(self) -> None:
        await self._events.create_index([("conversation_id", ASCENDING)], name="conversation")
        await self._calls.create_index([("state", ASCENDING)], name="state")
        await self._calls.create_index([("months", ASCENDING)], name="months")
        await self._calls.create_index([("month_last", ASCENDING)], name="month_last")
        await self._calls.create_index([("reserved_until", ASCENDING)], name="reserved_until")
        await self._calls.create_index([("user_id", ASCENDING)], name="user")
        await self._calls.create_index([("synced", ASCENDING)], name="synced")
        await self._backfill_month_span()

    async def _backfill_month_span(self) -> None:
        """Gives calls stored before `month_first`/`month_last` existed their span, once."""
        with store_errors():
            async for doc in self._calls.find({"month_last": {"$exists": False}}, {"months": True}):
                first, last = _month_span(doc.get("months") or [])
                await self._calls.update_one(
                    {"_id": doc["_id"]}, {"$set": {"month_first": first, "month_last": last}}
                )

    async def add_event(self, event: CallEvent) -> bool:
        """Stores the event; False when an event with its id is already stored."""
        try:
            with store_errors():
                await self._events.insert_one(_event_to_doc(event))
        except DuplicateKeyError:
            return False
        return True

    async def events(self, conversation_id: str) -> list[CallEvent]:
        with store_errors():
            # `$eq`, not a bare value: the same query on MongoDB, an indexed one on the embedded store.
            docs = await self._events.find({"conversation_id": {"$eq": conversation_id}}).to_list()
        return [_event_from_doc(d) for d in docs]

    async def load(self, conversation_id: str) -> StoredCall | None:
        with store_errors():
            doc = await self._calls.find_one({"_id": conversation_id})
        return None if doc is None else call_from_doc(doc)

    async def save(self, call: StoredCall, expected_revision: int | None, now_us: int) -> bool:
        """Writes the call if its stored revision is still `expected_revision` (None: not stored)."""
        doc = call_to_doc(call, now_us)
        with store_errors():
            if expected_revision is None:
                try:
                    await self._calls.insert_one(doc)
                except DuplicateKeyError:
                    return False
                return True
            doc.pop("_id")
            # The hold and the agent are `reserve`'s to write; the owner only when this save knows it.
            for key in ("reserved_at", "reserved_until", "agent_id"):
                doc.pop(key)
            if not call.user_id:
                doc.pop("user_id")
            result = await self._calls.update_one(
                {"_id": call.conversation_id, "revision": expected_revision}, {"$set": doc}
            )
        return result.matched_count == 1

    async def reserve(
        self, conversation_id: str, user_id: str, agent_id: str, now_us: int, until_us: int
    ) -> None:
        """Holds a place for a call about to start; creates its document when there is none."""
        # Who and with which agent: set when known, never blanked by a caller that did not say.
        known = {k: v for k, v in (("user_id", user_id), ("agent_id", agent_id)) if v}
        with store_errors():
            await self._calls.update_one(
                {"_id": conversation_id},
                {
                    "$set": {"reserved_at": now_us, "reserved_until": until_us, **known},
                    "$setOnInsert": _empty_doc(conversation_id),
                },
                upsert=True,
            )

    async def live_count(self, now_us: int, excluding: str = "") -> int:
        """Calls taking an agent session now: started and not ended, or admitted and not started.

        Two indexed reads, each of live calls only, instead of one `$or` (which the embedded store
        runs in Python over every call ever stored, under its database lock).
        """
        with store_errors():
            running = await self._calls.find({"state": {"$in": _RUNNING_STATES}}).to_list()
            held = await self._calls.find({"reserved_until": {"$gt": now_us}}).to_list()
        live = {str(d["_id"]) for d in (*running, *held) if call_from_doc(d).live(now_us)}
        live.discard(excluding)
        return len(live)

    async def for_month(self, month: str, user_id: str = "") -> list[StoredCall]:
        """Calls that may hold time in `month`: those that touched it, and those still running.

        "Touched it" is read through the call's month span (an indexed range; `months` is an array,
        which the embedded store cannot match element-wise through an index); a call whose span
        covers `month` without touching it counts for nothing there.
        """
        mine = {"user_id": {"$eq": user_id}} if user_id else {}
        with store_errors():
            touched = await self._calls.find(
                {"month_last": {"$gte": month}, "month_first": {"$lte": month}, **mine}
            ).to_list()
            running = await self._calls.find({"state": {"$in": _RUNNING_STATES}, **mine}).to_list()
        docs = {str(d["_id"]): d for d in (*touched, *running)}
        return [call_from_doc(d) for d in docs.values()]

    async def running(self) -> list[StoredCall]:
        """Calls whose room started and has not ended, as far as the events say."""
        with store_errors():
            docs = await self._calls.find(
                {"state": {"$in": [CallState.WAITING.value, CallState.ACTIVE.value]}}
            ).to_list()
        return [call_from_doc(d) for d in docs]

    async def unsynced(self) -> list[StoredCall]:
        with store_errors():
            docs = await self._calls.find({"synced": False}).to_list()
        return [call_from_doc(d) for d in docs]

    async def mark_synced(self, conversation_id: str, revision: int) -> None:
        """chat_svc has `revision`; a newer revision saved meanwhile stays unsynced."""
        with store_errors():
            await self._calls.update_one(
                {"_id": conversation_id, "revision": revision}, {"$set": {"synced": True}}
            )


def _month_span(months: list[str]) -> tuple[str, str]:
    """First and last of `months` ("YYYY-MM" sorts as time does); "" for a call that touched none."""
    return (min(months), max(months)) if months else ("", "")


def _empty_doc(conversation_id: str) -> Document:
    doc = call_to_doc(StoredCall(CallRecord(conversation_id)), 0)
    for key in ("_id", "reserved_at", "reserved_until", "user_id", "agent_id"):
        doc.pop(key)
    return doc


def _event_to_doc(event: CallEvent) -> Document:
    return {
        "_id": event.event_id,
        "conversation_id": event.conversation_id,
        "kind": event.kind.value,
        "room_sid": event.room_sid,
        "at": event.at_us,
        "participant_sid": event.participant_sid,
        "identity": event.identity,
        "role": event.role.value if event.role else None,
        "joined_at": event.joined_at_us,
    }


def _event_from_doc(doc: Mapping[str, Any]) -> CallEvent:
    role = doc.get("role")
    joined = doc.get("joined_at")
    return CallEvent(
        event_id=str(doc["_id"]),
        kind=EventKind(doc["kind"]),
        conversation_id=str(doc["conversation_id"]),
        room_sid=str(doc.get("room_sid") or ""),
        at_us=int(doc["at"]),
        participant_sid=str(doc.get("participant_sid") or ""),
        identity=str(doc.get("identity") or ""),
        role=Role(role) if role else None,
        joined_at_us=None if joined is None else int(joined),
    )


def call_to_doc(call: StoredCall, now_us: int) -> Document:
    record = call.record
    months = record.months(now_us)
    month_first, month_last = _month_span(months)
    return {
        "_id": record.conversation_id,
        "state": record.state.value if record.started else NOT_STARTED,
        "user_id": call.user_id,
        "agent_id": call.agent_id,
        "reserved_at": call.reserved_at_us,
        "reserved_until": call.reserved_until_us,
        "revision": call.revision,
        "synced": call.synced,
        "update_time": call.update_us,
        "months": months,
        # The span of `months` as two scalars: what `for_month` can find through an index.
        "month_first": month_first,
        "month_last": month_last,
        "sessions": [
            {
                "sid": s.room_sid,
                "start": s.start_us,
                "end": s.end_us,
                "end_kind": s.end_kind.value if s.end_kind else None,
            }
            for s in record.sessions
        ],
        "participants": [
            {
                "sid": p.participant_sid,
                "identity": p.identity,
                "role": p.role.value,
                "room_sid": p.room_sid,
                "join": p.join_us,
                "leave": p.leave_us,
                "left_by_event": p.left_by_event,
            }
            for p in record.participants
        ],
        "redispatches": record.redispatches,
        "hung_up": record.hung_up,
        "user_ever_joined": record.user_ever_joined,
    }


def call_from_doc(doc: Mapping[str, Any]) -> StoredCall:
    record = CallRecord(
        conversation_id=str(doc["_id"]),
        sessions=tuple(
            Session(
                room_sid=str(s["sid"]),
                start_us=int(s["start"]),
                end_us=None if s.get("end") is None else int(s["end"]),
                end_kind=EventKind(s["end_kind"]) if s.get("end_kind") else None,
            )
            for s in doc.get("sessions") or ()
        ),
        participants=tuple(
            Presence(
                participant_sid=str(p["sid"]),
                identity=str(p.get("identity") or ""),
                role=Role(p["role"]),
                room_sid=str(p.get("room_sid") or ""),
                join_us=int(p["join"]),
                leave_us=None if p.get("leave") is None else int(p["leave"]),
                # The embedded store hands updated booleans back as 0/1.
                left_by_event=bool(p.get("left_by_event")),
            )
            for p in doc.get("participants") or ()
        ),
        redispatches=int(doc.get("redispatches") or 0),
        hung_up=bool(doc.get("hung_up")),
        user_ever_joined=bool(doc.get("user_ever_joined")),
    )
    return StoredCall(
        record=record,
        user_id=str(doc.get("user_id") or ""),
        agent_id=str(doc.get("agent_id") or ""),
        reserved_at_us=int(doc.get("reserved_at") or 0),
        reserved_until_us=int(doc.get("reserved_until") or 0),
        revision=int(doc.get("revision") or 0),
        synced=bool(doc.get("synced", True)),
        update_us=int(doc.get("update_time") or 0),
    )


def with_record(call: StoredCall, record: CallRecord, now_us: int) -> StoredCall:
    """`call` with a changed record: the next revision, not yet pushed to chat_svc."""
    user_id = call.user_id
    if not user_id:
        users = [p.identity for p in record.participants if p.role is Role.USER]
        user_id = users[0] if users else ""
    return replace(
        call, record=record, user_id=user_id, revision=call.revision + 1, synced=False, update_us=now_us
    )
