"""`CallSink` backed by chat_svc's `ConversationService.RecordCall`, called as a service."""

from __future__ import annotations

import time

import grpc
import structlog

from agent_svc.call_ledger import CallRecordRejectedError
from agent_svc.call_record import CallState, EndReason, Role
from agent_svc.call_store import StoredCall
from servicekit.client import ServiceCredentials
from servicekit.errors import DomainError, ErrorKind
from servicekit.prototime import duration, timestamp
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from syntera.livekit.v1 import resources_pb2 as lk_res

log = structlog.get_logger("agent_svc.chat_calls")

SERVICE_NAME = "agent_svc"

_STATES = {
    CallState.WAITING: conv_res.CALL_STATE_WAITING,
    CallState.ACTIVE: conv_res.CALL_STATE_ACTIVE,
    CallState.ENDED: conv_res.CALL_STATE_ENDED,
}
_REASONS = {
    EndReason.USER_LEFT: conv_res.CALL_END_REASON_USER_LEFT,
    EndReason.NO_SHOW: conv_res.CALL_END_REASON_NO_SHOW,
    EndReason.HUNG_UP: conv_res.CALL_END_REASON_HUNG_UP,
    EndReason.ROOM_LOST: conv_res.CALL_END_REASON_ROOM_LOST,
}
_KINDS = {Role.USER: lk_res.PARTICIPANT_KIND_USER, Role.AGENT: lk_res.PARTICIPANT_KIND_AGENT}
# Permanent: the conversation does not exist (a room someone made by hand) or the record is refused.
_REJECTED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class ChatCallSink:
    """Sends call records to chat_svc.

    Args:
        channel: A channel to chat_svc (owned and closed by the caller).
        credentials: agent_svc's own service identity.
        timeout_seconds: Deadline of each call.
    """

    def __init__(
        self, channel: grpc.aio.Channel, credentials: ServiceCredentials, timeout_seconds: float
    ) -> None:
        self._stub = conv_grpc.ConversationServiceStub(channel)
        self._credentials = credentials
        self._timeout = timeout_seconds

    async def record(self, call: StoredCall) -> None:
        request = conv_pb.RecordCallRequest(conversation_id=call.conversation_id, call=call_to_pb(call))
        try:
            await self._stub.RecordCall(
                request, timeout=self._timeout, metadata=self._credentials.metadata(time.monotonic())
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REJECTED:
                raise CallRecordRejectedError(exc.code().name) from None
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "CONVERSATION_SERVICE_UNAVAILABLE",
                "chat_svc did not take the call record",
            ) from None


def call_to_pb(call: StoredCall) -> conv_res.Call:
    """The call record as chat_svc stores and clients read it."""
    record = call.record
    out = conv_res.Call(
        state=_STATES[record.state] if record.started else conv_res.CALL_STATE_WAITING,
        room_sid=record.room_sid,
        agent_redispatches=record.redispatches,
        revision=call.revision,
        update_time=timestamp(call.update_us),
    )
    if record.start_us is not None:
        out.start_time.CopyFrom(timestamp(record.start_us))
    if record.end_us is not None and record.start_us is not None:
        out.end_time.CopyFrom(timestamp(record.end_us))
        out.duration.CopyFrom(duration(record.end_us - record.start_us))
    if record.agent_join_us is not None:
        out.agent_join_time.CopyFrom(timestamp(record.agent_join_us))
    reason = record.end_reason
    if reason is not None:
        out.end_reason = _REASONS[reason]
    for presence in record.participants:
        participant = out.participants.add(
            identity=presence.identity, kind=_KINDS[presence.role], join_time=timestamp(presence.join_us)
        )
        if presence.leave_us is not None:
            participant.leave_time.CopyFrom(timestamp(presence.leave_us))
    return out
