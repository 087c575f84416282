"""The language-model settings the voice worker and agent_svc share (same variables, same meaning).

A settings class mixes `LanguageModelSettings` in beside `CommonSettings`; both read the environment
(and `.env`) once at start-up. The variables keep their historical `VOICE_WORKER_` names: they
choose the agent's model for calls and for text replies alike.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmkit.choice import LanguageModelConfig, ProviderChoice


class LanguageModelSettings(BaseSettings):
    """Where the agents' language models come from.

    Attributes:
        providers: `cloud` (LiveKit Inference), `offline` (local) or `auto` (cloud when LIVEKIT_URL
            is a LiveKit Cloud project with credentials, offline otherwise). A profile may ask for
            one explicitly.
        cloud_llm_model: The LiveKit Inference language model when a profile names none.
        llm_base_url: An OpenAI-compatible endpoint offline profiles use instead of the scripted
            responder (empty: none).
        llm_api_key: Its key; never logged.
        llm_model: The model to ask it for (required with `llm_base_url`).
    """

    # The same as CommonSettings', which this is mixed in beside: without it this class's defaults
    # win in the mix (no `.env`, unknown names forbidden), and a class built from the process
    # environment (make run's check of the worker's settings) fails on its first unrelated variable.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    providers: ProviderChoice = Field(default="auto", validation_alias="VOICE_WORKER_PROVIDERS")
    cloud_llm_model: str = Field(
        default="openai/gpt-4.1-mini", validation_alias="VOICE_WORKER_CLOUD_LLM_MODEL"
    )
    llm_base_url: str = Field(default="", validation_alias="LLM_BASE_URL")
    llm_api_key: SecretStr = Field(default=SecretStr(""), validation_alias="LLM_API_KEY")
    llm_model: str = Field(default="", validation_alias="LLM_MODEL")

    @model_validator(mode="after")
    def _endpoint_needs_a_model(self) -> LanguageModelSettings:
        if self.llm_base_url and not self.llm_model:
            raise ValueError("LLM_BASE_URL is set, so LLM_MODEL must name the model to use there")
        return self

    def language_models(self, livekit_api_key: str, livekit_api_secret: SecretStr) -> LanguageModelConfig:
        """These settings with the LiveKit project keys, as `llmkit.choice` takes them."""
        return LanguageModelConfig(
            cloud_model=self.cloud_llm_model,
            livekit_api_key=livekit_api_key,
            livekit_api_secret=livekit_api_secret.get_secret_value(),
            base_url=self.llm_base_url,
            api_key=self.llm_api_key.get_secret_value(),
            model=self.llm_model,
        )
