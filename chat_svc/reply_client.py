"""`AgentWriter` over gRPC: AgentService.GenerateReply and GenerateSummary on agent_svc, as a service.

Every call carries a deadline (the whole reply's, the whole summary's). Failures become
`WriterFailed` reasons a client can show:
- agent_svc's own reason (`ErrorInfo`) when it gave one (`LLM_UNAVAILABLE`, `LLM_TIMEOUT`, …);
- `AGENT_SVC_UNAVAILABLE` when agent_svc could not be reached (UNAVAILABLE with no reason);
- `REPLY_TIMEOUT` / `SUMMARY_TIMEOUT` when the deadline passed;
- `AGENT_SVC_FAILED` for anything else (the detail goes to the log only).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence

import grpc
import structlog

from chat_svc.replies import GeneratorKnown, HistoryTurn, ReplyEvent, SummaryResult, TextPiece, WriterFailed
from chat_svc.reply_mapping import SUMMARY_KIND_FROM_PB, generator_from_pb
from chat_svc.reply_records import SummaryKind
from servicekit.client import ServiceCredentials, open_channel
from servicekit.downstream import error_reason
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.agent.v1 import resources_pb2 as agent_pb

log = structlog.get_logger("chat_svc.reply_client")

SERVICE_NAME = "chat_svc"

_ROLES = {"user": agent_pb.TURN_ROLE_USER, "agent": agent_pb.TURN_ROLE_AGENT}


class AgentWriterClient:
    """agent_svc's reply RPCs over their own channel (long streams apart from unary calls)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        credentials: ServiceCredentials,
        reply_timeout_seconds: float,
        summary_timeout_seconds: float,
    ) -> None:
        self._channel = channel
        self._credentials = credentials
        self._reply_timeout = reply_timeout_seconds
        self._summary_timeout = summary_timeout_seconds
        self._stub = agent_service_pb2_grpc.AgentServiceStub(channel)

    @classmethod
    def connect(
        cls, address: str, jwt_secret: str, reply_timeout_seconds: float, summary_timeout_seconds: float
    ) -> AgentWriterClient:
        return cls(
            open_channel(address),
            ServiceCredentials(jwt_secret, SERVICE_NAME),
            reply_timeout_seconds,
            summary_timeout_seconds,
        )

    async def close(self) -> None:
        await self._channel.close(None)

    async def reply(
        self, agent_id: str, turns: Sequence[HistoryTurn], conversation_id: str
    ) -> AsyncGenerator[ReplyEvent, None]:
        request = agent_service_pb2.GenerateReplyRequest(
            agent_id=agent_id, turns=_turns(turns), conversation_id=conversation_id
        )
        call = self._stub.GenerateReply(
            request, timeout=self._reply_timeout, metadata=self._credentials.metadata(time.monotonic())
        )
        try:
            async for response in call:
                if response.HasField("generator"):
                    generator = generator_from_pb(response.generator)
                    if generator is not None:
                        yield GeneratorKnown(generator)
                if response.text_delta:
                    yield TextPiece(response.text_delta)
        except grpc.aio.AioRpcError as exc:
            raise _failed("GenerateReply", exc, "REPLY_TIMEOUT") from None
        finally:
            # Stopped early (a newer message, the deadline): end the stream so the model stops too.
            call.cancel()

    async def summary(
        self, agent_id: str, turns: Sequence[HistoryTurn], conversation_id: str
    ) -> SummaryResult:
        request = agent_service_pb2.GenerateSummaryRequest(
            agent_id=agent_id, turns=_turns(turns), conversation_id=conversation_id
        )
        try:
            response = await self._stub.GenerateSummary(
                request, timeout=self._summary_timeout, metadata=self._credentials.metadata(time.monotonic())
            )
        except grpc.aio.AioRpcError as exc:
            raise _failed("GenerateSummary", exc, "SUMMARY_TIMEOUT") from None
        return SummaryResult(
            text=response.text,
            kind=SUMMARY_KIND_FROM_PB.get(response.kind, SummaryKind.ABSTRACT),
            generator=generator_from_pb(response.generator) if response.HasField("generator") else None,
        )


def _turns(turns: Sequence[HistoryTurn]) -> list[agent_pb.ConversationTurn]:
    return [agent_pb.ConversationTurn(role=_ROLES[t.speaker], text=t.text) for t in turns]


def _failed(method: str, exc: grpc.aio.AioRpcError, timeout_reason: str) -> WriterFailed:
    code = exc.code()
    reason = error_reason(exc)
    log.warning("agent_svc call failed", method=method, code=code.name, reason=reason or None)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return WriterFailed(timeout_reason)
    if reason:
        return WriterFailed(reason)
    if code == grpc.StatusCode.UNAVAILABLE:
        return WriterFailed("AGENT_SVC_UNAVAILABLE")
    return WriterFailed("AGENT_SVC_FAILED")
