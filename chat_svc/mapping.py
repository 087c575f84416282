"""Records ↔ protobuf messages. The only place that knows both shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from chat_svc.call_records import CallInput, ParticipantInput
from chat_svc.records import (
    Call,
    CallEndReason,
    CallState,
    Channel,
    Conversation,
    JoinGrant,
    Message,
    ParticipantKind,
    Role,
    Source,
    Status,
)
from chat_svc.reply_mapping import reply_to_pb, summary_to_pb
from chat_svc.transcripts import SegmentInput
from chat_svc.validation import RawTime
from servicekit.prototime import duration as _duration
from servicekit.prototime import timestamp as _timestamp
from syntera.conversation.v1 import resources_pb2 as pb
from syntera.livekit.v1 import resources_pb2 as lk_pb

_CHANNEL_TO_PB = {
    Channel.TEXT: pb.CHANNEL_TEXT,
    Channel.VOICE: pb.CHANNEL_VOICE,
    Channel.VIDEO: pb.CHANNEL_VIDEO,
}
_STATUS_TO_PB = {
    Status.ACTIVE: pb.CONVERSATION_STATUS_ACTIVE,
    Status.ENDED: pb.CONVERSATION_STATUS_ENDED,
    Status.FAILED: pb.CONVERSATION_STATUS_FAILED,
}
_T = TypeVar("_T")

_CALL_STATE_TO_PB = {
    CallState.WAITING: pb.CALL_STATE_WAITING,
    CallState.ACTIVE: pb.CALL_STATE_ACTIVE,
    CallState.ENDED: pb.CALL_STATE_ENDED,
}
_END_REASON_TO_PB = {
    CallEndReason.USER_LEFT: pb.CALL_END_REASON_USER_LEFT,
    CallEndReason.NO_SHOW: pb.CALL_END_REASON_NO_SHOW,
    CallEndReason.HUNG_UP: pb.CALL_END_REASON_HUNG_UP,
    CallEndReason.ROOM_LOST: pb.CALL_END_REASON_ROOM_LOST,
}
_KIND_TO_PB = {
    ParticipantKind.USER: lk_pb.PARTICIPANT_KIND_USER,
    ParticipantKind.AGENT: lk_pb.PARTICIPANT_KIND_AGENT,
}
_ROLE_TO_PB = {Role.USER: pb.ROLE_USER, Role.AGENT: pb.ROLE_AGENT}
_SOURCE_TO_PB = {Source.TEXT: pb.MESSAGE_SOURCE_TEXT, Source.TRANSCRIPT: pb.MESSAGE_SOURCE_TRANSCRIPT}


def channel_from_pb(value: int) -> Channel | None:
    for channel, number in _CHANNEL_TO_PB.items():
        if number == value:
            return channel
    return None


def role_from_pb(value: int) -> Role | None:
    for role, number in _ROLE_TO_PB.items():
        if number == value:
            return role
    return None


def conversation_to_pb(conversation: Conversation) -> pb.Conversation:
    out = pb.Conversation(
        conversation_id=conversation.conversation_id,
        user_id=conversation.user_id,
        agent_id=conversation.agent_id,
        channel=_CHANNEL_TO_PB[conversation.channel],
        status=_STATUS_TO_PB[conversation.status],
        title=conversation.title,
        room_name=conversation.room_name,
        metadata=conversation.metadata,
        create_time=_timestamp(conversation.create_time_us),
        last_seq=conversation.last_seq,
    )
    if conversation.end_time_us is not None:
        out.end_time.CopyFrom(_timestamp(conversation.end_time_us))
    if conversation.duration_us is not None:
        out.duration.CopyFrom(_duration(conversation.duration_us))
    if conversation.summary is not None:
        out.summary.CopyFrom(summary_to_pb(conversation.summary))
    if conversation.call is not None:
        out.call.CopyFrom(call_to_pb(conversation.call))
    return out


def call_to_pb(call: Call) -> pb.Call:
    out = pb.Call(
        state=_CALL_STATE_TO_PB[call.state],
        room_sid=call.room_sid,
        agent_redispatches=call.agent_redispatches,
        revision=call.revision,
    )
    for field, value in (
        ("start_time", call.start_time_us),
        ("end_time", call.end_time_us),
        ("agent_join_time", call.agent_join_time_us),
        ("update_time", call.update_time_us),
    ):
        if value is not None:
            getattr(out, field).CopyFrom(_timestamp(value))
    if call.duration_us is not None:
        out.duration.CopyFrom(_duration(call.duration_us))
    if call.end_reason is not None:
        out.end_reason = _END_REASON_TO_PB[call.end_reason]
    for participant in call.participants:
        added = out.participants.add(
            identity=participant.identity,
            kind=_KIND_TO_PB[participant.kind],
            join_time=_timestamp(participant.join_time_us),
        )
        if participant.leave_time_us is not None:
            added.leave_time.CopyFrom(_timestamp(participant.leave_time_us))
    return out


def call_from_pb(request_has_call: bool, call: pb.Call) -> CallInput:
    """The call of a RecordCall request, unvalidated; unknown enum values become None."""

    def time(message: pb.Call | pb.CallParticipant, field: str) -> RawTime | None:
        return _raw(getattr(message, field)) if message.HasField(field) else None  # type: ignore[arg-type]

    return CallInput(
        present=request_has_call,
        state=_from_pb(_CALL_STATE_TO_PB, call.state),
        revision=call.revision,
        room_sid=call.room_sid,
        start_time=time(call, "start_time"),
        end_time=time(call, "end_time"),
        duration=time(call, "duration"),
        agent_join_time=time(call, "agent_join_time"),
        update_time=time(call, "update_time"),
        end_reason=_from_pb(_END_REASON_TO_PB, call.end_reason),
        end_reason_given=call.end_reason != pb.CALL_END_REASON_UNSPECIFIED,
        agent_redispatches=call.agent_redispatches,
        participants=tuple(
            ParticipantInput(
                identity=p.identity,
                kind=_from_pb(_KIND_TO_PB, p.kind),
                join_time=time(p, "join_time"),
                leave_time=time(p, "leave_time"),
            )
            for p in call.participants
        ),
    )


def _from_pb(table: Mapping[_T, int], value: int) -> _T | None:
    for domain, number in table.items():
        if number == value:
            return domain
    return None


def join_to_pb(join: JoinGrant) -> pb.JoinInfo:
    return pb.JoinInfo(
        token=join.token,
        url=join.url,
        room_name=join.room_name,
        identity=join.identity,
        expire_time=_timestamp(join.expire_time_us),
    )


def message_to_pb(message: Message) -> pb.Message:
    out = pb.Message(
        message_id=message.message_id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        revision=message.revision,
        role=_ROLE_TO_PB[message.role],
        source=_SOURCE_TO_PB[message.source],
        text=message.text,
        final=message.final,
        interrupted=message.interrupted,
        segment_id=message.segment_id or "",
        language=message.language,
        confidence=message.confidence,
        sender_id=message.sender_id,
        create_time=_timestamp(message.create_time_us),
        update_time=_timestamp(message.update_time_us),
    )
    if message.start_time_us is not None:
        out.start_time.CopyFrom(_timestamp(message.start_time_us))
    if message.end_time_us is not None:
        out.end_time.CopyFrom(_timestamp(message.end_time_us))
    if message.reply is not None:
        out.reply.CopyFrom(reply_to_pb(message.reply))
    metrics = message.metrics
    if metrics.end_of_turn_delay_us is not None:
        out.metrics.end_of_turn_delay.CopyFrom(_duration(metrics.end_of_turn_delay_us))
    if metrics.llm_time_to_first_token_us is not None:
        out.metrics.llm_time_to_first_token.CopyFrom(_duration(metrics.llm_time_to_first_token_us))
    if metrics.tts_time_to_first_byte_us is not None:
        out.metrics.tts_time_to_first_byte.CopyFrom(_duration(metrics.tts_time_to_first_byte_us))
    if metrics.transcription_delay_us is not None:
        out.metrics.transcription_delay.CopyFrom(_duration(metrics.transcription_delay_us))
    return out


def _raw(message: timestamp_pb2.Timestamp | duration_pb2.Duration) -> RawTime:
    return RawTime(seconds=message.seconds, nanos=message.nanos)


def segment_from_pb(segment: pb.TranscriptSegment) -> SegmentInput:
    metrics = segment.metrics
    has_metrics = segment.HasField("metrics")
    return SegmentInput(
        segment_id=segment.segment_id,
        role=role_from_pb(segment.role),
        text=segment.text,
        final=segment.final,
        interrupted=segment.interrupted,
        start_time=_raw(segment.start_time) if segment.HasField("start_time") else None,
        end_time=_raw(segment.end_time) if segment.HasField("end_time") else None,
        language=segment.language,
        confidence=segment.confidence,
        end_of_turn_delay=_raw(metrics.end_of_turn_delay)
        if has_metrics and metrics.HasField("end_of_turn_delay")
        else None,
        llm_time_to_first_token=_raw(metrics.llm_time_to_first_token)
        if has_metrics and metrics.HasField("llm_time_to_first_token")
        else None,
        tts_time_to_first_byte=_raw(metrics.tts_time_to_first_byte)
        if has_metrics and metrics.HasField("tts_time_to_first_byte")
        else None,
        transcription_delay=_raw(metrics.transcription_delay)
        if has_metrics and metrics.HasField("transcription_delay")
        else None,
    )
