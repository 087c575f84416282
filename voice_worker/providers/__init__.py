"""Speech and language providers for one session: LiveKit Inference (cloud) or local (offline)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from livekit.agents import llm, stt, tts, vad
from livekit.agents.types import NOT_GIVEN

from llmkit.choice import ModelProfile, ProviderChoiceError, build_llm
from llmkit.choice import choose_mode as choose_llm_mode
from voice_worker.models import (
    OFFLINE_STT_MODEL,
    PIPER_TTS_MODELS,
    PIPER_VOICE,
    ModelKind,
    check_cloud_model,
    check_offline_model,
)
from voice_worker.profile import AgentProfile
from voice_worker.providers.early_stt import EarlyTranscriber
from voice_worker.settings import DEFAULT_END_OF_TURN_SILENCE_SECONDS, VoiceWorkerSettings

Mode = Literal["cloud", "offline"]
# How much later than the end-of-turn silence the offline STT reports a turn's text: none. The session
# commits a turn once its VAD has ended it AND the transcript is there, whichever comes last; a text
# reported a window before its VAD's verdict is held until then, and speech resuming in between
# continues the turn with that text in it. A margin here only delayed every answer (it was 0.1 s).
REPORT_MARGIN_SECONDS = 0.0

__all__ = [
    "Mode",
    "ProviderChoiceError",
    "Providers",
    "build_providers",
    "choose_mode",
    "import_plugins",
    "prewarm",
]


@dataclass
class Providers:
    """The four components of a session, and how they are labelled in logs and metrics.

    `vad` ends the user's turns; `end_of_turn_silence` (offline only; None keeps LiveKit's default)
    is the session's minimum endpointing delay to match it.
    """

    mode: Mode
    stt: stt.STT[Any]
    llm: llm.LLM[Any]
    tts: tts.TTS[Any]
    vad: vad.VAD
    stt_model: str
    llm_model: str
    tts_model: str
    end_of_turn_silence: float | None = None

    def labels(self) -> dict[str, str]:
        """What the conversation's metadata records about this call's providers."""
        return {
            "providers": self.mode,
            "stt_model": self.stt_model,
            "llm_model": self.llm_model,
            "tts_model": self.tts_model,
        }


@cache
def import_plugins() -> None:
    """Imports the LiveKit plugins calls use; LiveKit requires this on the main thread."""
    from livekit.plugins import openai, silero  # noqa: F401 - imported for their registration


@cache
def shared_vad(min_silence_seconds: float = DEFAULT_END_OF_TURN_SILENCE_SECONDS) -> vad.VAD:
    """Silero VAD (its ONNX model ships in the wheel), loaded once per process and setting.

    `min_silence_seconds` is the silence after which it reports the end of speech.
    """
    from livekit.plugins import silero

    return silero.VAD.load(min_silence_duration=min_silence_seconds)


def _whisper(settings: VoiceWorkerSettings) -> stt.STT[Any]:
    threads, beam_size = settings.whisper_threads, settings.whisper_beam_size
    return _shared_whisper(threads, beam_size, settings.whisper_short_window)


@cache
def _shared_whisper(threads: int, beam_size: int, short_window: bool) -> stt.STT[Any]:
    # One model per process, shared by every session: it is the largest thing in memory.
    from voice_worker.providers.whisper_stt import WhisperSTT

    return WhisperSTT(cpu_threads=threads, beam_size=beam_size, short_window=short_window)


def prewarm(settings: VoiceWorkerSettings) -> None:
    """Loads, before any call, what calls share: the VADs and, when offline is the default, Whisper.

    A call that loads them itself does so on its own event loop: importing faster-whisper and
    reading the model took 1.3-1.6 s on this machine, during which that call's audio and turns
    stood still (its greeting, and whatever its caller was saying).
    """
    if settings.default_mode == "cloud":
        shared_vad()
        return
    shared_vad(settings.end_of_turn_silence_seconds)
    shared_vad(settings.transcribe_after_silence_seconds)
    _whisper(settings).prewarm()


def _model_profile(profile: AgentProfile) -> ModelProfile:
    return ModelProfile(
        agent_id=profile.agent_id,
        display_name=profile.display_name,
        llm_model=profile.llm_model,
        provider_mode=profile.provider_mode,
    )


def choose_mode(settings: VoiceWorkerSettings, profile: AgentProfile) -> Mode:
    return choose_llm_mode(_model_profile(profile), settings.default_mode, settings.has_cloud_credentials)


def _language_model(
    settings: VoiceWorkerSettings, mode: Mode, profile: AgentProfile
) -> tuple[llm.LLM[Any], str]:
    """The session's LLM, chosen as agent_svc chooses it for text replies (`llmkit.choice`)."""
    models = settings.language_models(settings.livekit_api_key, settings.livekit_api_secret)
    chosen = build_llm(mode, models, _model_profile(profile), profile)
    return chosen.llm, chosen.model


