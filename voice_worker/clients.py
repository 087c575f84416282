"""gRPC clients of the worker: chat_svc (ReportTranscript) and agent_svc (GetAgent), as a service.

Every call carries a deadline and the worker's service token; failures are mapped onto the
sender's retryable / permanent split, or onto a fallback profile.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import grpc
import structlog
from google.protobuf import duration_pb2

from servicekit.client import ServiceCredentials, open_channel
from servicekit.prototime import duration_from_seconds, timestamp_from_seconds
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.agent.v1 import resources_pb2 as agent_pb2
from syntera.conversation.v1 import conversation_service_pb2 as conv_pb2
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res
from voice_worker.profile import AgentProfile, ProviderMode
from voice_worker.segments import Metrics, Segment
from voice_worker.sender import SinkRejectedError, SinkUnavailableError

log = structlog.get_logger("voice_worker.clients")

SERVICE_NAME = "voice-worker"

# Codes after which the same request may succeed later. Everything else is final for that batch.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        # A token minted with a clock or secret mismatch during a rolling restart: worth a retry.
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


class ChatTranscriptSink:
    """`ConversationService.ReportTranscript` as a `TranscriptSink`."""

    def __init__(self, address: str, credentials: ServiceCredentials, timeout: float) -> None:
        self._channel = open_channel(address)
        self._stub = conv_grpc.ConversationServiceStub(self._channel)
        self._credentials = credentials
        self._timeout = timeout

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        request = conv_pb2.ReportTranscriptRequest(
            conversation_id=conversation_id,
            segments=[to_proto(s) for s in segments],
            call_metadata=dict(call_metadata or {}),
        )
        try:
            await self._stub.ReportTranscript(
                request, timeout=self._timeout, metadata=self._credentials.metadata(time.time())
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRYABLE:
                raise SinkUnavailableError(exc.code().name) from None
            raise SinkRejectedError(f"{exc.code().name}: {exc.details() or ''}"[:300]) from None

    async def aclose(self) -> None:
        await self._channel.close(None)


class AgentProfiles:
    """Reads agent profiles from `AgentService.GetAgent`."""

    def __init__(self, address: str, credentials: ServiceCredentials, timeout: float) -> None:
        self._channel = open_channel(address)
        self._stub = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self._credentials = credentials
        self._timeout = timeout

    async def get(self, agent_id: str) -> AgentProfile | None:
        """The profile, or None when agent_svc does not have it or cannot be reached."""
        try:
            response = await self._stub.GetAgent(
                agent_service_pb2.GetAgentRequest(agent_id=agent_id),
                timeout=self._timeout,
                metadata=self._credentials.metadata(time.time()),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("agent profile unavailable", agent_id=agent_id, code=exc.code().name)
            return None
        return from_agent_proto(response.agent)

    async def aclose(self) -> None:
        await self._channel.close(None)


_MODES: dict[int, ProviderMode] = {
    agent_pb2.PROVIDER_MODE_CLOUD: "cloud",
    agent_pb2.PROVIDER_MODE_OFFLINE: "offline",
}


def from_agent_proto(agent: agent_pb2.Agent) -> AgentProfile:
    vs = agent.voice_settings
    return AgentProfile(
        agent_id=agent.agent_id,
        display_name=agent.display_name,
        instructions=agent.instructions,
        greeting=agent.greeting,
        voice=vs.voice,
        language=vs.language,
        speaking_rate=vs.speaking_rate,
        stt_model=vs.stt_model,
        llm_model=vs.llm_model,
        tts_model=vs.tts_model,
        provider_mode=_MODES.get(vs.provider_mode, ""),
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    # A latency measured across clocks can come out just below zero; chat_svc refuses negative ones.
    return duration_from_seconds(max(0.0, seconds))


def _metrics(m: Metrics) -> conv_res.TurnMetrics | None:
    if m.empty():
        return None
    out = conv_res.TurnMetrics()
    if m.end_of_turn_delay is not None:
        out.end_of_turn_delay.CopyFrom(_duration(m.end_of_turn_delay))
    if m.llm_time_to_first_token is not None:
        out.llm_time_to_first_token.CopyFrom(_duration(m.llm_time_to_first_token))
    if m.tts_time_to_first_byte is not None:
        out.tts_time_to_first_byte.CopyFrom(_duration(m.tts_time_to_first_byte))
    if m.transcription_delay is not None:
        out.transcription_delay.CopyFrom(_duration(m.transcription_delay))
    return out


def to_proto(segment: Segment) -> conv_res.TranscriptSegment:
    out = conv_res.TranscriptSegment(
        segment_id=segment.segment_id,
        role=conv_res.ROLE_USER if segment.role == "user" else conv_res.ROLE_AGENT,
        text=segment.text,
        final=segment.final,
        interrupted=segment.interrupted,
        language=segment.language,
    )
    if segment.start_time is not None:
        out.start_time.CopyFrom(timestamp_from_seconds(segment.start_time))
    if segment.end_time is not None:
        end = max(segment.end_time, segment.start_time or segment.end_time)
        out.end_time.CopyFrom(timestamp_from_seconds(end))
    if segment.confidence is not None:
        out.confidence = min(1.0, max(0.0, segment.confidence))
    metrics = _metrics(segment.metrics)
    if metrics is not None:
        out.metrics.CopyFrom(metrics)
    return out
