"""Cloud or offline, and which language model that means for an agent profile.

- cloud: LiveKit Inference (`inference.LLM`) with the LiveKit project's keys; the profile's
  `llm_model` or the deployment's default cloud model.
- offline: an OpenAI-compatible endpoint (LLM_BASE_URL, e.g. a local Ollama or llama.cpp server)
  when one is configured, else the scripted offline responder (not a language model). A profile
  may pin the responder with `llm_model = profile-responder`.

Every choice is labelled with what it is (`GeneratorKind`), so nobody mistakes the responder for a
model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from livekit.agents import llm

from llmkit.models import PROFILE_RESPONDER, check_cloud_model, check_offline_llm
from llmkit.responder import Named

Mode = Literal["cloud", "offline"]
ProviderChoice = Literal["auto", "cloud", "offline"]
LIVEKIT_CLOUD_DOMAIN = ".livekit.cloud"


class ProviderChoiceError(ValueError):
    """A profile asks for providers or models this deployment cannot run."""


class GeneratorKind(enum.StrEnum):
    """What produces an agent's words."""

    CLOUD_MODEL = "cloud"
    OPENAI_COMPATIBLE_MODEL = "openai-compatible"
    SCRIPTED_RESPONDER = "scripted"


@dataclass(frozen=True)
class LanguageModelConfig:
    """The deployment's language-model settings (see `llmkit.settings`).

    Attributes:
        cloud_model: The LiveKit Inference model when a profile names none.
        livekit_api_key: LiveKit project key (LiveKit Inference authenticates with it).
        livekit_api_secret: Its secret.
        base_url: An OpenAI-compatible endpoint for offline mode; empty for none.
        api_key: That endpoint's key (many local servers need none).
        model: The model to ask that endpoint for.
    """

    cloud_model: str
    livekit_api_key: str = field(repr=False)
    livekit_api_secret: str = field(repr=False)
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    model: str = ""


@dataclass(frozen=True)
class ModelProfile:
    """What a profile says about its language model."""

    agent_id: str
    display_name: str
    llm_model: str = ""
    provider_mode: Literal["", "cloud", "offline"] = ""


@dataclass
class ChosenModel:
    """A language model ready to use, and what it is."""

    llm: llm.LLM[Any]
    kind: GeneratorKind
    model: str


def on_livekit_cloud(livekit_url: str, has_credentials: bool) -> bool:
    """True when LIVEKIT_URL is a LiveKit Cloud project, whose keys LiveKit Inference accepts.

    A self-hosted server's keys (the one `make run` starts, say) mean nothing to Inference.
    """
    host = urlsplit(livekit_url).hostname or ""
    return has_credentials and host.endswith(LIVEKIT_CLOUD_DOMAIN)


def default_mode(choice: ProviderChoice, livekit_url: str, has_credentials: bool) -> Mode:
    """The provider family used when a profile does not choose one."""
    if choice == "auto":
        return "cloud" if on_livekit_cloud(livekit_url, has_credentials) else "offline"
    return choice


def choose_mode(profile: ModelProfile, default: Mode, has_cloud_credentials: bool) -> Mode:
    """The profile's own choice when it makes one, else `default`."""
    if profile.provider_mode == "cloud":
        if not has_cloud_credentials:
            raise ProviderChoiceError(
                f"agent {profile.agent_id!r} asks for cloud providers but LIVEKIT_URL, LIVEKIT_API_KEY "
                "and LIVEKIT_API_SECRET are not all set"
            )
        return "cloud"
    if profile.provider_mode == "offline":
        return "offline"
    return default


def check_model(mode: Mode, config: LanguageModelConfig, profile: ModelProfile) -> None:
    """Raises ProviderChoiceError when the profile's `llm_model` cannot run in `mode`."""
    if mode == "cloud":
        problem = check_cloud_model("llm", profile.llm_model or config.cloud_model)
    else:
        problem = check_offline_llm(profile.llm_model, config.model if config.base_url else "")
    if problem:
        raise ProviderChoiceError(f"agent {profile.agent_id!r}: {problem}")


def model_name(mode: Mode, config: LanguageModelConfig, profile: ModelProfile) -> tuple[GeneratorKind, str]:
    """What `build_llm` would build, without building it (checked with `check_model` first)."""
    if mode == "cloud":
        return GeneratorKind.CLOUD_MODEL, profile.llm_model or config.cloud_model
    if config.base_url and profile.llm_model != PROFILE_RESPONDER:
        return GeneratorKind.OPENAI_COMPATIBLE_MODEL, config.model
    return GeneratorKind.SCRIPTED_RESPONDER, PROFILE_RESPONDER


def build_llm(mode: Mode, config: LanguageModelConfig, profile: ModelProfile, persona: Named) -> ChosenModel:
    """The language model for `profile` in `mode`; raises ProviderChoiceError for a bad choice.

    `persona` gives the scripted responder the agent's name. The caller owns the returned model
    (`aclose()` it when done with it).
    """
    check_model(mode, config, profile)
    kind, name = model_name(mode, config, profile)
    language_model: llm.LLM[Any]
    if kind is GeneratorKind.CLOUD_MODEL:
        from livekit.agents import inference

        language_model = inference.LLM(
            name, api_key=config.livekit_api_key, api_secret=config.livekit_api_secret
        )
    elif kind is GeneratorKind.OPENAI_COMPATIBLE_MODEL:
        from livekit.plugins import openai

        language_model = openai.LLM(
            model=name, base_url=config.base_url, api_key=config.api_key or "not-needed"
        )
    else:
        from llmkit.responder_llm import ProfileResponderLLM

        language_model = ProfileResponderLLM(persona)
    return ChosenModel(language_model, kind, name)
