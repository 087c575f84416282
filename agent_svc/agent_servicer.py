"""gRPC adapter for `syntera.agent.v1.AgentService`: validate → domain → map back."""

from __future__ import annotations

from typing import Any

import grpc

from agent_svc.agent_store import AgentDirectory
from agent_svc.agents import AgentProfile, ProviderMode, VoiceSettings
from agent_svc.replies import AgentReplies
from agent_svc.reply_servicer import ReplyRpcs
from servicekit import context
from servicekit.errors import Violations
from servicekit.prototime import timestamp_from_datetime
from syntera.agent.v1 import agent_service_pb2 as pb
from syntera.agent.v1 import agent_service_pb2_grpc as pb_grpc
from syntera.agent.v1 import resources_pb2 as res

Context = grpc.aio.ServicerContext[Any, Any]

_MODE_IN = {
    res.PROVIDER_MODE_UNSPECIFIED: ProviderMode.UNSPECIFIED,
    res.PROVIDER_MODE_CLOUD: ProviderMode.CLOUD,
    res.PROVIDER_MODE_OFFLINE: ProviderMode.OFFLINE,
}
_MODE_OUT = {mode: value for value, mode in _MODE_IN.items()}


class AgentServicer(ReplyRpcs, pb_grpc.AgentServiceServicer):
    """Serves AgentService: profiles from `AgentDirectory`, replies and summaries (`ReplyRpcs`)."""

    def __init__(self, directory: AgentDirectory, replies: AgentReplies) -> None:
        super().__init__(replies)
        self._directory = directory

    async def CreateAgent(self, request: pb.CreateAgentRequest, _: Context) -> pb.CreateAgentResponse:
        profile = _profile_in(request.agent, "agent")
        created = await self._directory.create(context.current_principal(), profile, request.request_id)
        return pb.CreateAgentResponse(agent=_agent_out(created))

    async def GetAgent(self, request: pb.GetAgentRequest, _: Context) -> pb.GetAgentResponse:
        context.current_principal()  # every signed-in caller may read profiles
        return pb.GetAgentResponse(agent=_agent_out(await self._directory.get(request.agent_id)))

    async def ListAgents(self, request: pb.ListAgentsRequest, _: Context) -> pb.ListAgentsResponse:
        context.current_principal()
        page, next_token = await self._directory.list_page(request.page_size, request.page_token)
        return pb.ListAgentsResponse(agents=[_agent_out(a) for a in page], next_page_token=next_token)

    async def UpdateAgent(self, request: pb.UpdateAgentRequest, _: Context) -> pb.UpdateAgentResponse:
        change = _profile_in(request.agent, "agent")
        updated = await self._directory.update(
            context.current_principal(), change, list(request.update_mask.paths)
        )
        return pb.UpdateAgentResponse(agent=_agent_out(updated))


def _profile_in(agent: res.Agent, prefix: str) -> AgentProfile:
    violations = Violations()
    voice = agent.voice_settings
    if voice.provider_mode not in _MODE_IN:
        violations.add(f"{prefix}.voice_settings.provider_mode", "must be CLOUD, OFFLINE or unspecified")
    violations.raise_if_any()
    return AgentProfile(
        agent_id=agent.agent_id,
        display_name=agent.display_name,
        instructions=agent.instructions,
        greeting=agent.greeting,
        voice_settings=VoiceSettings(
            voice=voice.voice,
            language=voice.language,
            speaking_rate=voice.speaking_rate,
            stt_model=voice.stt_model,
            llm_model=voice.llm_model,
            tts_model=voice.tts_model,
            provider_mode=_MODE_IN[voice.provider_mode],
        ),
    )


def _agent_out(profile: AgentProfile) -> res.Agent:
    voice = profile.voice_settings
    agent = res.Agent(
        agent_id=profile.agent_id,
        display_name=profile.display_name,
        instructions=profile.instructions,
        greeting=profile.greeting,
        voice_settings=res.VoiceSettings(
            voice=voice.voice,
            language=voice.language,
            speaking_rate=voice.speaking_rate,
            stt_model=voice.stt_model,
            llm_model=voice.llm_model,
            tts_model=voice.tts_model,
            provider_mode=_MODE_OUT[voice.provider_mode],
        ),
        owner_id=profile.owner_id,
    )
    if profile.create_time is not None:
        agent.create_time.CopyFrom(timestamp_from_datetime(profile.create_time))
    if profile.update_time is not None:
        agent.update_time.CopyFrom(timestamp_from_datetime(profile.update_time))
    return agent
