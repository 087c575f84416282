"""The agent profile as the worker uses it (mapped from `syntera.agent.v1.Agent` at the edge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servicekit.ids import DEFAULT_AGENT_ID

ProviderMode = Literal["", "cloud", "offline"]


@dataclass(frozen=True)
class AgentProfile:
    """Who the agent is in a call: name, instructions, greeting, voice and provider choices.

    Empty strings mean "the worker's default".
    """

    agent_id: str
    display_name: str
    instructions: str = ""
    greeting: str = ""
    voice: str = ""
    language: str = ""
    speaking_rate: float = 0.0
    stt_model: str = ""
    llm_model: str = ""
    tts_model: str = ""
    provider_mode: ProviderMode = ""


def fallback_profile(agent_id: str) -> AgentProfile:
    """Used when agent_svc cannot be reached: the call still gets an agent, a plain one."""
    return AgentProfile(
        agent_id=agent_id or DEFAULT_AGENT_ID,
        display_name="Assistant",
        instructions="You are a helpful voice assistant. Keep answers short.",
        greeting="Hello, how can I help you today?",
    )
