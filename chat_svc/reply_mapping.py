"""Replies and summaries ↔ protobuf: the part of `chat_svc.mapping` for agent replies."""

from __future__ import annotations

from chat_svc.reply_records import (
    Generator,
    GeneratorKind,
    Reply,
    ReplyState,
    Summary,
    SummaryKind,
    SummaryState,
)
from servicekit.prototime import timestamp
from syntera.agent.v1 import resources_pb2 as agent_pb
from syntera.conversation.v1 import resources_pb2 as pb

_REPLY_STATE_TO_PB = {
    ReplyState.GENERATING: pb.REPLY_STATE_GENERATING,
    ReplyState.COMPLETE: pb.REPLY_STATE_COMPLETE,
    ReplyState.FAILED: pb.REPLY_STATE_FAILED,
    ReplyState.CANCELLED: pb.REPLY_STATE_CANCELLED,
}
_SUMMARY_STATE_TO_PB = {
    SummaryState.PENDING: pb.SUMMARY_STATE_PENDING,
    SummaryState.READY: pb.SUMMARY_STATE_READY,
    SummaryState.FAILED: pb.SUMMARY_STATE_FAILED,
}
_SUMMARY_KIND_TO_PB = {
    SummaryKind.ABSTRACT: agent_pb.SUMMARY_KIND_ABSTRACT,
    SummaryKind.EXTRACT: agent_pb.SUMMARY_KIND_EXTRACT,
}
GENERATOR_KIND_TO_PB = {
    GeneratorKind.CLOUD_MODEL: agent_pb.GENERATOR_KIND_CLOUD_MODEL,
    GeneratorKind.OPENAI_COMPATIBLE_MODEL: agent_pb.GENERATOR_KIND_OPENAI_COMPATIBLE_MODEL,
    GeneratorKind.SCRIPTED_RESPONDER: agent_pb.GENERATOR_KIND_SCRIPTED_RESPONDER,
}
SUMMARY_KIND_FROM_PB = {number: kind for kind, number in _SUMMARY_KIND_TO_PB.items()}
GENERATOR_KIND_FROM_PB = {number: kind for kind, number in GENERATOR_KIND_TO_PB.items()}


def generator_to_pb(generator: Generator) -> agent_pb.Generator:
    return agent_pb.Generator(kind=GENERATOR_KIND_TO_PB[generator.kind], model=generator.model)


def generator_from_pb(generator: agent_pb.Generator) -> Generator | None:
    kind = GENERATOR_KIND_FROM_PB.get(generator.kind)
    return None if kind is None else Generator(kind, generator.model)


def reply_to_pb(reply: Reply) -> pb.Reply:
    out = pb.Reply(
        state=_REPLY_STATE_TO_PB[reply.state],
        in_reply_to_seq=reply.in_reply_to_seq,
        failure_reason=reply.failure_reason,
        attempt=reply.attempt,
    )
    if reply.generator is not None:
        out.generator.CopyFrom(generator_to_pb(reply.generator))
    return out


def summary_to_pb(summary: Summary) -> pb.ConversationSummary:
    out = pb.ConversationSummary(
        state=_SUMMARY_STATE_TO_PB[summary.state], text=summary.text, failure_reason=summary.failure_reason
    )
    if summary.kind is not None:
        out.kind = _SUMMARY_KIND_TO_PB[summary.kind]
    if summary.generator is not None:
        out.generator.CopyFrom(generator_to_pb(summary.generator))
    if summary.update_time_us is not None:
        out.update_time.CopyFrom(timestamp(summary.update_time_us))
    return out
