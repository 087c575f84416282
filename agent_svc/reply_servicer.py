"""The reply RPCs of `syntera.agent.v1.AgentService`: validate → `AgentReplies` → map back.

A mixin of `AgentServicer`, kept apart from the profile RPCs: its own domain, its own mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from agent_svc.replies import AgentReplies, Generated, TurnInput
from llmkit.choice import GeneratorKind
from llmkit.responder import Speaker
from servicekit import context
from syntera.agent.v1 import agent_service_pb2 as pb
from syntera.agent.v1 import resources_pb2 as res

Context = grpc.aio.ServicerContext[Any, Any]

_SPEAKERS: dict[int, Speaker] = {res.TURN_ROLE_USER: "user", res.TURN_ROLE_AGENT: "agent"}
_KINDS = {
    GeneratorKind.CLOUD_MODEL: res.GENERATOR_KIND_CLOUD_MODEL,
    GeneratorKind.OPENAI_COMPATIBLE_MODEL: res.GENERATOR_KIND_OPENAI_COMPATIBLE_MODEL,
    GeneratorKind.SCRIPTED_RESPONDER: res.GENERATOR_KIND_SCRIPTED_RESPONDER,
}


class ReplyRpcs:
    """GenerateReply and GenerateSummary, served from `AgentReplies`."""

    def __init__(self, replies: AgentReplies) -> None:
        self._replies = replies

    async def GenerateReply(
        self, request: pb.GenerateReplyRequest, ctx: Context
    ) -> AsyncIterator[pb.GenerateReplyResponse]:
        stream = await self._replies.reply(
            context.current_principal(),
            request.agent_id,
            _turns_in(request.turns),
            request.conversation_id,
        )
        # Sent before the model answers: the caller learns at once what is generating the reply.
        yield pb.GenerateReplyResponse(generator=_generator_out(stream.generator))
        async for piece in stream.pieces:
            yield pb.GenerateReplyResponse(text_delta=piece)

    async def GenerateSummary(
        self, request: pb.GenerateSummaryRequest, ctx: Context
    ) -> pb.GenerateSummaryResponse:
        summary = await self._replies.summarize(
            context.current_principal(),
            request.agent_id,
            _turns_in(request.turns),
            request.conversation_id,
        )
        return pb.GenerateSummaryResponse(
            text=summary.text,
            kind=res.SUMMARY_KIND_EXTRACT if summary.extract else res.SUMMARY_KIND_ABSTRACT,
            generator=_generator_out(summary.generator),
        )


def _turns_in(turns: Any) -> list[TurnInput]:
    return [TurnInput(_SPEAKERS.get(t.role), t.text) for t in turns]


def _generator_out(generated: Generated) -> res.Generator:
    return res.Generator(kind=_KINDS[generated.kind], model=generated.model)
