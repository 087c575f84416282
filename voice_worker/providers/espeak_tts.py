"""Offline text-to-speech: the espeak-ng program (Debian package) run as a subprocess.

About 10 ms per sentence and deterministic, which makes it the voice of tests and laptops.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

from livekit.agents import APIConnectionError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from voice_worker.models import OFFLINE_TTS_MODEL
from voice_worker.wav import WavFormatError, parse_wav_bytes

ESPEAK_SAMPLE_RATE = 22_050
DEFAULT_WORDS_PER_MINUTE = 175


class EspeakNotInstalledError(RuntimeError):
    """espeak-ng is not on PATH (it comes from the Debian package of the same name)."""


def find_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotInstalledError("espeak-ng is not installed (apt-get install espeak-ng)")
    return path


async def synthesize_pcm(
    text: str,
    *,
    voice: str = "en-us",
    words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
    executable: str | None = None,
    limit_seconds: float = 30.0,
) -> bytes:
    """Runs espeak-ng on `text` and returns raw 16-bit mono PCM at 22.05 kHz."""
    proc = await asyncio.create_subprocess_exec(
        executable or find_espeak(),
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        "--stdout",
        "--stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(text.encode()), limit_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng exited with {proc.returncode}: {err.decode(errors='replace')[:200]}")
    pcm = parse_wav_bytes(out)
    if pcm.sample_rate != ESPEAK_SAMPLE_RATE:
        raise WavFormatError(f"espeak-ng produced {pcm.sample_rate} Hz, expected {ESPEAK_SAMPLE_RATE}")
    return pcm.mono().samples.tobytes()


class EspeakTTS(tts.TTS[Any]):
    """espeak-ng as a non-streaming LiveKit TTS (the session splits replies into sentences)."""

    def __init__(self, *, voice: str = "en-us", speaking_rate: float = 1.0) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
        )
        self._executable = find_espeak()
        self.voice = voice
        rate = speaking_rate if speaking_rate > 0 else 1.0
        self.words_per_minute = round(DEFAULT_WORDS_PER_MINUTE * min(2.0, max(0.5, rate)))

    @property
    def model(self) -> str:
        return OFFLINE_TTS_MODEL

    @property
    def provider(self) -> str:
        return "offline/espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        try:
            pcm = await synthesize_pcm(
                self.input_text,
                voice=self._espeak.voice,
                words_per_minute=self._espeak.words_per_minute,
                executable=self._espeak._executable,
                limit_seconds=self._conn_options.timeout,
            )
        except (RuntimeError, OSError, TimeoutError, WavFormatError) as exc:
            raise APIConnectionError(f"espeak-ng failed: {type(exc).__name__}") from exc
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()
