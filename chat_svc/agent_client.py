"""Typed async client for agent_svc (AgentService + LiveKitService), called as a service.

Every call carries a deadline; retries happen only on UNAVAILABLE (the channel's retry policy).
Downstream codes become DomainErrors here so nothing reaches our callers as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import time

import grpc
import structlog

from chat_svc.records import Channel, JoinGrant
from servicekit.client import ServiceCredentials, open_channel
from servicekit.downstream import quota_violations
from servicekit.errors import (
    DomainError,
    ErrorKind,
    FieldViolation,
    invalid_argument,
    not_found,
    quota_exceeded,
)
from servicekit.prototime import to_us
from syntera.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from syntera.livekit.v1 import livekit_service_pb2, livekit_service_pb2_grpc, resources_pb2

log = structlog.get_logger("chat_svc.agent_client")

SERVICE_NAME = "chat_svc"
# An agent profile GetAgent found is not asked for again for this long: every call set up asked,
# one more round trip to agent_svc (and its store) before the join token. Profiles are created and
# deleted by operators, rarely; a conversation with an agent deleted a moment ago is ended by its
# call failing to get an agent, as any other call whose agent went away.
AGENT_SEEN_SECONDS = 5.0
_AGENTS_SEEN_MAX = 1_000

_MEDIA = {Channel.VOICE: resources_pb2.CALL_MEDIA_VOICE, Channel.VIDEO: resources_pb2.CALL_MEDIA_VIDEO}


class AgentServiceClient:
    """agent_svc over one channel, with this service's own bearer token."""

    def __init__(
        self, channel: grpc.aio.Channel, credentials: ServiceCredentials, timeout_seconds: float
    ) -> None:
        self._channel = channel
        self._credentials = credentials
        self._timeout = timeout_seconds
        self._agents = agent_service_pb2_grpc.AgentServiceStub(channel)
        self._livekit = livekit_service_pb2_grpc.LiveKitServiceStub(channel)
        self._agents_seen: dict[str, float] = {}  # agent id -> until when it counts as found

    @classmethod
    def connect(cls, address: str, jwt_secret: str, timeout_seconds: float) -> AgentServiceClient:
        return cls(open_channel(address), ServiceCredentials(jwt_secret, SERVICE_NAME), timeout_seconds)

    async def close(self) -> None:
        await self._channel.close(None)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self._credentials.metadata(time.monotonic())

    async def check_agent(self, agent_id: str) -> None:
        now = time.monotonic()
        if self._agents_seen.get(agent_id, 0.0) > now:
            return
        request = agent_service_pb2.GetAgentRequest(agent_id=agent_id)
        try:
            await self._agents.GetAgent(request, timeout=self._timeout, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            self._agents_seen.pop(agent_id, None)
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found("agent", agent_id) from None
            raise _mapped("GetAgent", exc, field="agent_id") from None
        if len(self._agents_seen) >= _AGENTS_SEEN_MAX:
            self._agents_seen.clear()
        self._agents_seen[agent_id] = now + AGENT_SEEN_SECONDS

    async def join_grant(
        self, conversation_id: str, user_id: str, agent_id: str, channel: Channel
    ) -> JoinGrant:
        request = livekit_service_pb2.GenerateTokenRequest(
            conversation_id=conversation_id,
            user_id=user_id,
            agent_id=agent_id,
            participant_kind=resources_pb2.PARTICIPANT_KIND_USER,
            media=_MEDIA[channel],
        )
        try:
            response = await self._livekit.GenerateToken(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise _mapped("GenerateToken", exc, field="agent_id") from None
        return JoinGrant(
            token=response.token,
            url=response.url,
            room_name=response.room_name,
            identity=response.identity,
            expire_time_us=to_us(response.expire_time),
            agent_name=response.agent_name,
        )

    async def delete_room(self, conversation_id: str) -> None:
        request = livekit_service_pb2.DeleteRoomRequest(conversation_id=conversation_id)
        try:
            await self._livekit.DeleteRoom(request, timeout=self._timeout, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            raise _mapped("DeleteRoom", exc, field="conversation_id") from None


def _mapped(method: str, exc: grpc.aio.AioRpcError, field: str) -> DomainError:
    """A downstream failure as one of our documented errors; the detail goes to the log only."""
    code = exc.code()
    log.warning("agent_svc call failed", method=method, code=code.name)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid_argument([FieldViolation(field, "was refused by the agent service")])
    limits = quota_violations(exc) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else ()
    if limits:
        # The deployment's call limits: the caller must learn which one, exactly as agent_svc said.
        return quota_exceeded(limits)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return DomainError(
            ErrorKind.FAILED_PRECONDITION, "AGENT_SVC_PRECONDITION", "the agent service refused the call"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DomainError(ErrorKind.UNAVAILABLE, "AGENT_SVC_UNAVAILABLE", "the agent service is unavailable")
    # Anything else (auth between services, internal errors) is our deployment's fault, not the
    # caller's: report it as a dependency outage they may retry.
    return DomainError(ErrorKind.UNAVAILABLE, "AGENT_SVC_FAILED", "the agent service failed; try again later")
