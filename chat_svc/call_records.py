"""RecordCall: the call record agent_svc folds from LiveKit's webhooks, kept on its conversation.

Rules:
- Service callers only; the conversation must be a VOICE or VIDEO one.
- A record replaces the stored one only when its `revision` is higher: repeats and reordering
  never roll a call back (the answer says whether it was applied).
- When a call ends, its conversation ends with it (end time = the room's end), unless
  CALL_END_ENDS_CONVERSATION is off. The room is already gone, so nothing is cleaned up.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from chat_svc.conversations import Conversations
from chat_svc.records import (
    Call,
    CallEndReason,
    CallParticipant,
    CallState,
    Conversation,
    ParticipantKind,
    Status,
    now_us,
)
from chat_svc.store import Collections, call_to_doc, store_errors
from chat_svc.validation import RawTime, check_id, duration_us, timestamp_us
from servicekit.auth import Principal
from servicekit.errors import Violations, failed_precondition, permission_denied

log = structlog.get_logger("chat_svc.calls")

PARTICIPANTS_MAX = 500
IDENTITY_MAX = 256
ROOM_SID_MAX = 128
REDISPATCHES_MAX = 10_000


@dataclass(frozen=True)
class ParticipantInput:
    """One participant as the request carried it; `kind` is None for an unknown value."""

    identity: str
    kind: ParticipantKind | None
    join_time: RawTime | None
    leave_time: RawTime | None


@dataclass(frozen=True)
class CallInput:
    """A RecordCall request's call before validation (None: not given or an unknown enum value)."""

    present: bool
    state: CallState | None
    revision: int
    room_sid: str
    start_time: RawTime | None
    end_time: RawTime | None
    duration: RawTime | None
    agent_join_time: RawTime | None
    update_time: RawTime | None
    end_reason: CallEndReason | None
    end_reason_given: bool
    agent_redispatches: int
    participants: tuple[ParticipantInput, ...]


def validate_call(given: CallInput) -> Call:
    """The call in stored units, or INVALID_ARGUMENT naming every bad field (`call.…`)."""
    violations = Violations()
    if not given.present:
        violations.add("call", "is required")
        violations.raise_if_any()
    if given.state is None:
        violations.add("call.state", "must be CALL_STATE_WAITING, CALL_STATE_ACTIVE or CALL_STATE_ENDED")
    if given.revision < 1:
        violations.add("call.revision", "must be at least 1")
    if len(given.room_sid) > ROOM_SID_MAX or not given.room_sid.isprintable():
        violations.add("call.room_sid", f"must be at most {ROOM_SID_MAX} printable characters")
    if given.end_reason_given and given.end_reason is None:
        violations.add("call.end_reason", "is not a known end reason")
    if not 0 <= given.agent_redispatches <= REDISPATCHES_MAX:
        violations.add("call.agent_redispatches", f"must be between 0 and {REDISPATCHES_MAX}")
    start = timestamp_us(violations, "call.start_time", given.start_time)
    end = timestamp_us(violations, "call.end_time", given.end_time)
    if start is not None and end is not None and end < start:
        violations.add("call.end_time", "must not be before call.start_time")
    if given.state is CallState.ENDED and end is None:
        violations.add("call.end_time", "is required when the call has ended")
    if len(given.participants) > PARTICIPANTS_MAX:
        violations.add("call.participants", f"must hold at most {PARTICIPANTS_MAX} entries")
    participants = []
    for index, p in enumerate(given.participants[:PARTICIPANTS_MAX]):
        path = f"call.participants[{index}]"
        if not p.identity or len(p.identity) > IDENTITY_MAX or not p.identity.isprintable():
            violations.add(f"{path}.identity", f"must be 1 to {IDENTITY_MAX} printable characters")
        if p.kind is None:
            violations.add(f"{path}.kind", "must be PARTICIPANT_KIND_USER or PARTICIPANT_KIND_AGENT")
        joined = timestamp_us(violations, f"{path}.join_time", p.join_time)
        if p.join_time is None:
            violations.add(f"{path}.join_time", "is required")
        left = timestamp_us(violations, f"{path}.leave_time", p.leave_time)
        if joined is not None and left is not None and left < joined:
            violations.add(f"{path}.leave_time", "must not be before its join_time")
        if p.kind is not None and joined is not None:
            participants.append(CallParticipant(p.identity, p.kind, joined, left))
    call = Call(
        state=given.state or CallState.WAITING,
        revision=given.revision,
        room_sid=given.room_sid,
        start_time_us=start,
        end_time_us=end,
        duration_us=duration_us(violations, "call.duration", given.duration),
        participants=tuple(participants),
        agent_join_time_us=timestamp_us(violations, "call.agent_join_time", given.agent_join_time),
        end_reason=given.end_reason,
        agent_redispatches=given.agent_redispatches,
        update_time_us=timestamp_us(violations, "call.update_time", given.update_time),
    )
    violations.raise_if_any()
    return call


class CallRecords:
    """Stores call records on their conversations.

    Args:
        collections: The store.
        conversations: Loading and ending conversations.
        end_conversation_with_call: End a conversation when its call ends (CALL_END_ENDS_CONVERSATION).
    """

    def __init__(
        self, collections: Collections, conversations: Conversations, end_conversation_with_call: bool
    ) -> None:
        self._c = collections
        self._conversations = conversations
        self._end_with_call = end_conversation_with_call

    async def record(
        self, principal: Principal, conversation_id: str, given: CallInput
    ) -> tuple[Conversation, bool]:
        """Stores the call unless a record as new is stored; returns the conversation and whether."""
        if not principal.is_service:
            raise permission_denied("only services may record calls", "SERVICE_ONLY")
        violations = Violations()
        check_id(violations, "conversation_id", conversation_id)
        violations.raise_if_any()
        call = validate_call(given)
        conversation = await self._conversations.load(conversation_id)
        if not conversation.channel.is_call:
            raise failed_precondition("a TEXT conversation has no call", "CONVERSATION_NOT_A_CALL")
        with store_errors():
            result = await self._c.conversations.update_one(
                {
                    "_id": conversation_id,
                    "$or": [{"call": None}, {"call.revision": {"$lt": call.revision}}],
                },
                {"$set": {"call": call_to_doc(call)}},
            )
        applied = result.modified_count == 1
        if applied:
            log.info(
                "call recorded",
                conversation_id=conversation_id,
                state=call.state.value,
                revision=call.revision,
            )
        # Also when not applied: a repeat of the final record after a first attempt that failed
        # between the two writes finishes the job (ending is conditional, so never twice).
        if call.state is CallState.ENDED and self._end_with_call and conversation.status is Status.ACTIVE:
            await self._conversations.end_with_call(conversation, call.end_time_us or now_us())
        updated = await self._conversations.load(conversation_id)
        return await self._conversations.with_last_seq(updated), applied