def build_providers(settings: VoiceWorkerSettings, profile: AgentProfile) -> Providers:
    """The providers for a session with `profile`; raises ProviderChoiceError for bad choices."""
    mode = choose_mode(settings, profile)
    if mode == "cloud":
        return _cloud(settings, profile)
    return _offline(settings, profile)


def _offline(settings: VoiceWorkerSettings, profile: AgentProfile) -> Providers:
    kinds: tuple[tuple[ModelKind, str], ...] = (("stt", profile.stt_model), ("tts", profile.tts_model))
    for kind, name in kinds:
        problem = check_offline_model(kind, name)
        if problem:
            raise ProviderChoiceError(f"agent {profile.agent_id!r}: {problem}")
    language_model, llm_name = _language_model(settings, "offline", profile)
    speech = _offline_tts(settings, profile)
    # Whisper is not streaming, so a VAD cuts the speech for it: its own VAD, with a shorter silence
    # than the one that ends the turn, so transcription runs while the end of the turn is still being
    # waited out; the turn's text is reported once the turn is over (see early_stt).
    transcriber = EarlyTranscriber(
        wrapped=_whisper(settings),
        vad=shared_vad(settings.transcribe_after_silence_seconds),
        report_after=settings.end_of_turn_silence_seconds + REPORT_MARGIN_SECONDS,
        interim_every=settings.interim_every_seconds,
    )
    return Providers(
        mode="offline",
        stt=transcriber,
        llm=language_model,
        tts=speech,
        vad=shared_vad(settings.end_of_turn_silence_seconds),
        stt_model=OFFLINE_STT_MODEL,
        llm_model=llm_name,
        tts_model=speech.model,
        end_of_turn_silence=settings.end_of_turn_silence_seconds,
    )


def _offline_tts(settings: VoiceWorkerSettings, profile: AgentProfile) -> tts.TTS[Any]:
    """espeak-ng, or the optional Piper voice when the profile (or the worker's default) names it."""
    if (profile.tts_model or settings.offline_tts_model) in PIPER_TTS_MODELS:
        # Imported here: piper is an optional extra; the start-up check (worker default) or the check
        # above (profile) proved it installed.
        from voice_worker.providers.piper_tts import PiperTTS

        return PiperTTS(voice=PIPER_VOICE, speaking_rate=profile.speaking_rate)
    from voice_worker.providers.espeak_tts import EspeakTTS

    return EspeakTTS(voice=profile.voice or settings.espeak_voice, speaking_rate=profile.speaking_rate)


def _cloud(settings: VoiceWorkerSettings, profile: AgentProfile) -> Providers:
    from livekit.agents import inference

    stt_model = profile.stt_model or settings.cloud_stt_model
    tts_model = profile.tts_model or settings.cloud_tts_model
    kinds: tuple[tuple[ModelKind, str], ...] = (("stt", stt_model), ("tts", tts_model))
    for kind, name in kinds:
        problem = check_cloud_model(kind, name)
        if problem:
            raise ProviderChoiceError(f"agent {profile.agent_id!r}: {problem}")
    language_model, llm_model = _language_model(settings, "cloud", profile)
    language = profile.language or "en"
    tts_name, _, tts_voice = tts_model.partition(":")
    voice = tts_voice or profile.voice
    key, secret = settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
    return Providers(
        mode="cloud",
        stt=inference.STT(stt_model, language=language, api_key=key, api_secret=secret),
        llm=language_model,
        tts=inference.TTS(tts_name, voice=voice or NOT_GIVEN, api_key=key, api_secret=secret),
        vad=shared_vad(),
        stt_model=stt_model,
        llm_model=llm_model,
        tts_model=tts_model,
    )
